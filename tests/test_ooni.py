"""OONI measurements: import of 0.4 and 0.5 (LTE) re-analysed by us, export, and the round trip.

The fixtures in tests/data/ooni are our own, written in OONI's format (see their README).
The round trip exports a real lab run (every scenario of test_check) and imports it into a
new database: every verdict must come back the same.
"""

from __future__ import annotations

import copy
import gzip
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from probe.analysis import analyze
from probe.cli import cli
from probe.errors import OONIFormatError
from probe.model.records import VERDICTS
from probe.ooni.files import read_file
from probe.ooni.importing import from_ooni
from tests.test_check import SCENARIOS, censor, probe_check

DATA = Path(__file__).parent / "data" / "ooni"
LTE = DATA / "webconnectivity-0.5-kg.jsonl"
V04_ONE = DATA / "webconnectivity-0.4-kaktus.json"
V04_GZ = DATA / "webconnectivity-0.4-kg.jsonl.gz"
COMPARED = ("verdict", "blocking", "failure", "dns_consistency", "blockpage", "confirmed")


def run_import(db: Path, *files: Path, as_json: bool = True) -> tuple[Any, list[dict[str, Any]]]:
    argv = ["import", "--db", str(db), *(["--json"] if as_json else [])]
    result = CliRunner().invoke(cli, [*argv, *map(str, files)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    return result, lines


def rows(db: Path, sql: str, *args: Any) -> list[tuple]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute(sql, args).fetchall()


# ------------------------------------------------------------------ import of fixtures


def test_import_lte_measurements_reanalysed_by_us(tmp_path):
    db = tmp_path / "p.db"
    result, lines = run_import(db, LTE)
    got = {line["url"]: (line["verdict"], line["blocking"], line["failure"]) for line in lines}
    assert got == {
        "https://www.azattyk.org/": ("accessible", None, None),
        "https://respublica.kg/": ("blocked", "dns", "dns_nxdomain_error"),
        "https://sni-reset.kg/": ("blocked", "tls", "connection_reset"),
        "http://blockpage.kg/": ("blocked", "http-diff", None),
        "http://to-https.kg/": ("blocked", "http-failure", "connection_refused"),
    }
    # Our verdict, not OONI's: OONI called the SNI reset "http-failure" (kept aside only).
    ((ooni,),) = rows(
        db,
        "select ooni_blocking from ooni_imports i join measurements m "
        "on m.id = i.measurement_id where m.url = 'https://sni-reset.kg/'",
    )
    assert json.loads(ooni) == "http-failure"
    by_url = {line["url"]: line for line in lines}
    assert by_url["http://blockpage.kg/"]["confirmed"] is True
    assert by_url["http://to-https.kg/"]["source"] == f"{LTE}:5"
    assert {line["probe_asn"] for line in lines} == {"AS8449", "AS12997"}
    assert set(lines[0]) >= {
        "input",
        "verdict",
        "blocking",
        "accessible",
        "reason",
        "measurement_id",
        "run_id",
        "offline",
    }
    # Malformed or unsupported lines are reported by file and line and skipped.
    for line, words in ((7, "0.3.1"), (8, "not JSON"), (9, "probe_asn")):
        assert f"{LTE}:{line}: " in result.stderr and words in result.stderr
    assert "5 measurements imported, 0 already in the database, 3 skipped" in result.stderr


def test_lte_connections_to_other_resolvers_addresses_are_left_out(tmp_path):
    db = tmp_path / "p.db"
    run_import(db, LTE)

    def of(url: str, sql: str) -> list[tuple]:
        return rows(
            db, sql + " where measurement_id = (select id from measurements where url = ?)", url
        )

    # The failed connect to the helper-only address is not ours to judge.
    assert of("https://www.azattyk.org/", "select ip, failure from tcp_connects") == [
        ("192.88.99.120", None)
    ]
    # NXDOMAIN: LTE fetched over a DoH address; neither that connect nor that page is kept,
    # but the other resolvers' answers are (they are the control's evidence).
    assert of("https://respublica.kg/", "select * from tcp_connects") == []
    assert of("https://respublica.kg/", "select * from http_requests") == []
    engines = of("https://respublica.kg/", "select engine, query_type, failure from dns_queries")
    assert ("system", "A", "dns_nxdomain_error") in engines
    assert ("udp", "A", None) in engines and ("https", "A", None) in engines
    # No request entry where no connection succeeded: the hop is rebuilt from the handshake.
    assert of("https://sni-reset.kg/", "select depth, ip, failure from http_requests") == [
        (0, None, "connection_reset")
    ]
    assert of(
        "http://to-https.kg/", "select depth, url, status_code, failure from http_requests"
    ) == [
        (0, "http://to-https.kg/", 301, None),
        (1, "https://to-https.kg/", None, "connection_refused"),
    ]
    # The :443 validation handshake of an http:// URL.
    assert of("http://blockpage.kg/", "select port, purpose, failure from tls_handshakes") == [
        (443, "validate", None)
    ]


def test_import_v04_one_object_file_and_gzip_json_lines(tmp_path):
    db = tmp_path / "p.db"
    result, lines = run_import(db, V04_ONE, V04_GZ)
    got = {line["url"]: (line["verdict"], line["blocking"]) for line in lines}
    assert got == {
        "http://kaktus.media/": ("accessible", None),
        "http://24.kg/": ("blocked", "dns"),
        "https://factcheck.kg/": ("blocked", "tcp_ip"),
        "http://host-reset.kg/": ("blocked", "http-failure"),
        "http://kloop.kg/": ("inconclusive", None),
    }
    assert {line["url"]: line["confirmed"] for line in lines}["http://24.kg/"] is True
    assert "5 measurements imported, 0 already in the database, 0 skipped" in result.stderr
    # One run per OONI report, stored on the report's network, filed under OONI's vantage.
    assert rows(
        db,
        "select status, probe_asn, targets, v.kind from runs r "
        "join vantages v on v.id = r.vantage_id",
    ) == [("imported", "AS12997", 5, "ooni")]


def test_importing_twice_adds_nothing(tmp_path):
    db = tmp_path / "p.db"
    run_import(db, LTE, V04_GZ)
    before = rows(db, "select count(*) from measurements")
    result, lines = run_import(db, LTE, V04_GZ)
    assert lines == [] and rows(db, "select count(*) from measurements") == before
    assert "0 measurements imported, 9 already in the database" in result.stderr


def _fixture() -> dict[str, Any]:
    return json.loads(LTE.read_text().splitlines()[0])


@pytest.mark.parametrize(
    "path, value, words",
    [
        (("test_name",), "dns_consistency", "test_name"),
        (("test_keys", "queries", 0, "answers", 0, "ipv4"), "not-an-ip", "ipv4"),
        (("test_keys", "tcp_connect", 0, "port"), 70000, "port"),
        (("test_keys", "tls_handshakes", 0, "address"), "192.88.99.120", "address"),
        (("test_keys", "requests", 0, "response", "headers_list"), [["a"]], "headers_list"),
        (
            ("test_keys", "requests", 0, "response", "body"),
            {"format": "hex", "data": "00"},
            "base64",
        ),
        (("test_keys", "control", "http_request", "status_code"), "200", "control"),
        (("input",), "ftp://x.kg/", "input"),
        (("measurement_start_time",), "yesterday", "measurement_start_time"),
        (("test_keys", "queries"), {"a": 1}, "queries"),
    ],
)
def test_a_malformed_field_is_named(path, value, words):
    data = _fixture()
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(OONIFormatError, match=words):
        from_ooni(data)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _paths(value, (*prefix, index))
    return out


FIXTURES = [json.loads(line) for line in LTE.read_text().splitlines()[:5]]
FIXTURES.append(json.loads(V04_ONE.read_text()))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(range(len(FIXTURES))), st.integers(min_value=0), _json)
def test_any_damage_to_a_measurement_is_a_format_error_or_readable(which, pick, value):
    data = copy.deepcopy(FIXTURES[which])
    paths = _paths(data)[1:]
    path = paths[pick % len(paths)]
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    try:
        imported = from_ooni(data)
    except OONIFormatError as exc:
        assert str(exc)  # a format error says what is wrong
        return
    # What was read is fit for the analysis, which gives one of its verdicts.
    verdict = analyze(imported.observations)
    assert verdict.verdict in VERDICTS and verdict.reason
    assert isinstance(imported.observations.url, str) and imported.probe_asn.startswith("AS")


def test_unreadable_files_are_reported_not_raised(tmp_path):
    broken = tmp_path / "broken.jsonl.gz"
    with gzip.open(broken, "wt") as f:
        f.write(LTE.read_text())
    broken.write_bytes(broken.read_bytes()[:300])  # the stream breaks off
    items = list(read_file(broken))
    assert isinstance(items[-1][1], OONIFormatError) and "cannot read" in str(items[-1][1])
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    ((source, error, _),) = list(read_file(deep))
    assert source == f"{deep}:1" and isinstance(error, OONIFormatError)
    result = CliRunner().invoke(cli, ["import", "--db", str(tmp_path / "p.db"), str(deep)])
    assert result.exit_code == 2 and f"{deep}:1: " in result.output
    assert "nothing could be imported" in result.output
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    assert list(read_file(empty)) == []


# ------------------------------------------------------------------ export, round trip


@pytest.fixture(scope="module")
def lab_run(lab, helper, tmp_path_factory):
    """Every scenario of test_check measured in one real run (as test_check does)."""
    db = tmp_path_factory.mktemp("ooni") / "probe.db"
    lab.reset()
    censor(lab)
    try:
        lines = probe_check(
            lab, db, [s.url for s in SCENARIOS], "--probe-asn", "AS64500", "--probe-cc", "KG"
        )
    finally:
        lab.reset()
    return db, {line["input"]: line for line in lines}


def _export(db: Path, out: Path, *extra: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(cli, ["export", "--db", str(db), "-o", str(out), *extra])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_export_is_ooni_web_connectivity(lab_run, lab, tmp_path):
    db, results = lab_run
    exported = {m["input"]: m for m in _export(db, tmp_path / "out.jsonl")}
    assert len(exported) == len(results)
    for m in exported.values():
        assert (m["data_format_version"], m["test_name"]) == ("0.2.0", "web_connectivity")
        assert (m["probe_ip"], m["probe_asn"], m["probe_cc"]) == ("127.0.0.1", "AS64500", "KG")
        for key in (
            "queries",
            "tcp_connect",
            "tls_handshakes",
            "requests",
            "control",
            "control_failure",
            "blocking",
            "accessible",
            "dns_consistency",
        ):
            assert key in m["test_keys"], key
    # Our "tls" is OONI's "http-failure"; ours is kept in an x_ key.
    sni = exported["https://sni-reset.kg/"]["test_keys"]
    assert (sni["blocking"], sni["accessible"], sni["x_probe_blocking"]) == (
        "http-failure",
        False,
        "tls",
    )
    # No requests entry for a hop where no connection succeeded.
    assert sni["requests"] == []
    assert exported["https://factcheck.kg/"]["test_keys"]["requests"] == []
    assert exported["https://www.azattyk.org/"]["test_keys"]["blocking"] is False
    assert exported["https://down.kg/"]["test_keys"]["blocking"] is False
    assert exported["https://down.kg/"]["test_keys"]["accessible"] is False
    # The lie to the block page: the page itself, the classic tags, the verdict in OONI's words.
    lie = exported["http://24.kg/"]["test_keys"]
    assert lie["blocking"] == "dns" and lie["dns_consistency"] == "inconsistent"
    (hop,) = lie["requests"]
    assert lab.BLOCKPAGE_SENTENCE in hop["response"]["body"]
    assert hop["address"] == f"{lab.BLOCKPAGE_IP}:80" and "classic" in hop["tags"]
    # The vantage's address appears nowhere.
    assert lab.VANTAGE_IP not in (tmp_path / "out.jsonl").read_text()


def test_export_then_import_gives_back_the_same_verdicts(lab_run, tmp_path):
    db, results = lab_run
    exported = tmp_path / "out.jsonl"
    _export(db, exported)
    copy_db = tmp_path / "copy.db"
    result, lines = run_import(copy_db, exported)
    assert len(lines) == len(results), result.stderr
    original = {
        r[0]: r[1:] for r in rows(db, f"select id, {', '.join(COMPARED)} from measurements")
    }
    again = {
        r[0]: r[1:] for r in rows(copy_db, f"select id, {', '.join(COMPARED)} from measurements")
    }
    assert again == original  # same ids, same verdicts
    # The same runs and vantage; re-importing into the original database adds nothing.
    assert rows(copy_db, "select id, vantage_id from runs") == rows(
        db, "select id, vantage_id from runs"
    )
    result, lines = run_import(db, exported)
    assert lines == [] and f"0 measurements imported, {len(results)} already" in result.stderr
    # Imported measurements are OONI's (or another probe's) to publish: left out of an export.
    assert _export(copy_db, tmp_path / "again.jsonl") == []
    assert len(_export(copy_db, tmp_path / "all.jsonl", "--include-imported")) == len(results)
