"""`probe reanalyze`: today's analysis over stored observations, changes recorded."""

from __future__ import annotations

import json

from click.testing import CliRunner

from probe.analysis import analyze
from probe.cli import cli
from probe.model.records import (
    Control,
    DNSQuery,
    HTTPRequest,
    Observations,
    TCPConnect,
    Verdict,
)
from probe.store import Store, open_db

SITE = "192.88.99.120"
TITLE = "Kaktus Media: news of Kyrgyzstan"
NOTICE = "<html><title>Бул ресурска кирүү чектелген</title><body>Чектелген.</body></html>"


def notice_observations() -> Observations:
    """An ISP notice in place of the site's page: equal status, framing headers in common."""
    control = {
        "tcp_connect": {f"{SITE}:80": {"status": True, "failure": None}},
        "tls_handshake": {},
        "http_request": {
            "body_length": 24_000,
            "failure": None,
            "title": TITLE,
            "headers": {"Content-Length": "24000", "Connection": "keep-alive"},
            "status_code": 200,
        },
        "dns": {"failure": None, "addrs": [SITE]},
        "ip_info": {SITE: {"asn": 64500, "flags": 3}},
    }
    return Observations(
        input="http://kaktus.media/",
        url="http://kaktus.media/",
        domain="kaktus.media",
        start_time="2026-11-20 10:00:00",
        dns=[DNSQuery("kaktus.media", "A", "system", "udp://192.88.99.10:53", addresses=[SITE])],
        tcp=[TCPConnect(SITE, 80)],
        http=[
            HTTPRequest(
                url="http://kaktus.media/",
                ip=SITE,
                port=80,
                status_code=200,
                headers=[["Content-Length", str(len(NOTICE.encode()))], ["Connection", "close"]],
                title="Бул ресурска кирүү чектелген",
                body=NOTICE.encode(),
                body_length=len(NOTICE.encode()),
            )
        ],
        control=Control("http://192.88.99.80/", None, control),
    )


def stored_as(tmp_path, verdict: Verdict) -> tuple[str, str]:
    path = tmp_path / "probe.db"
    store = Store(open_db(path))
    run_id = store.start_run(inputs=[], settings={}, targets=1)
    measurement_id = store.save(run_id, notice_observations(), verdict)
    return str(path), measurement_id


def test_reanalyze_rewrites_a_verdict_an_older_rule_got_wrong(tmp_path):
    # As stored by a version whose header rule called the notice the site's page.
    path, measurement_id = stored_as(tmp_path, Verdict("accessible", None, True, "consistent"))
    result = CliRunner().invoke(cli, ["reanalyze", "--db", path])
    assert result.exit_code == 0, result.output
    assert "kaktus.media" in result.output and "http-diff" in result.output
    db = open_db(path)
    row = db["measurements"].get(measurement_id)
    assert (row["verdict"], row["blocking"]) == ("blocked", "http-diff")
    assert json.loads(row["evidence"])[0]["finding"] == "page_differs"
    (change,) = list(db["reanalyses"].rows)
    assert json.loads(change["before"])["verdict"] == "accessible"
    assert json.loads(change["after"])["verdict"] == "blocked"
    # Again: nothing left to change, nothing recorded.
    again = CliRunner().invoke(cli, ["reanalyze", "--db", path])
    assert again.exit_code == 0 and "0 changed" in again.output
    assert db["reanalyses"].count == 1


def test_reanalyze_with_a_new_fingerprint_confirms_the_block_page(tmp_path):
    verdict = analyze(notice_observations())
    assert (verdict.blocking, verdict.confirmed) == ("http-diff", False)
    path, measurement_id = stored_as(tmp_path, verdict)
    fingerprint = tmp_path / "kg.json"
    fingerprint.write_text(
        json.dumps(
            [
                {
                    "id": "lab.kg_notice",
                    "location": "body",
                    "type": "contains",
                    "pattern": "ресурска кирүү чектелген",
                    "scope": "isp",
                }
            ]
        )
    )
    result = CliRunner().invoke(
        cli, ["reanalyze", "--db", path, "--fingerprints", str(fingerprint)]
    )
    assert result.exit_code == 0, result.output
    row = open_db(path)["measurements"].get(measurement_id)
    assert (row["blockpage"], row["confirmed"]) == ("lab.kg_notice", 1)


def test_reanalyze_filters_and_bad_time(tmp_path):
    path, _ = stored_as(tmp_path, Verdict("accessible", None, True))
    later = CliRunner().invoke(cli, ["reanalyze", "--db", path, "--since", "2026-11-21"])
    assert later.exit_code == 0 and "0 measurements re-analysed" in later.output
    bad = CliRunner().invoke(cli, ["reanalyze", "--db", path, "--since", "last tuesday"])
    assert bad.exit_code == 2 and "YYYY-MM-DD" in bad.output
