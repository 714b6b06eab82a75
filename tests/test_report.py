"""`probe report` in every format, escaped; the HTML chart in a real headless Chromium; the
database as researchers open it (views, schema documentation, Datasette metadata).

The database here is written row by row, as a hostile volunteer's database could arrive by
`probe merge`: every text in it (domains, reasons, evidence, failure strings) is untrusted.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import uuid
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from probe.cli import cli
from probe.store import open_db
from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = "<script>document.title='pwned'</script><img src=x onerror=alert(1)>"
LINK = "[click here](javascript:alert(1))"
FORMULA = '=HYPERLINK("http://evil.example/","x")'
HOSTILE_DOMAIN = 'x"><script>alert(1)</script>.kg'
#: The AS names a helper's /whoami gave the runs: from the network, so untrusted too.
AS_NAMES = {"AS1": "ElCat <b>Ltd</b> | [x](javascript:1)", "AS2": "=cmd|' /C calc'!A0"}


def day(n: int, hour: int = 8) -> str:
    return f"2026-10-{20 + n:02d} {hour:02d}:00:00"


class Writer:
    """Rows written straight into a probe database (one run per time and network)."""

    def __init__(self, path: Path) -> None:
        self.db = open_db(path)
        self.path = path

    def add(
        self,
        when: str,
        domain: str,
        asn: str,
        verdict: str,
        blocking: str | None = None,
        *,
        failure: str | None = None,
        blockpage: str | None = None,
        reason: str = "",
        evidence: list[dict[str, Any]] | None = None,
        status: str = "complete",
        offline: int = 0,
    ) -> str:
        run_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{when}/{asn}"))
        self.db.execute(
            "insert or ignore into runs (id, started_at, finished_at, status, probe_asn, "
            "probe_cc, offline, targets, probe_network_name) "
            "values (?, ?, ?, ?, ?, 'KG', ?, 1, ?)",
            [run_id, when, when, status, asn, offline, AS_NAMES.get(asn)],
        )
        measurement_id = str(uuid.uuid4())
        self.db.execute(
            "insert into measurements (id, run_id, input, url, domain, start_time, probe_asn, "
            "probe_cc, verdict, blocking, failure, blockpage, confirmed, reason, evidence) "
            "values (?, ?, ?, ?, ?, ?, ?, 'KG', ?, ?, ?, ?, ?, ?, ?)",
            [
                measurement_id,
                run_id,
                f"https://{domain}/",
                f"https://{domain}/",
                domain,
                when,
                asn,
                verdict,
                blocking,
                failure,
                blockpage,
                int(blockpage is not None),
                reason,
                json.dumps(evidence or []),
            ],
        )
        self.db.conn.commit()
        return measurement_id


def story(path: Path) -> Path:
    """Known events on two networks, and one target whose every text is hostile."""
    w = Writer(path)
    # 24.kg on AS1: DNS from day 2, three days without measurement, accessible on day 7.
    w.add(day(1), "24.kg", "AS1", "accessible")
    for n in (2, 3, 6):
        w.add(
            day(n),
            "24.kg",
            "AS1",
            "blocked",
            "dns",
            failure="dns_nxdomain_error",
            reason="The system resolver failed (dns_nxdomain_error)",
        )
    w.add(day(7), "24.kg", "AS1", "accessible")
    # 24.kg on AS2: DNS, then SNI filtering; still blocked.
    for n, method in ((1, "dns"), (2, "dns"), (3, "tls"), (4, "tls")):
        w.add(day(n), "24.kg", "AS2", "blocked", method)
    # kloop.kg: one isolated blocked measurement on AS1, always accessible on AS2.
    for n, verdict in ((1, "accessible"), (2, "blocked"), (3, "accessible")):
        w.add(day(n), "kloop.kg", "AS1", verdict, "tls" if verdict == "blocked" else None)
    for n in (1, 2, 3, 4):
        w.add(day(n), "kloop.kg", "AS2", "accessible")
    # evil.kg: a block page whose title and evidence are hostile.
    evidence = [
        {
            "finding": "page_differs",
            "step": "http",
            "ours": {"title": SCRIPT + " " + LINK, "status": 200},
            "control": {"title": "| a | table | " + FORMULA},
        }
    ]
    for n in (1, 2):
        w.add(
            day(n),
            "evil.kg",
            "AS1",
            "blocked",
            "http-diff",
            failure=FORMULA,
            blockpage="@SUM(1+1)",
            reason=f"The page ({SCRIPT}) {LINK} differs",
            evidence=evidence,
        )
    # A domain no probe would store, as a hostile merged database could hold it.
    for n in (3, 4):
        w.add(day(n), HOSTILE_DOMAIN, "AS1", "blocked", "tcp_ip", failure="-1+1")
    return path


def report(db: Path, fmt: str, *extra: str) -> str:
    result = CliRunner().invoke(cli, ["report", "--db", str(db), "--format", fmt, *extra])
    assert result.exit_code == 0, result.output
    return result.stdout


# ------------------------------------------------------------------ formats and escaping


def test_json_report_is_one_object_with_summaries_events_and_evidence(tmp_path):
    data = json.loads(report(story(tmp_path / "p.db"), "json"))
    assert data["measurements"] == 20
    events = {(e["domain"], e["asn"]): e for e in data["events"]}
    assert set(events) == {
        ("24.kg", "AS1"),
        ("24.kg", "AS2"),
        ("evil.kg", "AS1"),
        (HOSTILE_DOMAIN, "AS1"),
    }
    first = events[("24.kg", "AS1")]
    assert (first["start"], first["end"]) == ("2026-10-22T08:00:00Z", "2026-10-27T08:00:00Z")
    assert first["longest_gap_seconds"] == 3 * 86400
    assert events[("24.kg", "AS2")]["blocking"] == ["dns", "tls"]
    assert events[("evil.kg", "AS1")]["detail"]["evidence"][0]["finding"] == "page_differs"
    (anomaly,) = data["anomalies"]
    assert (anomaly["domain"], anomaly["asn"]) == ("kloop.kg", "AS1")
    nets = {(n["domain"], n["asn"]): n for n in data["networks"]}
    assert nets[("24.kg", "AS1")]["current"] == "accessible"
    assert nets[("24.kg", "AS2")]["current_blocking"] == "tls"
    assert nets[("24.kg", "AS1")]["unknown_gaps"] == [
        ["2026-10-23T08:00:00Z", "2026-10-26T08:00:00Z"]
    ]
    assert nets[("kloop.kg", "AS2")]["blocked_share"] == 0
    assert nets[("kloop.kg", "AS2")]["network_name"] == AS_NAMES["AS2"]


def test_a_measurement_whose_time_cannot_be_read_is_left_out(tmp_path):
    """A merged or hand-edited database may hold a start_time SQLite cannot read: the report
    leaves that measurement out and reports the rest."""
    path = story(tmp_path / "p.db")
    before = json.loads(report(path, "json"))
    Writer(path).add("not a time", "24.kg", "AS1", "blocked", "dns")
    after = json.loads(report(path, "json"))
    assert after["measurements"] == before["measurements"] == 20
    for key in ("first", "last", "networks", "events", "anomalies"):
        assert after[key] == before[key], key


def test_csv_has_one_row_per_event_and_no_formula_cells(tmp_path):
    text = report(story(tmp_path / "p.db"), "csv")
    every = list(csv.DictReader(io.StringIO(text)))
    rows = [r for r in every if r["section"] == "event"]  # summaries and anomalies have theirs
    assert len(rows) == 4  # the anomaly is not an event
    for row in every:
        for value in row.values():
            assert value.lstrip(" ")[:1] not in ("=", "+", "-", "@"), row
    assert {r["network_name"] for r in rows} == {"'" + AS_NAMES["AS2"], AS_NAMES["AS1"]}
    evil = next(r for r in rows if r["domain"] == "evil.kg")
    assert evil["failures"] == "'" + FORMULA and evil["blockpages"] == "'@SUM(1+1)"
    assert next(r for r in rows if r["domain"] == "24.kg" and r["asn"] == "AS2")["blocking"] == (
        "dns>tls"
    )


def test_markdown_escapes_what_came_from_the_network(tmp_path):
    text = report(story(tmp_path / "p.db"), "md")
    assert "<script" not in text and "<img" not in text
    assert "&lt;script&gt;" in text
    assert LINK not in text and r"\[click here\](javascript:alert(1))" in text
    assert r"AS1 (ElCat &lt;b&gt;Ltd&lt;/b&gt; \| \[x\](javascript:1))" in text
    # A pipe from the network cannot open a table cell: every table row keeps its columns.
    for line in text.splitlines():
        if line.startswith("| 24.kg") or line.startswith("| evil"):
            assert len(re.findall(r"(?<!\\)\|", line)) in (8, 10), line


def test_html_escapes_and_forbids_scripts(tmp_path):
    text = report(story(tmp_path / "p.db"), "html")
    assert "<script" not in text.lower() and "<img" not in text.lower()
    assert "&lt;script&gt;document.title" in text
    assert "AS1 (ElCat &lt;b&gt;Ltd&lt;/b&gt;" in text  # the AS name, escaped
    assert "Content-Security-Policy" in text and "default-src 'none'" in text
    links = _Attributes()
    links.feed(text)
    assert links.names & {"src", "href", "xlink:href", "action", "srcset"} == set()


class _Attributes(HTMLParser):
    """Every attribute name used in a page (nothing may load or link anywhere)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.names |= {name for name, _ in attrs}


def test_filters_and_output_file(tmp_path):
    db = story(tmp_path / "p.db")
    out = tmp_path / "r.json"
    result = CliRunner().invoke(
        cli,
        [
            "report",
            "--db",
            str(db),
            "--format",
            "json",
            "-o",
            str(out),
            "--domain",
            "24.kg",
            "--asn",
            "as2",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert {(n["domain"], n["asn"]) for n in data["networks"]} == {("24.kg", "AS2")}
    assert data["filters"] == {"domain": ["24.kg"], "asn": ["AS2"]}
    result = CliRunner().invoke(cli, ["report", "--db", str(db), "--since", "soon"])
    assert result.exit_code == 2 and "Traceback" not in result.output


# ------------------------------------------------------------------ the chart in a browser


class ChartDOM(HTMLParser):
    """Rows, bars, endings and anomalies of the timeline chart, read from the DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[tuple[str, str], dict[str, list[str]]] = {}
        self.current: tuple[str, str] | None = None
        self.depth = 0
        self.scripts = 0
        self.title: list[str] = []
        self.in_title = False
        self.ticks = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "script":
            self.scripts += 1
        if tag == "title" and self.current is None:
            self.in_title = True
        if tag == "text" and "tick" in classes:
            self.ticks += 1
        if tag == "g" and "row" in classes:
            self.current = (a.get("data-domain") or "", a.get("data-asn") or "")
            self.rows[self.current] = {
                "bar": [],
                "ending": [],
                "gap": [],
                "anomaly": [],
                "measured": [],
            }
            self.depth = 0
        elif self.current is not None:
            if tag == "g":
                self.depth += 1
            for kind in ("bar", "ending", "gap", "anomaly", "measured"):
                if kind in classes:
                    self.rows[self.current][kind].append(a.get("data-blocking") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        if tag == "g" and self.current is not None:
            if self.depth == 0:
                self.current = None
            else:
                self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title.append(data)


#: Headless, quiet and alone: no sandbox (root), no GPU, nothing fetched in the background.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
)


def chromium(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """Debian's chromium, headless, in an empty network namespace (nothing can leave), with a
    fresh profile; its whole process group is ended afterwards."""
    binary = require_tool("chromium", "the HTML report test needs it: apt-get install -y chromium")
    argv = ["unshare", "-n", binary, *CHROMIUM_FLAGS, *args]
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
    return subprocess.CompletedProcess(argv, process.returncode, out, err)


def test_html_report_in_a_real_browser(tmp_path):
    db = story(tmp_path / "p.db")
    page = tmp_path / "report.html"
    result = CliRunner().invoke(
        cli, ["report", "--db", str(db), "--format", "html", "-o", str(page)]
    )
    assert result.exit_code == 0, result.output
    shot = tmp_path / "report.png"
    url = page.as_uri()
    taken = chromium(
        f"--user-data-dir={tmp_path / 'profile-shot'}",
        "--window-size=1300,1500",
        f"--screenshot={shot}",
        url,
    )
    assert taken.returncode == 0, taken.stderr[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (1300, 1500)
    if os.environ.get("PROBE_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["PROBE_KEEP_SCREENSHOT"])
    dumped = chromium(f"--user-data-dir={tmp_path / 'profile-dom'}", "--dump-dom", url)
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = ChartDOM()
    dom.feed(dumped.stdout)
    # Nothing hostile ran or became an element; the page is whole.
    assert dom.scripts == 0 and "".join(dom.title) == "Website blocking report"
    assert dom.ticks >= 3
    assert list(dom.rows) == [
        ("24.kg", "AS1"),
        ("24.kg", "AS2"),
        ("evil.kg", "AS1"),
        ("kloop.kg", "AS1"),
        ("kloop.kg", "AS2"),
        (HOSTILE_DOMAIN, "AS1"),
    ]
    bars = {key: row["bar"] for key, row in dom.rows.items()}
    assert bars == {
        ("24.kg", "AS1"): ["dns"],
        ("24.kg", "AS2"): ["dns", "tls"],
        ("evil.kg", "AS1"): ["http-diff"],
        ("kloop.kg", "AS1"): [],
        ("kloop.kg", "AS2"): [],
        (HOSTILE_DOMAIN, "AS1"): ["tcp_ip"],
    }
    assert dom.rows[("24.kg", "AS1")]["ending"] == ["dns"]  # ended between day 6 and day 7
    # Three days without measurement: unknown, drawn over the block and out of "measured".
    assert dom.rows[("24.kg", "AS1")]["gap"] == ["dns"]
    assert len(dom.rows[("24.kg", "AS1")]["measured"]) == 2
    assert len(dom.rows[("kloop.kg", "AS1")]["anomaly"]) == 1


# ------------------------------------------------------------------ the database for research


def test_views_join_verdicts_with_runs(tmp_path):
    w = Writer(tmp_path / "p.db")
    w.add(day(1), "24.kg", "AS1", "blocked", "dns")
    w.add(day(2), "24.kg", "AS1", "inconclusive", status="offline", offline=1)
    w.add(day(3), "24.kg", "AS1", "accessible")
    db = w.db
    rows = db.execute(
        "select verdict, run_status, run_offline, vantage_kind from verdicts order by start_time"
    ).fetchall()
    assert rows == [
        ("blocked", "complete", 0, "local"),
        ("inconclusive", "offline", 1, "local"),
        ("accessible", "complete", 0, "local"),
    ]
    assert db.execute("select verdict from latest_verdicts").fetchall() == [("accessible",)]
    assert db.execute("select count(*) from blocked").fetchone() == (1,)
    assert db.execute(
        "select sum(blocked), sum(inconclusive), sum(measurements) from run_summaries"
    ).fetchone() == (1, 1, 3)


def _schema(db: Any) -> dict[str, set[str]]:
    names = db.table_names() + db.view_names()
    return {name: {c.name for c in db[name].columns} for name in names}


def test_every_table_column_and_view_is_documented(tmp_path):
    schema = _schema(open_db(tmp_path / "p.db"))
    doc = (ROOT / "docs" / "schema.md").read_text()
    for name, columns in schema.items():
        if name in (
            "verdicts",
            "blocked",
            "latest_verdicts",
            "run_summaries",
            "dns_answers",
            "tls_results",
            "http_hops",
            "http_bodies",
        ):
            section = doc.split("## Views", 1)[1]
            line = next((li for li in section.splitlines() if li.startswith(f"| `{name}`")), "")
            assert line, f"view {name} is not documented"
            for column in columns - {"newest"} - {"pruned"} - {"vantage"}:
                assert column in line or name in ("blocked", "latest_verdicts"), (name, column)
            continue
        assert f"### {name}" in doc, f"table {name} is not documented"
        section = doc.split(f"### {name}", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
        for column in columns:
            if name == "_sqlite_migrations":
                continue
            assert f"`{column}`" in section, f"{name}.{column} is not documented"
    for word in ("`t0` / `t`", "`depth`", "`engine`", "`purpose`"):
        assert word in doc


def test_datasette_metadata_names_what_exists(tmp_path):
    schema = _schema(open_db(tmp_path / "p.db"))
    meta = json.loads((ROOT / "docs" / "datasette-metadata.json").read_text())
    tables = meta["databases"]["probe"]["tables"]
    assert set(tables) == set(schema)
    for name, entry in tables.items():
        assert set(entry.get("columns", {})) <= schema[name], name
        assert set(entry.get("facets", [])) <= schema[name], name
        if "sort_desc" in entry:
            assert entry["sort_desc"] in schema[name]
    for name in ("measurements", "verdicts"):
        assert {"verdict", "blocking", "probe_asn"} <= set(tables[name]["facets"])
