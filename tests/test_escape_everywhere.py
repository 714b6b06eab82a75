"""No text a stranger sent reaches a person raw (issue 16, item 7).

A page title holding ``\\x1b]0;...\\x07`` retitles the researcher's terminal, ``\\x1b[2J``
clears it, OSC 52 writes its clipboard, a C1 CSI (U+009B) does what ESC [ does, and U+202E
turns ``gpj.exe`` into what reads as ``exe.jpg``. Every output of every command is checked
here by one rule, :func:`assert_clean`: no C0 control but tab and line feed, no DEL, no C1
control, no bidi embedding, override, isolate or mark. The hostile text comes three ways:

* a database every text cell of which is hostile (as one can arrive by ``probe merge``),
  read by every command: runs, status, show, timeline, report in every format, export;
* OONI measurements whose titles, bodies, headers and failure strings are hostile, imported;
* the lab: a site, a resolver and a test helper sending it (:mod:`tests.lab.hostile_text`),
  measured by ``probe check`` (its table, JSON lines, stderr and log file), then read back.

The stored evidence stays as the server sent it (a NUL in a title excepted, which becomes
U+FFFD as in a browser); only what is shown is escaped. The pure escaping functions of the
report formats and the log have unit tests first.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import re
import shutil
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from probe.cli import cli
from probe.model.charset import title_of
from probe.model.text import printable
from probe.report.escape import csv_cell, html_text, json_text, md_text
from tests.lab.hostile_text import HEADER_PAYLOAD, PAYLOAD, TEXT_IP, ZONE, HostileText

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_DB = ROOT / "tests" / "data" / "analyze_store.db"
OONI_05 = ROOT / "tests" / "data" / "ooni" / "webconnectivity-0.5-kg.jsonl"

#: What no output may hold: C0 controls but tab and line feed, DEL, C1 controls, and the
#: bidi controls (marks, embeddings, overrides, isolates).
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
#: The payload as printable() shows it: proof that the hostile text was displayed, escaped.
SHOWN = "\\x1b]0;pwned\\x07"


def assert_clean(text: str, what: str, *, crlf: bool = False) -> None:
    """``text`` holds no raw control (``crlf``: CSV's line ends are CR LF, and allowed)."""
    if crlf:
        text = text.replace("\r\n", "\n")
    found = RAW.search(text)
    assert found is None, (
        f"{what}: raw {found.group()!r} at {found.start()}: "
        f"{text[max(found.start() - 100, 0) : found.start() + 40]!r}"
    )


def invoke(*args: str) -> tuple[str, str]:
    """``probe ARGS`` in-process: (stdout, stderr), after checking it ended cleanly."""
    result = CliRunner().invoke(cli, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        args,
        result.exception,
    )
    assert result.exit_code == 0, (args, result.output)
    return result.stdout, result.stderr


def read_everything(db: Path, *, min_measurements: str = "1") -> dict[str, str]:
    """Every read command's output over ``db`` (stdout, by command line), each checked
    clean, stderr too."""
    with sqlite3.connect(db) as conn:
        runs = [r for (r,) in conn.execute("select id from runs")]
        measurements = [m for (m,) in conn.execute("select id from measurements")]
    events = ("--min-measurements", min_measurements, "--min-vantages", "1")
    commands: list[tuple[str, ...]] = [
        ("runs",),
        ("runs", "--json"),
        ("status",),
        ("status", "--json"),
        ("timeline", *events, "--anomalies"),
        ("timeline", *events, "--anomalies", "--json"),
        *(("report", "--format", fmt, *events) for fmt in ("md", "html", "csv", "json")),
        ("export", "--include-imported"),
    ]
    for ident in [*runs, *measurements]:
        commands += [("show", ident), ("show", ident, "--json")]
    shown = {}
    for command in commands:
        stdout, stderr = invoke(*command, "--db", str(db))
        line = " ".join(command)
        assert_clean(stdout, line, crlf="csv" in command)
        assert_clean(stderr, f"{line} (stderr)")
        shown[line] = stdout
    return shown


def assert_json_lines_keep_the_values(shown: dict[str, str], line: str) -> None:
    """JSON output is escaped JSON: parsing it gives back the hostile text as stored."""
    parsed = [json.loads(text) for text in shown[line].splitlines() if text.strip()]
    assert parsed, line


def strings(value: Any) -> list[str]:
    """Every string in a JSON value, keys and values."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [*value, *(s for v in value.values() for s in strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


# ------------------------------------------------------------------ the formats, unit by unit


def test_html_text_escapes_markup_and_every_control():
    shown = html_text(PAYLOAD + "<b>&'\"")
    assert_clean(shown, "html_text")
    assert "&lt;b&gt;&amp;&#x27;&quot;" in shown
    assert "\\u202egpj.exe" in shown and SHOWN in shown  # visible, not acted on
    assert html_text("Доступ к сайту закрыт\nline two") == "Доступ к сайту закрыт\nline two"


def test_md_text_escapes_markup_and_every_control():
    shown = md_text(PAYLOAD + " | [x](javascript:1)\nnext")
    assert_clean(shown, "md_text")
    assert "\n" not in shown and r"\| \[x\](javascript:1)" in shown
    assert "\\\\u202egpj.exe" in shown  # printable's backslash, itself escaped for Markdown


@pytest.mark.parametrize("formula", ["=1+1", "+1", "-1", "@SUM(A1)", " =1", "\t=1", "\r=1"])
def test_csv_cell_neutralises_formulas(formula):
    cell = csv_cell(formula)
    assert cell.startswith("'") or cell.startswith("\\")
    assert_clean(cell, "csv_cell")


def test_csv_cell_escapes_every_control():
    cell = csv_cell(PAYLOAD)
    assert_clean(cell, "csv_cell")
    assert cell.startswith(SHOWN)
    assert csv_cell(7) == 7 and csv_cell(None) == ""


def test_json_text_is_json_with_nothing_raw():
    value = {"title": PAYLOAD, "Доступ": ["закрыт", HEADER_PAYLOAD, "\U000e0041", "a\\b"]}
    for outline in (0, 1, 2, 3):
        text = json_text(value, outline=outline)
        assert_clean(text, "json_text")
        assert text.count("\n") == (0, 3, 8, 8)[outline]  # a line per member, as deep as asked
        assert json.loads(text) == value  # the same value: escaping is JSON's own
    assert "Доступ" in json_text(value)  # readable text stays readable


def test_a_title_keeps_what_the_server_sent_but_its_nul():
    page = f"<html><title>{PAYLOAD}</title></html>".encode()
    assert title_of(page, "text/html; charset=utf-8") == " ".join(
        PAYLOAD.replace("\x00", "\ufffd").split()
    )


def test_log_lines_are_escaped_one_line_each(tmp_path):
    from probe.cli.measure import _logger

    path = tmp_path / "probe.log"
    log = _logger(str(path))
    log.info("%s %s", "http://evil.test/", PAYLOAD + "\nforged 2026-01-01 00:00:00Z line")
    for handler in log.handlers:
        handler.close()
    text = path.read_text(encoding="utf-8")
    assert_clean(text, "log")
    assert len(text.splitlines()) == 1 and SHOWN in text
    logging.getLogger("probe.check").handlers.clear()


def test_error_lines_are_escaped_once():
    from probe.cli._group import message

    raw = f"refused: {PAYLOAD}"
    assert_clean(message(raw), "message")
    assert message(raw) == printable(raw)
    quoted = f"targets.txt:1: {PAYLOAD!r} contains a control character"  # repr() escaped it
    assert message(quoted) == quoted  # shown as it is, its backslashes not doubled


def test_a_hostile_target_list_gets_a_clean_error(tmp_path):
    targets = tmp_path / "targets.txt"
    targets.write_bytes(f"http://a.kg/{PAYLOAD}\n".encode())
    result = CliRunner().invoke(cli, ["check", str(targets), "--db", str(tmp_path / "p.db")])
    assert result.exit_code == 2, result.output
    assert_clean(result.stderr, "check (bad list)")
    assert "\\x1b]0;pwned\\x07" in result.stderr and "\\\\" not in result.stderr


# ------------------------------------------------------------------ a hostile database


#: Columns whose values are structure, not text shown (ids, times, enumerations).
STRUCTURE = {
    "id", "run_id", "measurement_id", "vantage_id", "started_at", "finished_at",
    "start_time", "added_at", "at", "status", "verdict", "engine", "query_type", "purpose",
    "body_encoding", "kind", "counts", "settings", "dns_consistency", "software_version",
}  # fmt: skip
#: Columns holding JSON: their string leaves are made hostile, the JSON stays JSON.
JSON_COLUMNS = {
    "inputs", "evidence", "addresses", "cnames", "duplicate_replies", "headers",
    "informational", "response", "before", "after",
}  # fmt: skip


def poisoned(value: Any) -> Any:
    if isinstance(value, str):
        return value + PAYLOAD
    if isinstance(value, list):
        return [poisoned(v) for v in value]
    if isinstance(value, dict):
        return {k: poisoned(v) for k, v in value.items()}
    return value


def poison_database(path: Path) -> None:
    """Every text cell of ``path`` but ids, times and enumerations ends in :data:`PAYLOAD`
    (an empty one holds it alone)."""
    with sqlite3.connect(path) as conn:
        tables = [t for (t,) in conn.execute("select name from sqlite_master where type='table'")]
        for table in tables:
            if table.startswith("_"):
                continue
            columns = [
                name
                for _, name, kind, *_ in conn.execute(f"pragma table_info([{table}])")
                if kind.upper() == "TEXT" and name not in STRUCTURE
            ]
            for column in columns:
                rows = conn.execute(f"select rowid, [{column}] from [{table}]").fetchall()
                for rowid, value in rows:
                    if column in JSON_COLUMNS:
                        value = json.dumps(poisoned(json.loads(value or "null")))
                    else:  # an empty cell too: a network's name nobody found, a failure
                        value = poisoned(value or "")
                    conn.execute(
                        f"update [{table}] set [{column}] = ? where rowid = ?", [value, rowid]
                    )


def test_every_command_over_a_hostile_database_shows_nothing_raw(tmp_path):
    db = tmp_path / "merged.db"
    shutil.copy(FIXTURE_DB, db)
    poison_database(db)
    with sqlite3.connect(db) as conn:  # the hostile text is there, raw: this test can fail
        assert conn.execute("select count(*) from http_requests where title like ?",
                            [f"%{PAYLOAD}%"]).fetchone()[0]  # fmt: skip
    shown = read_everything(db)
    everything = "\n".join(shown.values())
    assert SHOWN in everything and "\\u202egpj.exe" in everything
    for line in ("runs --json", "timeline --min-measurements 1 --min-vantages 1 --anomalies "
                 "--json", "export --include-imported"):  # fmt: skip
        assert_json_lines_keep_the_values(shown, line)
    report = json.loads(shown["report --format json --min-measurements 1 --min-vantages 1"])
    assert any(PAYLOAD in text for text in strings(report["events"]))  # JSON keeps the value
    rows = list(csv.reader(io.StringIO(shown["report --format csv --min-measurements 1 "
                                             "--min-vantages 1"])))  # fmt: skip
    assert len(rows) > 1 and any(SHOWN in cell for row in rows for cell in row)


@pytest.mark.parametrize("fmt", ["md", "html", "csv", "json"])
def test_the_collectors_reports_render_through_the_same_escaping(tmp_path, fmt):
    """GET /report writes what bridge.write_report writes: the same render, so the same
    escaping (fed here from SQLite; the collector feeds it from PostgreSQL)."""
    from probe.collector import bridge
    from probe.report import Options
    from probe.store import open_db
    from probe.store.research import iter_summaries, measurement_details, network_names

    path = tmp_path / "merged.db"
    shutil.copy(FIXTURE_DB, path)
    poison_database(path)
    db = open_db(path)
    out = io.StringIO(newline="")
    bridge.write_report(
        iter_summaries(db),
        lambda ids: measurement_details(db, ids),
        out,
        fmt=fmt,
        generated_at="2026-12-01T00:00:00Z",
        filters={"domain": [PAYLOAD]},
        options=Options(1, 1, 86400),
        network_names=network_names(db),
    )
    assert_clean(out.getvalue(), f"collector report {fmt}", crlf=fmt == "csv")
    assert "pwned" in out.getvalue()  # the hostile text is in the report, escaped


def test_reanalyze_over_a_hostile_database_shows_nothing_raw(tmp_path):
    db = tmp_path / "merged.db"
    shutil.copy(FIXTURE_DB, db)
    with sqlite3.connect(db) as conn:  # hostile inputs and a changed verdict to report
        conn.execute("update measurements set input = input || ?, verdict = 'down'", [PAYLOAD])
    stdout, stderr = invoke("reanalyze", "--db", str(db))
    assert SHOWN in stdout  # a line per change, with the input
    assert_clean(stdout, "reanalyze")
    assert_clean(stderr, "reanalyze (stderr)")


# ------------------------------------------------------------------ hostile OONI measurements

#: OONI fields whose values a network or a hostile submitter writes, made hostile.
OONI_TEXT = {
    "title", "body", "failure", "server_name", "as_org_name", "probe_network_name",
    "resolver_network_name", "hostname",
}  # fmt: skip


def poison_ooni(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: poison_ooni(v, "headers" if key == "headers" else k) for k, v in value.items()}
    if isinstance(value, list):
        if key == "headers_list":
            return [[name, value + PAYLOAD] for name, value in value]
        return [poison_ooni(v, key) for v in value]
    if isinstance(value, str) and key in OONI_TEXT | {"headers"}:
        if key == "body":  # the page's title is the body's
            return value.replace("</title>", f"{PAYLOAD}</title>") + PAYLOAD
        return value + PAYLOAD
    return value


def test_imported_ooni_measurements_show_nothing_raw(tmp_path):
    lines = []
    for line in OONI_05.read_text().splitlines():
        try:
            lines.append(json.dumps(poison_ooni(json.loads(line))))
        except json.JSONDecodeError:
            lines.append(line + PAYLOAD)  # a line that is no JSON: its error is shown
    source = tmp_path / "hostile.jsonl.gz"
    source.write_bytes(gzip.compress("\n".join(lines).encode()))
    db = tmp_path / "imported.db"
    stdout, stderr = invoke("import", "--db", str(db), "--json", str(source))
    assert_clean(stdout, "import --json")
    assert_clean(stderr, "import (stderr)")
    imported = [json.loads(line) for line in stdout.splitlines()]
    assert len(imported) >= 4, stderr
    with sqlite3.connect(db) as conn:  # stored as sent: this test can fail
        titles = [json.loads(r)["http_request"]["title"]
                  for (r,) in conn.execute("select response from controls") if r]  # fmt: skip
    assert any(title.endswith(PAYLOAD) for title in titles), titles
    shown = read_everything(db)
    assert SHOWN in "\n".join(shown.values())


# ------------------------------------------------------------------ the lab


@pytest.fixture(scope="module")
def hostile_text(lab):
    lab.reset()
    with HostileText(lab) as h:
        yield h


def probe_check(lab: Any, db: Path, *extra: str) -> tuple[str, str, int]:
    urls = [f"http://www.{ZONE}/", f"http://www.{ZONE}/block", f"http://www.{ZONE}/redirect",
            f"http://www.{ZONE}/escheader", f"http://www.{ZONE}/fail"]  # fmt: skip
    argv = [sys.executable, "-m", "probe.cli", "check", "--db", str(db),
            "--resolver", f"udp://{TEXT_IP}", "--control-resolver", f"udp://{TEXT_IP}",
            "--helper", f"http://{TEXT_IP}:8080/", "--ca-file", lab.ca_file,
            "--dns-timeout", "2", "--tcp-timeout", "2", "--http-timeout", "4",
            "--control-timeout", "5", *extra]  # fmt: skip
    for url in urls:
        argv += ["--input", url]
    result = lab.run(lab.vantage, argv, timeout=180, input=b"")
    # Bytes, decoded strictly: output that is not UTF-8 fails here.
    return result.stdout.decode("utf-8"), result.stderr.decode("utf-8"), result.returncode


def test_check_and_every_command_after_it_show_nothing_raw(lab, hostile_text, tmp_path):
    db = tmp_path / "lab.db"
    log = tmp_path / "check.log"
    stdout, stderr, status = probe_check(lab, db, "--log-file", str(log))
    assert status == 0 and "Traceback" not in stderr, stderr
    assert_clean(stdout, "check (table)")
    assert_clean(stderr, "check (stderr)")
    assert SHOWN in stdout  # the block page's title, in the table's evidence, escaped
    assert_clean(log.read_text(encoding="utf-8"), "check --log-file")

    stdout, stderr, status = probe_check(lab, db, "--json")
    assert status == 0 and "Traceback" not in stderr, stderr
    assert_clean(stdout, "check --json")
    assert_clean(stderr, "check --json (stderr)")
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert len(lines) == 5
    blocked = next(line for line in lines if line["input"].endswith("/block"))
    assert blocked["verdict"] == "blocked", blocked

    with sqlite3.connect(db) as conn:  # the evidence is stored as the server sent it
        titles = {t for (t,) in conn.execute("select title from http_requests")}
        headers = [json.loads(h) for (h,) in conn.execute("select headers from http_requests")]
        controls = [json.loads(r) for (r,) in conn.execute("select response from controls") if r]
    assert " ".join(PAYLOAD.replace("\x00", "\ufffd").split()) in titles
    assert any(value == HEADER_PAYLOAD for hop in headers for _, value in hop)
    assert ["X-Evil", "\x1b]0;pwned\x07"] in [h for hop in headers for h in hop]
    assert any(c["http_request"]["title"] == PAYLOAD for c in controls)

    shown = read_everything(db)
    block = next(
        text
        for line, text in shown.items()
        if line.startswith("show") and text.startswith(f"http://www.{ZONE}/block ")
    )
    assert SHOWN in block  # ours and the control's titles, escaped


def test_a_collectors_refusals_are_shown_escaped(lab, hostile_text, tmp_path):
    """The collector's reasons (a refused measurement, a refused token) reach the terminal."""
    db = tmp_path / "lab.db"
    _, stderr, status = probe_check(lab, db, "--json")
    assert status == 0, stderr
    for port, code in ((8081, 0), (8082, 1)):
        argv = [sys.executable, "-m", "probe.cli", "upload", "--db", str(db),
                "--collector", f"http://{TEXT_IP}:{port}", "--token", "t0ken",
                "--retries", "0"]  # fmt: skip
        result = lab.run(lab.vantage, argv, timeout=120, input=b"")
        stdout, stderr = result.stdout.decode("utf-8"), result.stderr.decode("utf-8")
        assert result.returncode == code and "Traceback" not in stderr, stderr
        assert_clean(stdout, f"upload to :{port}")
        assert_clean(stderr, f"upload to :{port} (stderr)")
        assert SHOWN in stderr  # the reason, escaped
