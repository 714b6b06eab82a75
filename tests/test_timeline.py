"""Block timelines: the pure rules over summaries, and `probe timeline` over real lab runs.

The lab test runs `probe check` several times into one database, switching the censor on and
off between runs, on two networks (--probe-asn), and reads the events back with the real
command: block then unblock, an isolated anomaly, an inconclusive (offline) run inside an
event, a method change, one network still blocking after the other stopped.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

import pytest
from click.testing import CliRunner

from probe.cli import cli
from probe.model.records import MeasurementSummary, utc_now
from probe.report.timeline import Options, epoch, timeline
from tests.test_check import probe_check

T0 = epoch("2026-10-26 08:00:00")
HOUR = 3600


def m(
    hour: float,
    verdict: str,
    blocking: str | None = None,
    *,
    domain: str = "www.azattyk.org",
    asn: str | None = "AS8449",
    vantage: str = "v1",
    run: str | None = None,
    url: str | None = None,
) -> MeasurementSummary:
    t = T0 + int(hour * HOUR)
    return MeasurementSummary(
        t,
        domain,
        url or f"https://{domain}/",
        asn,
        vantage,
        run or f"run-{hour}",
        verdict,
        blocking,
        measurement_id=f"{url or domain}-{asn}-{hour}",
    )


# ------------------------------------------------------------------ the rules (pure)


def test_block_then_unblock_is_one_event_ending_at_the_first_accessible_measurement():
    result = timeline(
        [
            m(0, "accessible"),
            m(1, "blocked", "dns"),
            m(2, "blocked", "dns"),
            m(3, "blocked", "dns"),
            m(4, "accessible"),
            m(5, "accessible"),
        ]
    )
    (event,) = result.events
    assert (event.start, event.end, event.last_blocked) == (T0 + HOUR, T0 + 4 * HOUR, T0 + 3 * HOUR)
    assert (event.blocking, event.measurements, event.runs) == ("dns", 3, 3)
    assert result.anomalies == []
    (net,) = result.networks
    assert net.current == "accessible" and net.counts["blocked"] == 3


def test_an_isolated_blocked_measurement_is_an_anomaly_not_an_event():
    result = timeline([m(0, "accessible"), m(1, "blocked", "tls"), m(2, "accessible")])
    assert result.events == []
    (anomaly,) = result.anomalies
    assert (anomaly.kind, anomaly.start, anomaly.end) == ("anomaly", T0 + HOUR, T0 + 2 * HOUR)


def test_two_vantages_agreeing_make_an_event_when_required_measurements_are_more():
    rows = [
        m(0, "accessible"),
        m(1, "blocked", "dns", vantage="a"),
        m(1.5, "blocked", "dns", vantage="b"),
        m(2, "accessible"),
    ]
    assert timeline(rows, Options(min_measurements=3, min_vantages=2)).events
    same = [r._replace(vantage="a") for r in rows]
    result = timeline(same, Options(min_measurements=3, min_vantages=2))
    assert result.events == [] and len(result.anomalies) == 1


@pytest.mark.parametrize("between", ["inconclusive", "down"])
def test_inconclusive_and_down_neither_end_nor_split_an_event(between):
    result = timeline(
        [
            m(0, "blocked", "dns"),
            m(1, between),
            m(2, between),
            m(3, "blocked", "dns"),
            m(4, "accessible"),
        ]
    )
    (event,) = result.events
    assert (event.measurements, event.inconclusive, event.end) == (2, 2, T0 + 4 * HOUR)
    # Nor do they open one.
    assert timeline([m(0, "accessible"), m(1, between), m(2, "accessible")]).anomalies == []


def test_a_method_change_is_listed_in_order():
    result = timeline(
        [
            m(0, "blocked", "dns"),
            m(1, "blocked", "dns"),
            m(2, "blocked", "tls"),
            m(3, "blocked", "tls"),
        ]
    )
    (event,) = result.events
    assert event.blocking == ["dns", "tls"]
    assert [(p.blocking, p.start, p.measurements) for p in event.phases] == [
        ("dns", T0, 2),
        ("tls", T0 + 2 * HOUR, 2),
    ]
    assert event.end is None


def test_networks_are_separate_and_may_interleave():
    rows = [
        m(0, "blocked", "dns", asn="AS1"),
        m(0, "blocked", "dns", asn="AS2"),
        m(1, "blocked", "dns", asn="AS1"),
        m(1, "blocked", "dns", asn="AS2"),
        m(2, "accessible", asn="AS1"),
        m(2, "blocked", "dns", asn="AS2"),
    ]
    result = timeline(rows)
    by_asn = {e.asn: e for e in result.events}
    assert by_asn["AS1"].end == T0 + 2 * HOUR
    assert by_asn["AS2"].end is None and by_asn["AS2"].measurements == 3


def test_the_longest_gap_and_unknown_periods_are_reported_never_assumed_accessible():
    rows = [
        m(0, "accessible"),
        m(1, "blocked", "dns"),
        m(1.5, "blocked", "dns"),
        m(30, "blocked", "dns"),
        m(31, "accessible"),
    ]
    result = timeline(rows, Options(max_gap=24 * HOUR))
    (event,) = result.events
    assert event.longest_gap == int(28.5 * HOUR)
    assert event.to_dict()["longest_gap_seconds"] == int(28.5 * HOUR)
    (net,) = result.networks
    assert net.gaps == [(T0 + int(1.5 * HOUR), T0 + 30 * HOUR)]


def test_measurements_out_of_time_order_on_a_network_are_refused():
    with pytest.raises(ValueError, match="out of time order"):
        timeline([m(2, "accessible"), m(1, "blocked", "dns")])


def test_event_json_has_the_issue_fields():
    (event,) = timeline([m(0, "blocked", "dns"), m(1, "blocked", "dns")]).events
    data = event.to_dict()
    assert data["domain"] == "www.azattyk.org" and data["asn"] == "AS8449"
    assert data["start"] == "2026-10-26T08:00:00Z" and data["end"] is None
    assert (data["blocking"], data["measurements"], data["vantages"]) == ("dns", 2, 1)


# ------------------------------------------------------------------ real lab runs

NET_A, NET_B = "AS64500", "AS64501"
UNBLOCK = "http://24.kg/"
ANOMALY = "https://kloop.kg/"
INCONCLUSIVE = "https://respublica.kg/"
METHOD = "https://www.azattyk.org/"
NETWORK = "https://kaktus.media/"


def _after_the_last_measurement(db) -> None:
    """Measurement times have one-second resolution: runs must not share a second. Waits
    until the clock shows a later second than the database's last measurement (none yet:
    at once)."""
    if not db.exists():
        return
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        (last,) = conn.execute("select max(start_time) from measurements").fetchone()
    deadline = time.monotonic() + 30  # only against a hang (a clock gone backwards)
    while last is not None and utc_now() <= last:
        assert time.monotonic() < deadline, f"the clock never passed {last}"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def lab_timeline(lab, helper, tmp_path_factory):
    """Seven `probe check` runs into one database, the censor switched between them."""
    db = tmp_path_factory.mktemp("timeline") / "probe.db"
    starts: dict[str, dict[str, str]] = {}

    def run(name: str, asn: str, urls: list[str], censor: Any) -> None:
        lab.reset()
        try:
            censor(lab)
            _after_the_last_measurement(db)
            lines = probe_check(lab, db, urls, "--probe-asn", asn, "--probe-cc", "KG")
        finally:
            lab.reset()
        starts[name] = {line["input"]: line for line in lines}

    def r1(lab):
        lab.dns_nxdomain("respublica.kg")
        lab.dns_nxdomain("www.azattyk.org")
        lab.tcp_refuse("kaktus.media")

    def r3(lab):
        lab.dns_lie("24.kg", lab.BLOCKPAGE_IP)
        lab.dns_lie("kloop.kg", "172.16.20.1")
        lab.dpi_reset("www.azattyk.org", port=443)
        lab.tcp_refuse("kaktus.media")

    def r5(lab):
        lab.dns_lie("24.kg", lab.BLOCKPAGE_IP)
        lab.dns_nxdomain("respublica.kg")

    run("r1", NET_A, [UNBLOCK, ANOMALY, INCONCLUSIVE, METHOD, NETWORK], r1)
    run("r2", NET_B, [NETWORK], lambda lab: lab.tcp_refuse("kaktus.media"))
    run("r3", NET_A, [UNBLOCK, ANOMALY, METHOD, NETWORK], r3)
    run("r4", NET_A, [INCONCLUSIVE], lambda lab: lab.offline())  # the vantage is cut off
    run("r5", NET_A, [UNBLOCK, ANOMALY, INCONCLUSIVE, NETWORK], r5)
    run("r6", NET_B, [NETWORK], lambda lab: lab.tcp_refuse("kaktus.media"))
    run("r7", NET_A, [UNBLOCK], lambda lab: None)
    return db, starts


def _verdicts(starts: dict[str, dict[str, Any]]) -> dict[tuple[str, str], tuple]:
    return {
        (run, url): (line["verdict"], line["blocking"])
        for run, lines in starts.items()
        for url, line in lines.items()
    }


def _events(db: Any, *args: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(cli, ["timeline", "--db", str(db), "--json", *args])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def _time(starts: dict[str, dict[str, Any]], run: str, url: str) -> str:
    """The ISO time a run measured url (read from the database via the run's JSON line)."""
    return starts[run][url]["start"]


@pytest.fixture(scope="module")
def lab_events(lab_timeline):
    db, starts = lab_timeline
    from probe.store import open_db

    times = {
        row["id"]: row["start_time"][:19].replace(" ", "T") + "Z"
        for row in open_db(db).table("measurements").rows
    }
    for lines in starts.values():
        for line in lines.values():
            line["start"] = times[line["measurement_id"]]
    events = _events(db, "--anomalies")
    return db, starts, {(e["domain"], e["asn"], e["kind"]): e for e in events}


def test_lab_runs_measured_what_the_censor_did(lab_events):
    _, starts, _ = lab_events
    verdicts = _verdicts(starts)
    assert verdicts[("r1", UNBLOCK)] == ("accessible", None)
    assert verdicts[("r3", UNBLOCK)] == ("blocked", "dns")
    assert verdicts[("r7", UNBLOCK)] == ("accessible", None)
    assert verdicts[("r3", ANOMALY)] == ("blocked", "dns")
    assert verdicts[("r5", ANOMALY)] == ("accessible", None)
    assert verdicts[("r4", INCONCLUSIVE)] == ("inconclusive", None)
    assert verdicts[("r1", METHOD)] == ("blocked", "dns")
    assert verdicts[("r3", METHOD)] == ("blocked", "tls")
    assert verdicts[("r5", NETWORK)] == ("accessible", None)
    assert verdicts[("r6", NETWORK)] == ("blocked", "tcp_ip")


def test_lab_block_then_unblock(lab_events):
    _, starts, events = lab_events
    event = events[("24.kg", NET_A, "event")]
    assert event["start"] == _time(starts, "r3", UNBLOCK)
    assert event["last_blocked"] == _time(starts, "r5", UNBLOCK)
    assert event["end"] == _time(starts, "r7", UNBLOCK)
    assert (event["blocking"], event["measurements"], event["runs"]) == ("dns", 2, 2)
    assert event["blockpages"]  # the lie pointed at a known block page


def test_lab_isolated_anomaly(lab_events):
    _, starts, events = lab_events
    assert ("kloop.kg", NET_A, "event") not in events
    anomaly = events[("kloop.kg", NET_A, "anomaly")]
    assert anomaly["start"] == _time(starts, "r3", ANOMALY)
    assert anomaly["end"] == _time(starts, "r5", ANOMALY)


def test_lab_inconclusive_run_inside_an_event(lab_events):
    _, starts, events = lab_events
    event = events[("respublica.kg", NET_A, "event")]
    assert event["start"] == _time(starts, "r1", INCONCLUSIVE)
    assert event["last_blocked"] == _time(starts, "r5", INCONCLUSIVE)
    assert (event["measurements"], event["inconclusive"], event["end"]) == (2, 1, None)


def test_lab_method_change(lab_events):
    _, starts, events = lab_events
    event = events[("www.azattyk.org", NET_A, "event")]
    assert event["blocking"] == ["dns", "tls"]
    assert [p["start"] for p in event["methods"]] == [
        _time(starts, "r1", METHOD),
        _time(starts, "r3", METHOD),
    ]
    assert event["end"] is None


def test_lab_one_network_still_blocking_after_the_other_stopped(lab_events):
    db, starts, events = lab_events
    stopped = events[("kaktus.media", NET_A, "event")]
    ongoing = events[("kaktus.media", NET_B, "event")]
    assert stopped["end"] == _time(starts, "r5", NETWORK)
    assert (ongoing["start"], ongoing["end"]) == (_time(starts, "r2", NETWORK), None)
    assert ongoing["last_blocked"] == _time(starts, "r6", NETWORK)
    # Filters: one network, one domain.
    assert {(e["domain"], e["asn"]) for e in _events(db, "--asn", "64501")} == {
        ("kaktus.media", NET_B)
    }
    assert {e["asn"] for e in _events(db, "--domain", "kaktus.media")} == {NET_A, NET_B}


def test_lab_timeline_table_and_bad_input(lab_events):
    db, _, _ = lab_events
    result = CliRunner().invoke(cli, ["timeline", "--db", str(db), "--anomalies"])
    assert result.exit_code == 0, result.output
    assert "kaktus.media" in result.stdout and "dns > tls" in result.stdout
    assert "anomaly" in result.stdout
    for bad in (["--asn", "Beeline"], ["--since", "yesterday"]):
        result = CliRunner().invoke(cli, ["timeline", "--db", str(db), *bad])
        assert result.exit_code == 2 and "Traceback" not in result.output
    result = CliRunner().invoke(cli, ["timeline", "--db", str(db) + ".missing"])
    assert result.exit_code == 2
