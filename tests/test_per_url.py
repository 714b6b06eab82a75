"""The unit of a timeline is the URL measured: a network that injects a block page into
cleartext HTTP while HTTPS passes (the common Kyrgyz method) blocks http://respublica.kg/ and
not https://respublica.kg/. Every view of the data says so, the same way: the timeline, the
report's summary and events, its chart, the latest_verdicts view and the collector."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx

from tests.test_check import probe_check
from tests.test_collector import add_volunteer, auth, probe

HTTP, HTTPS = "http://respublica.kg/", "https://respublica.kg/"


def _measured(lab: Any, db: Path, runs: int) -> None:
    lab.reset()
    lab.inject_blockpage(lab.site("respublica.kg").ip)
    try:
        for _ in range(runs):
            by_input = {line["input"]: line for line in probe_check(lab, db, [HTTP, HTTPS])}
            assert by_input[HTTP]["verdict"] == "blocked", by_input[HTTP]
            assert by_input[HTTPS]["verdict"] == "accessible", by_input[HTTPS]
    finally:
        lab.reset()


def _states(report: dict[str, Any]) -> dict[str, str]:
    return {n["input"]: n["current"] for n in report["networks"]}


def test_a_block_of_cleartext_only_is_one_event_for_that_url_everywhere(
    lab, helper, dsn, collector, tmp_path
):
    db = tmp_path / "probe.db"
    _measured(lab, db, 3)

    timeline = probe("timeline", "--json", "--anomalies", "--db", str(db))
    assert timeline.returncode == 0, timeline.stderr
    events = [json.loads(line) for line in timeline.stdout.splitlines()]
    assert [(e["kind"], e["input"], e["domain"]) for e in events] == [
        ("event", HTTP, "respublica.kg")
    ]
    assert events[0]["end"] is None and events[0]["measurements"] == 3

    out = tmp_path / "report.json"
    assert probe("report", "--format", "json", "--db", str(db), "-o", str(out)).returncode == 0
    report = json.loads(out.read_text())
    assert _states(report) == {HTTP: "blocked", HTTPS: "accessible"}
    assert {e["input"] for e in report["events"]} == {HTTP}
    # The evidence itself: the block page the ISP injected, and the page the helper fetched.
    observed = report["events"][0]["detail"]["observed"]
    page, theirs = observed["page"], observed["control"]["page"]
    assert page["title"] and len(page["sha256"]) == 64 and page["size"] > 0, page
    assert theirs["title"] and theirs["title"] != page["title"], theirs

    page = tmp_path / "report.html"
    assert probe("report", "--format", "html", "--db", str(db), "-o", str(page)).returncode == 0
    html = page.read_text()
    assert f'data-input="{HTTP}"' in html and f'data-input="{HTTPS}"' in html

    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        latest = dict(conn.execute("select url, verdict from latest_verdicts").fetchall())
    assert latest == {HTTP: "blocked", HTTPS: "accessible"}

    token = add_volunteer(dsn, "bishkek")
    upload = probe("upload", "--db", str(db), "--collector", collector.url, "--token", token)
    assert upload.returncode == 0, upload.stderr
    client = httpx.Client(base_url=collector.url, headers=auth(token))
    remote = client.get("/timeline?anomalies=1")
    assert remote.status_code == 200, remote.text
    assert remote.text == timeline.stdout
    remote_report = client.get("/report?format=json")
    assert remote_report.status_code == 200, remote_report.text
    assert _states(remote_report.json()) == {HTTP: "blocked", HTTPS: "accessible"}


def test_ties_within_a_second_follow_the_order_measured(tmp_path):
    """Measurements of one run share their second; the timeline breaks the tie by their
    place in the run, the same way in every reader (not by an id or the storage order)."""
    from probe.analysis import analyze
    from probe.store import Store, open_db
    from probe.store.research import iter_summaries
    from tests.test_collector import observations

    store = Store(open_db(tmp_path / "p.db"))
    run = store.start_run(inputs=[], settings={}, targets=4, probe_asn="AS8449", probe_cc="KG")
    when = "2026-11-01 10:00:00"
    # Saved out of their order: the fourth first.
    for position in (3, 1, 0, 2):
        obs = observations("24.kg", when, blocked=position % 2 == 0)
        store.save(run, obs, analyze(obs), probe_asn="AS8449", probe_cc="KG", position=position)
    verdicts = [s.verdict for s in iter_summaries(store.db)]
    assert verdicts == ["blocked", "accessible", "blocked", "accessible"]
