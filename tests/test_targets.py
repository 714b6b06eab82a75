"""Target lists: plain text, Citizen Lab CSV, IDN, duplicates, and bad lines."""

import pytest
from click.testing import CliRunner

from probe import targets
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
    assert targets.normalise(line) == (url, domain)


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
        targets.normalise(line)


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
