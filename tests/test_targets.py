"""Target lists: plain text, Citizen Lab CSV, IDN, duplicates, and bad lines."""

import pytest
from click.testing import CliRunner

from probe.app import targets
from probe.cli import cli
from probe.model import urls


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_plain_text_list(tmp_path):
    path = write(
        tmp_path,
        "kg.txt",
        "# comment\n\n24.kg\nhttps://www.azattyk.org/   # inline comment\nhttp://kloop.kg/news?id=1\n",
    )
    loaded = targets.load([path])
    assert [t.url for t in loaded] == [
        "https://24.kg/",
        "https://www.azattyk.org/",
        "http://kloop.kg/news?id=1",
    ]
    assert loaded[0].input == "24.kg"
    assert loaded[1].input == "https://www.azattyk.org/"
    assert loaded[0].source == f"{path}:3"
    assert loaded[2].domain == "kloop.kg"


def test_citizen_lab_csv_keeps_category(tmp_path):
    path = write(
        tmp_path,
        "kg.csv",
        "url,category_code,category_description,date_added,source,notes\n"
        "https://www.azattyk.org/,NEWS,News Media,2017-09-18,ours,\n"
        'http://kloop.kg/,NEWS,News Media,2020-01-01,ours,"a, note"\n',
    )
    loaded = targets.load([path])
    assert [(t.url, t.category) for t in loaded] == [
        ("https://www.azattyk.org/", "NEWS"),
        ("http://kloop.kg/", "NEWS"),
    ]
    assert loaded[1].source == f"{path}:3"


def test_idn_is_measured_as_punycode_and_input_kept():
    (target,) = targets.load(inputs=["http://яндекс.рф/"])
    assert target.domain == "xn--d1acpjx3f.xn--p1ai"
    assert target.url == "http://xn--d1acpjx3f.xn--p1ai/"
    assert target.input == "http://яндекс.рф/"


def test_duplicates_measured_once(tmp_path):
    path = write(tmp_path, "a.txt", "24.kg\nhttps://24.kg/\nHTTPS://24.KG/\n")
    loaded = targets.load([path], ["https://24.kg/", "http://24.kg/"])
    assert [t.url for t in loaded] == ["https://24.kg/", "http://24.kg/"]


def test_default_port_dropped_explicit_port_kept():
    a, b = targets.load(inputs=["https://24.kg:443/", "http://24.kg:8080/x"])
    assert a.url == "https://24.kg/"
    assert b.url == "http://24.kg:8080/x"


@pytest.mark.parametrize(
    "line, reason",
    [
        ("ftp://24.kg/", "only http:// and https://"),
        ("https:///path", "has no host"),
        ("24.kg/path", "no scheme"),
        ("https://bad_host!/", "not a valid domain name"),
        ("https://24.kg:99999/", "bad port"),
        ("nodot", "not a valid domain name"),
    ],
)
def test_bad_line_names_file_and_line(tmp_path, line, reason):
    path = write(tmp_path, "bad.txt", f"# header\n24.kg\n{line}\n")
    with pytest.raises(targets.TargetError) as info:
        targets.load([path])
    assert str(info.value).startswith(f"{path}:3: ")
    assert reason in str(info.value)


def test_cli_bad_line_exits_2_before_measuring(tmp_path):
    path = write(tmp_path, "bad.txt", "24.kg\nftp://x.kg/\n")
    db = tmp_path / "probe.db"
    result = CliRunner().invoke(cli, ["check", str(path), "--db", str(db)])
    assert result.exit_code == 2
    assert f"{path}:2:" in result.output
    assert not db.exists()  # nothing was measured or stored


def test_cli_missing_file_exits_2(tmp_path):
    result = CliRunner().invoke(cli, ["check", str(tmp_path / "nope.txt")])
    assert result.exit_code == 2
    assert "nope.txt" in result.output


# ------------------------------------------------------------------ canonical URLs


def test_idna_2008_not_2003():
    (target,) = targets.load(inputs=["faß.de"])
    assert target.domain == "xn--fa-hia.de"  # Python's "idna" codec would say fass.de
    assert target.url == "https://xn--fa-hia.de/"
    assert target.input == "faß.de"


def test_non_ascii_path_and_query_are_percent_encoded_escapes_kept():
    (target,) = targets.load(inputs=["https://ru.wikipedia.org/wiki/Кыргызстан?q=ош&x=%2f"])
    assert target.url == (
        "https://ru.wikipedia.org/wiki/%D0%9A%D1%8B%D1%80%D0%B3%D1%8B%D0%B7%D1%81%D1%82%D0%B0%D0%BD"
        "?q=%D0%BE%D1%88&x=%2f"
    )
    assert target.input == "https://ru.wikipedia.org/wiki/Кыргызстан?q=ош&x=%2f"


def test_written_and_escaped_forms_are_one_target():
    loaded = targets.load(
        inputs=["http://ЯНДЕКС.РФ/путь", "http://xn--d1acpjx3f.xn--p1ai/%D0%BF%D1%83%D1%82%D1%8C"]
    )
    assert len(loaded) == 1


@pytest.mark.parametrize(
    "line, url, domain",
    [
        ("http://[2001:DB8:0::1]:8080/x", "http://[2001:db8::1]:8080/x", "2001:db8::1"),
        ("http://192.88.99.1/", "http://192.88.99.1/", "192.88.99.1"),
        (
            "https://Sub_Domain.Example.KG./",
            "https://sub_domain.example.kg/",
            "sub_domain.example.kg",
        ),
        ("https://a.kg/p%", "https://a.kg/p%25", "a.kg"),  # a lone % is escaped
        ("https://a.kg/a#frag", "https://a.kg/a", "a.kg"),  # never sent
    ],
)
def test_normalise_spelling(line, url, domain):
    assert urls.normalise(line) == (url, domain)


@pytest.mark.parametrize(
    "line, reason",
    [
        ("https://a.kg:0/", "bad port"),
        ("https://a.kg:65536/", "bad port"),
        ("https://[2001:db8::1/", "Invalid IPv6 URL"),
        ("https://xn--zz.kg/", "not a valid domain name"),  # not a valid A-label
        ("https://a..kg/", "not a valid domain name"),
        ("https://" + "a" * 64 + ".kg/", "not a valid domain name"),
        ("https://\u2620.kg/", "not a valid domain name"),  # a symbol: IDNA 2003 took it
    ],
)
def test_normalise_refuses(line, reason):
    with pytest.raises(ValueError, match=reason):
        urls.normalise(line)


@pytest.mark.parametrize(
    "location, expected",
    [
        ("/a b", "http://a.kg/a%20b"),
        ("?q=1", "http://a.kg/dir/page?q=1"),
        ("../up", "http://a.kg/up"),
        ("//b.kg/x", "http://b.kg/x"),
        ("https://user:pw@b.kg:443/x#f", "https://b.kg/x"),  # no credentials, no fragment
        ("\t/tab\nbed ", "http://a.kg/tabbed"),  # tabs and newlines dropped, as browsers do
        ("http://[::FFFF:192.88.99.1]/", "http://[::ffff:c058:6301]/"),
    ],
)
def test_canonical_location(location, expected):
    assert urls.canonical(location, base="http://a.kg/dir/page") == expected


def test_resolve_is_strict_about_absolute_references():
    assert urls.resolve("http://a.kg/", "http:///x") == "http:///x"  # no host: invalid
    with pytest.raises(ValueError, match="no host"):
        urls.canonical("http:///x", base="http://a.kg/")


# ---------------------------------------------------------------------------------------------
# Hostile lists: lines end only at \n, control characters, huge fields, streaming.
# (probe/app/targets.py list parsing; normalise() has its own tests above.)

import csv  # noqa: E402
import os  # noqa: E402
import threading  # noqa: E402

from probe.errors import TargetError  # noqa: E402

SEPARATORS = ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1e"]


@pytest.mark.parametrize("sep", SEPARATORS)
def test_only_newline_ends_a_line_so_a_comment_tail_stays_a_comment(tmp_path, sep):
    path = write(tmp_path, "kg.txt", f"# old list{sep}evil.example\n24.kg\n")
    loaded = targets.load([path])
    assert [(t.url, t.source) for t in loaded] == [("https://24.kg/", f"{path}:2")]


@pytest.mark.parametrize("sep", [*SEPARATORS, "\x00", "\r", "\x7f", "\x1b"])
def test_control_character_in_a_url_names_its_line(tmp_path, sep):
    path = write(tmp_path, "kg.txt", f"24.kg\n# a comment\nhttps://kloop.kg/{sep}x\nvesti.kg\n")
    with pytest.raises(TargetError) as info:
        targets.load([path])
    assert str(info.value).startswith(f"{path}:3: ")
    assert f"U+{ord(sep):04X}" in str(info.value)


def test_nul_in_a_bare_domain_and_in_input(tmp_path):
    path = write(tmp_path, "kg.txt", "24.kg\nklo\x00op.kg\n")
    with pytest.raises(TargetError, match=rf"^{path}:2: .*U\+0000"):
        targets.load([path])
    with pytest.raises(TargetError, match=r"^--input #2: .*U\+0000"):
        targets.load(inputs=["24.kg", "https://24.kg/\x00"])


def test_crlf_lines_and_a_bom(tmp_path):
    path = tmp_path / "win.txt"
    path.write_bytes(b"\xef\xbb\xbf24.kg\r\n# comment\r\nhttps://kloop.kg/\r\n")
    loaded = targets.load([path])
    assert [(t.input, t.source) for t in loaded] == [
        ("24.kg", f"{path}:1"),
        ("https://kloop.kg/", f"{path}:3"),
    ]
    assert [t.url for t in targets.parse_text("\ufeff24.kg\r\nvesti.kg", "x")] == [
        "https://24.kg/",
        "https://vesti.kg/",
    ]


def test_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"24.kg\nkloop.kg\n\xe9t\xe9.kg\n")
    with pytest.raises(TargetError, match=rf"^{path}:3: not UTF-8"):
        targets.load([path])


def test_csv_field_over_the_csv_limit_is_a_target_error(tmp_path):
    header = "url,category_code,category_description,date_added,source,notes\n"
    # a quoted cell over csv's 128 KiB limit, spread over lines of 50 KiB
    cell = "\n".join(["x" * 50_000] * 4)
    path = write(
        tmp_path, "big.csv", f'{header}https://24.kg/,NEWS,,,,ok\nhttps://kloop.kg/,NEWS,"{cell}"\n'
    )
    with pytest.raises(TargetError) as info:
        targets.load([path])
    assert str(info.value).startswith(f"{path}:")
    assert "field larger than field limit" in str(info.value)
    assert str(info.value).startswith(f"{path}:3: ")  # the line the record starts on
    # the same through the in-memory parser
    with pytest.raises(TargetError, match=r"^x.csv:\d+: bad CSV"):
        targets.parse_csv(header + '"' + "y" * 200_000 + '",NEWS\n', "x.csv")


def test_a_line_longer_than_the_limit_names_it(tmp_path):
    path = write(tmp_path, "long.txt", "24.kg\n" + "a" * (targets.MAX_LINE_BYTES + 10) + "\n")
    with pytest.raises(TargetError, match=rf"^{path}:2: line longer than"):
        targets.load([path])


def test_csv_multiline_note_keeps_the_record_line(tmp_path):
    path = write(
        tmp_path,
        "kg.csv",
        "url,category_code,notes\n"
        'https://24.kg/,NEWS,"a note\nover two lines"\n'
        "https://kloop.kg/,NEWS,\n"
        "ftp://bad.kg/,NEWS,\n",
    )
    with pytest.raises(TargetError, match=rf"^{path}:5: .*only http"):
        targets.load([path])
    good = write(tmp_path, "ok.csv", "url,category_code\nhttps://24.kg/,NEWS\n")
    assert [t.source for t in targets.load([good])] == [f"{good}:2"]


def test_count_equals_load_and_validates(tmp_path):
    a = write(tmp_path, "a.txt", "24.kg\nhttps://24.kg/\nkloop.kg\n")
    b = write(
        tmp_path, "b.csv", "url,category_code\nhttps://kloop.kg/,NEWS\nhttp://vesti.kg/,NEWS\n"
    )
    inputs = ["https://vesti.kg/", "http://vesti.kg/"]
    loaded = targets.load([a, b], inputs)
    assert targets.count([a, b], inputs) == len(loaded) == 4
    assert list(targets.iter_targets([a, b], inputs)) == loaded
    bad = write(tmp_path, "bad.txt", "24.kg\nnodot\n")
    with pytest.raises(TargetError, match=rf"^{bad}:2:"):
        targets.count([a, bad])


def test_iter_targets_streams_before_the_list_is_complete(tmp_path):
    # The list is a FIFO whose writer waits until the first target has been yielded before
    # writing the rest: a loader that reads the whole file first never sees that happen.
    fifo = tmp_path / "list.txt"
    os.mkfifo(fifo)
    first_seen = threading.Event()
    streamed = []

    def writer():
        with open(fifo, "w") as out:
            out.write("24.kg\n")
            out.flush()
            streamed.append(first_seen.wait(10))
            out.write("kloop.kg\n24.kg\nnodot\n")

    thread = threading.Thread(target=writer)
    thread.start()
    got = []
    try:
        with pytest.raises(TargetError, match=r":4: "):
            for target in targets.iter_targets([fifo]):
                got.append(target.url)
                first_seen.set()
    finally:
        first_seen.set()
        thread.join(15)
    assert streamed == [True]
    assert got == ["https://24.kg/", "https://kloop.kg/"]  # the duplicate skipped


def test_cli_hostile_lists_exit_2_with_file_and_line(tmp_path):
    cases = {
        "nel.txt": "24.kg\nhttps://kloop.kg/\x85evil\n",
        "nul.txt": "24.kg\n\x00\n",
        "big.csv": "url,category_code\n" + '"' + "\n".join(["z" * 60_000] * 3) + '",NEWS\n',
    }
    for name, text in cases.items():
        path = write(tmp_path, name, text)
        db = tmp_path / f"{name}.db"
        result = CliRunner().invoke(cli, ["check", str(path), "--db", str(db)])
        assert result.exit_code == 2, (name, result.output)
        assert f"{path}:2" in result.output, (name, result.output)
        assert "Traceback" not in result.output and not isinstance(result.exception, csv.Error)
        assert not db.exists()
