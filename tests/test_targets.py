"""Target lists: plain text, Citizen Lab CSV, IDN, duplicates, and bad lines."""

import pytest
from click.testing import CliRunner

from probe import targets
from probe.cli import cli


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
