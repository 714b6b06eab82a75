"""The volunteer's own address on its way to a collector (issue 16, the collector's side of
item 1), on a real PostgreSQL (tests/postgres.py).

* a measurement the probe scrubbed (``[scrubbed]`` in its address fields: the ISP's resolver
  answered with the volunteer's address, a site redirected there) is one our own reader and
  the collector take: scrubbing never makes a measurement unsendable;
* the collector scrubs the addresses its uploader connects from, also behind a TLS proxy
  (``X-Forwarded-For``, ``X-Real-IP``, ``Forwarded``), in every string, inside base64 bodies
  and raw bytes in any spelling, with the body's hash made again over the scrubbed body; as a
  destination too, where it leaves a measurement our reader still reads;
* a hop's URL no URL parser takes is a 400 naming the field, never a dropped connection.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from probe.analysis import analyze
from probe.measure.privacy import SCRUBBED, Scrubber
from probe.model import failures as F
from probe.model.records import HTTPRequest, Observations, TCPConnect
from probe.ooni.export import Provenance, to_ooni
from probe.ooni.importing import from_ooni
from probe.store import Store, open_db
from tests.postgres import Collector
from tests.test_collector import (
    SITE_IP,
    add_volunteer,
    auth,
    count,
    exported,
    observations,
    open_report,
    probe,
    submit,
    volunteer_db,
)

ADDRESS = "192.88.99.2"  # the volunteer's public address (the lab's VANTAGE_IP)


def towards_own_address(domain: str, when: str, address: str) -> Observations:
    """The ISP's resolver answers ``domain`` with the volunteer's own ``address`` too, and
    the site redirects to ``http://ADDRESS/router-admin`` (a NAT's admin page)."""
    obs = observations(domain, when, blocked=False)
    url = f"http://{domain}/"
    obs.input = obs.url = url
    obs.dns[0].addresses = [SITE_IP, address]
    obs.tcp = [TCPConnect(SITE_IP, 80), TCPConnect(address, 80, F.CONNECTION_REFUSED)]
    obs.tls = []
    admin = f"http://{address}/router-admin"
    obs.http = [
        HTTPRequest(url=url, ip=SITE_IP, port=80, status_code=302,
                    headers=[["Location", admin]], location=admin, body=b"", body_length=0),
        HTTPRequest(url=admin, failure=F.CONNECTION_REFUSED, depth=1),
    ]  # fmt: skip
    return obs


def save(path: Path, *measurements: Observations) -> Path:
    store = Store(open_db(path))
    run = store.start_run(inputs=[], settings={}, targets=len(measurements),
                          probe_asn="AS8449", probe_cc="KG")  # fmt: skip
    for position, obs in enumerate(measurements):
        store.save(run, obs, analyze(obs), probe_asn="AS8449", probe_cc="KG", position=position)
    store.finish_run(run, status="complete", counts={}, offline=False)
    return path


PROVENANCE = Provenance(
    measurement_id="5b7cbd0e-8f3c-4a57-9d55-3a4c9b1c2d01",
    run_id="0c1d2e3f-4a5b-4c6d-8e7f-8091a2b3c4d5",
    run_started_at="2026-11-01 10:00:00",
    probe_asn="AS8449",
    probe_cc="KG",
)


def test_a_measurement_scrubbed_by_the_probe_reads_back():
    """The probe puts ``[scrubbed]`` in the address fields (a DNS answer, a connected-to
    address, a hop's endpoint): the OONI export of it reads back, scrubbed as it was."""
    obs = towards_own_address("a.kg", "2026-11-01 10:00:00", ADDRESS)
    Scrubber([ADDRESS], discover=False).observations(obs)
    assert SCRUBBED in obs.dns[0].addresses and obs.tcp[1].ip == SCRUBBED
    document = json.loads(json.dumps(to_ooni(obs, analyze(obs), PROVENANCE)))
    back = from_ooni(document).observations
    assert back.dns[0].addresses == [SITE_IP, SCRUBBED]
    assert [c.ip for c in back.tcp] == [SITE_IP, SCRUBBED]
    assert back.http[1].url == obs.http[1].url and ADDRESS not in back.http[1].url
    # An endpoint whose address was scrubbed inside brackets (an IPv6 one) reads back too.
    document["test_keys"]["tcp_connect"][1]["ip"] = SCRUBBED
    document["test_keys"]["requests"][0]["address"] = f"[{SCRUBBED}]:80"
    assert from_ooni(document).observations.http[0].ip == SCRUBBED


def test_a_measurement_scrubbed_by_the_probe_is_collected(dsn, collector, tmp_path):
    obs = towards_own_address("a.kg", "2026-11-01 10:00:00", ADDRESS)
    Scrubber([ADDRESS], discover=False).observations(obs)
    db = save(tmp_path / "a.db", obs)
    token = add_volunteer(dsn, "alice")
    result = probe("upload", "--db", str(db), "--collector", collector.url, "--token", token)
    assert result.returncode == 0, result.stderr
    assert "1 measurements uploaded; 0 wait for upload" in result.stdout, result.stdout
    with psycopg.connect(dsn) as conn:
        (content,) = conn.execute("select content from measurements").fetchone()
    assert ADDRESS not in content and SCRUBBED in content


@pytest.mark.parametrize(
    "where",
    ["requests.0.request.url", "requests.0.x_location", "x_probe_unconnected_hops.0.url"],
)
@pytest.mark.parametrize("url", ["http://[x]/", "http://[::1", "http://a.kg:99999/"])
def test_a_hop_url_no_parser_takes_is_a_400(dsn, collector, tmp_path, where, url):
    token = add_volunteer(dsn, "alice")
    obs = towards_own_address("a.kg", "2026-11-01 10:00:00", "203.0.113.9")
    (content,) = exported(save(tmp_path / "a.db", obs))
    node: Any = content["test_keys"]
    *path, last = where.split(".")
    for key in path:
        node = node[int(key)] if key.isdigit() else node[key]
    node[last] = url
    client = httpx.Client(base_url=collector.url)
    r = submit(client, token, open_report(client, token), content)
    assert r.status_code == 400, r.text
    assert "URL" in r.json()["error"], r.text
    assert count(dsn) == 0
    assert "Traceback" not in collector.log_path.read_text()


def scrubbed_page(address: str, spelled: str) -> HTTPRequest:
    """A cleartext page that echoes the uploader's address: ``spelled`` (a spelling the
    base64 of the dotted form does not show) in a body holding NUL bytes (so exported as
    base64), the dotted form in the raw bytes (exported as base64 too)."""
    body = b"<html><title>Blocked</title>\x00\x00 seen from " + spelled.encode() + b"</html>"
    return HTTPRequest(
        url="http://a.kg/", ip=SITE_IP, port=80, status_code=200,
        headers=[["Content-Type", "text/html"]], title="Blocked", body=body,
        body_length=len(body), body_sha256=hashlib.sha256(body).hexdigest(),
        raw=b"HTTP/1.1 200 OK\r\nX-Client: " + address.encode() + b"\r\n",
    )  # fmt: skip


def hostile_echoes(path: Path, address: str) -> Path:
    """A probe that did not know its address (an older one, or its lookup failed): a page
    echoing it, and a resolver and a redirect sending the probe there."""
    spelled = "host-" + address.replace(".", "-") + ".dsl.isp.kg"
    echo = observations("a.kg", "2026-11-01 10:00:00", blocked=False)
    echo.input = echo.url = "http://a.kg/"
    echo.tcp, echo.tls = [TCPConnect(SITE_IP, 80)], []
    echo.http = [scrubbed_page(address, spelled)]
    return save(path, echo, towards_own_address("b.kg", "2026-11-01 10:00:00", address))


def stored(dsn: str) -> dict[str, dict[str, Any]]:
    """domain -> the stored content's measurement."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("select domain, content from measurements").fetchall()
    return {domain: json.loads(content)["content"] for domain, content in rows}


def assert_scrubbed(measurements: dict[str, dict[str, Any]], address: str) -> None:
    text = json.dumps(measurements)
    assert address not in text
    (request,) = measurements["a.kg"]["test_keys"]["requests"]
    body = base64.b64decode(request["response"]["body"]["data"])
    assert body.endswith(b" seen from host-[scrubbed].dsl.isp.kg</html>"), body  # dashed too
    assert address.encode() not in base64.b64decode(request["x_raw"])
    # The hash is the scrubbed body's: the original's would give the address away.
    assert request["x_body_sha256"] == hashlib.sha256(body).hexdigest()
    # As a destination: scrubbed, and the measurement still one our reader reads.
    keys = measurements["b.kg"]["test_keys"]
    assert [c["ip"] for c in keys["tcp_connect"]] == [SITE_IP, SCRUBBED]
    assert from_ooni(measurements["b.kg"]).observations.tcp[1].ip == SCRUBBED


def test_a_collector_scrubs_what_its_uploader_connects_from(lab, cluster, tmp_path):
    """The lab's collector sees the vantage connect from its public address."""
    target = cluster.create()
    token = add_volunteer(target, "alice")
    db = hostile_echoes(tmp_path / "a.db", lab.VANTAGE_IP)
    log = tmp_path / "c.log"
    with Collector(target, log, host=lab.HELPER_IP, port=9004, lab=lab) as c:
        argv = [sys.executable, "-m", "probe.cli", "upload", "--db", str(db), "--collector",
                c.url, "--token", token, "--retries", "1"]  # fmt: skip
        result = lab.run(lab.vantage, argv, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "2 measurements uploaded; 0 wait for upload" in result.stdout, result.stdout
    assert_scrubbed(stored(target), lab.VANTAGE_IP)
    assert lab.VANTAGE_IP not in log.read_text()


def test_behind_a_proxy_the_forwarded_addresses_are_scrubbed(dsn, collector, tmp_path):
    """Behind a TLS proxy the collector is connected from 127.0.0.1: the uploader's address
    is in the proxy's X-Forwarded-For (Caddy's, nginx's), X-Real-IP or Forwarded header."""
    token = add_volunteer(dsn, "alice")
    client = httpx.Client(base_url=collector.url)
    headers = (
        {"X-Forwarded-For": f"{ADDRESS}, 10.1.2.3"},
        {"X-Real-IP": ADDRESS},
        {"Forwarded": f'for="[2001:db8::7]:4711";proto=https, for={ADDRESS}'},
    )
    for i, forwarded in enumerate(headers):
        db = hostile_echoes(tmp_path / f"{i}.db", ADDRESS)
        report = open_report(client, token)
        for content in exported(db):
            content = dict(content, report_id=report)
            r = client.post(f"/report/{report}", json={"format": "json", "content": content},
                            headers=auth(token) | forwarded)  # fmt: skip
            assert r.status_code == 200, (forwarded, r.text)
        assert_scrubbed(stored(dsn), ADDRESS)
        with psycopg.connect(dsn) as conn:
            conn.execute("delete from measurement_ids")
            conn.execute("delete from measurements")
    assert ADDRESS not in collector.log_path.read_text()
    assert "2001:db8::7" not in collector.log_path.read_text()


def test_an_honest_measurement_is_stored_as_sent(dsn, collector, tmp_path):
    """Nothing to scrub (the uploader's address is nowhere in it): the JSON is kept as it
    was sent, byte for byte."""
    token = add_volunteer(dsn, "alice")
    db = volunteer_db(tmp_path / "a.db", "AS8449", [("2026-11-01 10:00:00", {"a.kg": True})])
    (content,) = exported(db)
    client = httpx.Client(base_url=collector.url)
    report = open_report(client, token)
    body = json.dumps({"format": "json", "content": dict(content, report_id=report)}, indent=1)
    r = client.post(f"/report/{report}", content=body.encode(),
                    headers=auth(token) | {"X-Forwarded-For": ADDRESS})  # fmt: skip
    assert r.status_code == 200, r.text
    with psycopg.connect(dsn) as conn:
        assert conn.execute("select content from measurements").fetchone()[0] == body


def test_a_refusal_never_quotes_the_uploaders_address(dsn, collector, tmp_path):
    """A reason names the field: one the sender named after its own address (refused before
    the scrubbing, a lone surrogate in it) is said, and logged, scrubbed."""
    token = add_volunteer(dsn, "alice")
    db = volunteer_db(tmp_path / "a.db", "AS8449", [("2026-11-01 10:00:00", {"a.kg": True})])
    (content,) = exported(db)
    client = httpx.Client(base_url=collector.url)
    report = open_report(client, token)
    content = dict(content, report_id=report)
    text = json.dumps({"format": "json", "content": content | {f"x_{ADDRESS}": "SURROGATE"}})
    r = client.post(f"/report/{report}", content=text.replace("SURROGATE", "\\ud800").encode(),
                    headers=auth(token) | {"X-Forwarded-For": ADDRESS})  # fmt: skip
    assert r.status_code == 400, r.text
    assert "surrogate" in r.json()["error"] and "x_[scrubbed]" in r.json()["error"], r.text
    assert ADDRESS not in r.text
    assert ADDRESS not in collector.log_path.read_text()
