"""`probe check` end to end in the censorship lab: one scenario, one expected verdict.

All the scenarios that can share a network are measured in ONE run of the real command
(they differ by site, address or name, so each censorship touches only its own target);
that is also how volunteers run it: many targets at once. The helper-unreachable and offline
scenarios change the whole network, so they get runs of their own.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from probe.app import targets

KG_LIST = Path(__file__).resolve().parents[1] / "targets" / "kg.txt"

# Short timeouts keep the blackhole scenarios quick; verdicts don't depend on them.
TIMEOUTS = [
    "--dns-timeout", "2", "--tcp-timeout", "2", "--tls-timeout", "2",
    "--http-timeout", "4", "--control-timeout", "20",
]  # fmt: skip


@dataclass
class Scenario:
    name: str
    url: str
    verdict: str
    blocking: str | None
    failure: str | None = None
    confirmed: bool = False
    dns_consistency: str | None = None  # checked when set


SCENARIOS = [
    Scenario("https success", "https://www.azattyk.org/", "accessible", None),
    Scenario("http success", "http://kaktus.media/", "accessible", None),
    Scenario("http to https redirect", "http://to-https.kg/", "accessible", None),
    Scenario("DNS lie to the block-page address", "http://24.kg/", "blocked", "dns",
             confirmed=True),
    Scenario("NXDOMAIN at the ISP resolver", "https://respublica.kg/", "blocked", "dns",
             "dns_nxdomain_error"),
    Scenario("bogon answer", "https://kloop.kg/", "blocked", "dns"),
    Scenario("loopback answer", "https://vesti.kg/", "blocked", "dns"),
    Scenario("on-path DNS injection, plain-DNS control forged too", "https://akipress.org/",
             "blocked", "dns"),
    Scenario("TCP blackhole", "https://factcheck.kg/", "blocked", "tcp_ip",
             "generic_timeout_error"),
    Scenario("RST to SYN", "https://currenttime.tv/", "blocked", "tcp_ip", "connection_refused"),
    Scenario("RST after the SNI", "https://sni-reset.kg/", "blocked", "tls", "connection_reset"),
    Scenario("FIN after the SNI", "https://sni-fin.kg/", "blocked", "tls", "eof_error"),
    Scenario("blackhole after the SNI", "https://sni-drop.kg/", "blocked", "tls",
             "generic_timeout_error"),
    Scenario("RST after the Host header", "http://host-reset.kg/", "blocked", "http-failure",
             "connection_reset"),
    Scenario("injected block page", "http://blockpage.kg/", "blocked", "http-diff",
             confirmed=True),
    Scenario("site down everywhere", "https://down.kg/", "down", None, "connection_refused"),
    Scenario("bad certificate at the site itself", "https://badcert.kg/", "down", None,
             "ssl_invalid_hostname"),
    Scenario("more than 10 redirects", "https://example.org/redirect/12", "down", None),
    Scenario("page larger than the cap", "https://www.wikipedia.org/large", "accessible", None),
    Scenario("IDN domain", "http://яндекс.рф/", "accessible", None),
    Scenario("ISP resolver silent for the name", "https://silent.kg/", "blocked", "dns",
             "generic_timeout_error"),
    Scenario("slow but working (300 ms RTT)", "https://slow.kg/", "accessible", None),
    Scenario("SERVFAIL at the ISP resolver", "https://servfail.kg/", "blocked", "dns",
             "dns_servfail_error"),
    Scenario("CDN edge unknown to the control, in another AS, valid certificate",
             "http://cdn.kg/", "accessible", None, dns_consistency="consistent"),
    Scenario("blackhole after the Host header", "http://host-drop.kg/", "blocked",
             "http-failure", "generic_timeout_error"),
    Scenario("redirect to https, then RST after the SNI", "http://sni-redirect.kg/", "blocked",
             "tls", "connection_reset"),
]  # fmt: skip


def censor(lab: Any) -> None:
    """Set up the sites and the censorship every scenario in SCENARIOS needs."""
    for name in ("sni-reset.kg", "sni-fin.kg", "sni-drop.kg", "host-reset.kg", "blockpage.kg",
                 "down.kg", "silent.kg", "slow.kg", "servfail.kg", "host-drop.kg"):  # fmt: skip
        lab.add_site(name)
    lab.add_site("to-https.kg", https_only_redirect=True)
    lab.add_site("badcert.kg", cert="wrong-name")
    lab.dns_lie("24.kg", lab.BLOCKPAGE_IP)
    lab.dns_nxdomain("respublica.kg")
    lab.dns_lie("kloop.kg", "172.16.20.1")
    lab.dns_lie("vesti.kg", "127.0.0.1")
    lab.dns_inject("akipress.org", lab.BLOCKPAGE_IP)
    lab.tcp_blackhole(lab.site("factcheck.kg").ip)
    lab.tcp_refuse(lab.site("currenttime.tv").ip)
    lab.dpi_reset("sni-reset.kg", port=443)
    lab.dpi_close("sni-fin.kg", port=443)
    lab.dpi_drop("sni-drop.kg", port=443)
    lab.dpi_reset("Host: host-reset.kg", port=80)
    lab.inject_blockpage(lab.site("blockpage.kg").ip)
    lab.site_down(lab.site("down.kg").ip)
    lab.dns_drop("silent.kg")
    lab.throttle(lab.site("slow.kg").ip, delay_ms=300)
    lab.dns_servfail("servfail.kg")
    # A CDN edge the control never sees: another address, in another AS, that serves cdn.kg
    # with a valid certificate (the lab's servers answer every name on every address). Only
    # the TLS validation of the ISP's answer can show it is consistent.
    lab.add_site("cdn.kg")
    lab.dns_lie("cdn.kg", lab.add_site("cdn-edge.kg").ip)
    lab.dpi_drop("Host: host-drop.kg", port=80)
    lab.add_site("sni-redirect.kg", https_only_redirect=True)
    lab.dpi_reset("sni-redirect.kg", port=443)


def probe_check(
    lab: Any, db: Any, urls: list[str], *extra: str, helper: str | None = None
) -> list[dict[str, Any]]:
    """Run `probe check --json` in the vantage against the lab's control; the JSON lines."""
    argv = [sys.executable, "-m", "probe.cli", "check", "--json", "--db", str(db)]
    for url in urls:
        argv += ["--input", url]
    argv += [
        "--control-resolver", lab.DOH_URL,
        "--control-resolver", f"udp://{lab.CONTROL_RESOLVER}:53",
        "--helper", helper or lab.helper_url,
        "--ca-file", lab.ca_file,
        *TIMEOUTS,
        *extra,
    ]  # fmt: skip
    result = lab.run(lab.vantage, argv, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == len(urls), result.stdout + result.stderr
    return lines


@pytest.fixture(scope="module")
def scenario_run(lab, helper, tmp_path_factory):
    db = tmp_path_factory.mktemp("check") / "probe.db"
    lab.reset()
    censor(lab)
    try:
        lines = probe_check(lab, db, [s.url for s in SCENARIOS])
    finally:
        lab.reset()
    return {line["input"]: line for line in lines}, db


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario(scenario_run, scenario):
    results, _ = scenario_run
    assert_verdict(results[scenario.url], scenario)


def assert_verdict(got: dict[str, Any], scenario: Scenario) -> None:
    """The JSON line of a `probe check` run says what the scenario expects."""
    assert (got["verdict"], got["blocking"]) == (scenario.verdict, scenario.blocking), got
    if scenario.failure:
        assert got["failure"] == scenario.failure, got
    if scenario.dns_consistency:
        assert got["dns_consistency"] == scenario.dns_consistency, got
    assert got["confirmed"] is scenario.confirmed, got
    assert got["accessible"] is {"accessible": True, "inconclusive": None}.get(
        scenario.verdict, False
    )
    assert got["reason"]


def rows(db: Any, sql: str, *args: Any) -> list[tuple]:
    """Read the probe's database (read-only: never create it)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute(sql, args).fetchall()


def test_evidence_is_stored(scenario_run, lab):
    results, db = scenario_run
    # The SNI reset is in the TLS handshakes, with the real SNI and the site's address.
    mid = results["https://sni-reset.kg/"]["measurement_id"]
    assert rows(db, "select server_name, ip, failure from tls_handshakes where "
                "measurement_id = ? and purpose = 'fetch'", mid) == [
        ("sni-reset.kg", lab.site("sni-reset.kg").ip, "connection_reset")
    ]  # fmt: skip
    # The injected answer shows up at the plain-DNS control too, but not over DoH.
    mid = results["https://akipress.org/"]["measurement_id"]
    answers = dict(rows(db, "select engine, addresses from dns_queries where measurement_id = ? "
                        "and query_type = 'A'", mid))  # fmt: skip
    assert json.loads(answers["system"]) == [lab.BLOCKPAGE_IP]
    assert json.loads(answers["udp"]) == [lab.BLOCKPAGE_IP]
    assert json.loads(answers["https"]) == [lab.site("akipress.org").ip]
    assert "inject" in results["https://akipress.org/"]["reason"].lower()
    # The block page's body is kept as evidence; the truncated large page is recorded as such.
    mid = results["http://blockpage.kg/"]["measurement_id"]
    ((body, encoding),) = rows(
        db, "select body, body_encoding from http_requests where measurement_id = ?", mid
    )
    assert encoding == "zlib" and lab.BLOCKPAGE_SENTENCE.encode() in zlib.decompress(body)
    mid = results["https://www.wikipedia.org/large"]["measurement_id"]
    assert rows(db, "select body_length, body_truncated from http_requests where "
                "measurement_id = ?", mid) == [(512 * 1024, 1)]  # fmt: skip
    # A certificate failure records which certificate was presented.
    mid = results["https://badcert.kg/"]["measurement_id"]
    assert rows(db, "select failure, cert_sha256 from tls_handshakes where measurement_id = ? "
                "and purpose = 'fetch'", mid) == [
        ("ssl_invalid_hostname", lab.certificate_sha256("badcert.kg"))
    ]  # fmt: skip
    # The input is kept exactly as written, IDN included.
    assert results["http://яндекс.рф/"]["domain"] == "xn--d1acpjx3f.xn--p1ai"
    # One run, every measurement in it, none with the volunteer's address.
    (run_count,) = rows(db, "select count(*) from runs")[0]
    assert run_count == 1
    with open(db, "rb") as f:
        assert lab.VANTAGE_IP.encode() not in f.read()


def test_helper_unreachable_is_inconclusive_never_blocked(clean_lab, helper, tmp_path):
    lab = clean_lab
    lab.tcp_refuse(lab.HELPER_IP)
    lab.tcp_refuse(lab.site("currenttime.tv").ip)
    lines = probe_check(lab, tmp_path / "p.db", ["http://kaktus.media/", "https://currenttime.tv/"])
    for line in lines:
        assert line["verdict"] == "inconclusive", line
        assert line["blocking"] is None
        assert line["offline"] is False


def test_busy_helper_is_asked_again(clean_lab, tmp_path):
    """A helper shedding load (503) is asked again after a pause, so no control is lost."""
    lab = clean_lab
    log = tmp_path / "helper.log"
    with open(log, "w") as out:
        busy = lab.start_probe_helper(
            port=8081, args=("--max-in-flight", "1"), stdout=out, stderr=subprocess.STDOUT
        )
    try:
        names = ("kaktus.media", "example.org", "vesti.kg", "akipress.org", "factcheck.kg", "24.kg")
        # Each page takes 300 ms, so the helper's one slot is surely taken when others ask.
        urls = [f"http://{name}/delay/300" for name in names]
        lines = probe_check(
            lab, tmp_path / "p.db", urls, "--helper-concurrency", "6",
            helper=f"http://{lab.HELPER_IP}:8081/",
        )  # fmt: skip
    finally:
        busy.terminate()
        busy.wait(10)
    assert " 503 " in log.read_text()  # the helper did shed load
    assert {line["verdict"] for line in lines} == {"accessible"}


def test_uplink_cut_is_offline_and_inconclusive(clean_lab, helper, tmp_path):
    lab = clean_lab
    lab.offline()
    urls = ["https://www.azattyk.org/", "http://24.kg/", "https://example.org/"]
    lines = probe_check(lab, tmp_path / "p.db", urls)
    assert {line["verdict"] for line in lines} == {"inconclusive"}
    assert all(line["offline"] for line in lines)
    assert rows(tmp_path / "p.db", "select offline, status from runs") == [(1, "offline")]


def test_no_network_at_all_ends_quickly_offline(tmp_path):
    """The kg list in an empty network namespace (no interface up): offline, exit 0."""
    db = tmp_path / "p.db"
    result = subprocess.run(
        [
            "unshare", "-n", sys.executable, "-m", "probe.cli", "check", str(KG_LIST),
            "--db", str(db),
            # Lab addresses, never public defaults; in an empty namespace none is reachable.
            "--resolver", "udp://192.88.99.10",
            "--control-resolver", "https://192.88.99.54/dns-query",
            "--control-resolver", "udp://192.88.99.53",
            "--helper", "http://192.88.99.80/",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "OFFLINE" in result.stdout
    assert "Traceback" not in result.stderr
    verdicts = rows(db, "select verdict, count(*) from measurements group by verdict")
    assert verdicts == [("inconclusive", len(targets.load([KG_LIST])))]
    assert rows(db, "select offline, status from runs") == [(1, "offline")]


def test_a_killed_run_keeps_what_it_measured(clean_lab, helper, tmp_path):
    """Each measurement is committed as its target finishes: SIGKILL loses only those in flight."""
    lab = clean_lab
    db = tmp_path / "p.db"
    fast = ["https://www.azattyk.org/", "http://kaktus.media/", "https://24.kg/"]
    slow = ["https://example.org/delay/20000"]
    argv = [sys.executable, "-m", "probe.cli", "check", "--db", str(db),
            "--control-resolver", lab.DOH_URL, "--helper", lab.helper_url,
            "--ca-file", lab.ca_file, "--http-timeout", "30"]  # fmt: skip
    for url in fast + slow:
        argv += ["--input", url]
    run = lab.spawn(lab.vantage, argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if len(rows(db, "select id from measurements")) == len(fast):
                    break
            except sqlite3.OperationalError:  # not created yet, or no tables yet
                pass
            time.sleep(0.1)
        run.kill()  # SIGKILL: no cleanup, no finally
        run.wait(10)
    finally:
        if run.poll() is None:
            run.kill()
    stored = rows(db, "select input, verdict from measurements order by input")
    assert stored == sorted((url, "accessible") for url in fast)
    assert rows(db, "select status from runs") == [("running",)]  # it never finished
