"""The collector on a real PostgreSQL (a throwaway cluster: tests/postgres.py).

Measurements here are made without a network (the analysis' input, built by hand, stored by
the real store and sent by the real uploader); tests/test_upload.py does it from the lab.
What is checked: the protocol's answers, tokens (none, unknown, revoked), idempotence,
every refusal a public server owes (400/401/404/409/413/415, 503 + Retry-After, 408 for
slow clients), the schema (created, migrated once, monthly partitions), and that the
collector's timeline and report are `probe timeline`'s and `probe report`'s.
"""

from __future__ import annotations

import datetime
import gzip
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

from probe.analysis import analyze
from probe.model import failures as F
from probe.model.records import (
    Control,
    DNSQuery,
    HTTPRequest,
    Observations,
    TCPConnect,
    TLSHandshake,
)
from probe.store import Store, open_db
from tests.postgres import Collector

SITE_IP = "93.184.216.34"
NETWORK_NAMES = {"AS8449": "ElCat", "AS12345": "Megaline <b>&"}
BODY = b"<html><head><title>News front page</title></head><body>" + b"x" * 3000


def observations(domain: str, when: str, *, blocked: bool) -> Observations:
    """A measurement of https://DOMAIN/: fine, or the ISP's resolver says NXDOMAIN."""
    url = f"https://{domain}/"
    doh = DNSQuery(domain, "A", "https", "https://dns.example/dns-query", None, "NOERROR",
                   [SITE_IP])  # fmt: skip
    control = Control(
        "https://th.example.org/",
        None,
        {
            "tcp_connect": {f"{SITE_IP}:443": {"status": True, "failure": None}},
            "tls_handshake": {
                f"{SITE_IP}:443": {"server_name": domain, "status": True, "failure": None}
            },
            "quic_handshake": {},
            "http_request": {
                "body_length": len(BODY),
                "failure": None,
                "title": "News front page",
                "headers": {},
                "status_code": 200,
            },
            "http3_request": None,
            "dns": {"failure": None, "addrs": [SITE_IP]},
            "ip_info": {SITE_IP: {"asn": 15133, "flags": 10}},
        },  # fmt: skip
    )
    if blocked:
        system = DNSQuery(domain, "A", "system", "udp://192.0.2.53:53", F.DNS_NXDOMAIN,
                          "NXDOMAIN")  # fmt: skip
        return Observations(
            input=url, url=url, domain=domain, start_time=when, dns=[system, doh],
            http=[HTTPRequest(url=url, failure=F.DNS_NXDOMAIN)], control=control,
        )  # fmt: skip
    system = DNSQuery(domain, "A", "system", "udp://192.0.2.53:53", None, "NOERROR", [SITE_IP])
    page = HTTPRequest(url=url, ip=SITE_IP, port=443, status_code=200,
                       headers=[["Content-Type", "text/html"]], title="News front page",
                       body=BODY, body_length=len(BODY))  # fmt: skip
    return Observations(
        input=url, url=url, domain=domain, start_time=when, dns=[system, doh],
        tcp=[TCPConnect(SITE_IP, 443)], tls=[TLSHandshake(SITE_IP, 443, domain)],
        http=[page], control=control,
    )  # fmt: skip


def volunteer_db(
    path: Path, asn: str, runs: list[tuple[str, dict[str, bool]]], cc: str = "KG"
) -> Path:
    """A volunteer's database with ``runs``: (start time, {domain: blocked}) each."""
    store = Store(open_db(path))
    for when, targets in runs:
        run = store.start_run(inputs=[], settings={}, targets=len(targets), probe_asn=asn,
                              probe_cc=cc)  # fmt: skip
        name = NETWORK_NAMES.get(asn)  # as the network identity step records it (m010)
        store.db.execute("update runs set started_at = ?, probe_network_name = ? where id = ?",
                         [when, name, run])  # fmt: skip
        for position, (domain, blocked) in enumerate(targets.items()):
            obs = observations(domain, when, blocked=blocked)
            store.save(run, obs, analyze(obs), probe_asn=asn, probe_cc=cc, position=position)
        store.finish_run(run, status="complete", counts={}, offline=False)
    return path


def probe(*args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = None
    if config is not None:
        import os

        env = dict(os.environ, PROBE_CONFIG=str(config))
    return subprocess.run([sys.executable, "-m", "probe.cli", *args], capture_output=True,
                          text=True, timeout=300, env=env)  # fmt: skip


def add_volunteer(dsn: str, name: str) -> str:
    result = probe("collector", "add-volunteer", name, "--database", dsn)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert token.startswith("pvt_")
    return token


def count(dsn: str, sql: str = "select count(*) from measurements", *args: Any) -> int:
    with psycopg.connect(dsn) as conn:
        return int(conn.execute(sql, args).fetchone()[0])


TEMPLATE = {
    "data_format_version": "0.2.0", "format": "json", "probe_asn": "AS8449", "probe_cc": "KG",
    "software_name": "probe", "software_version": "0.1.0", "test_name": "web_connectivity",
    "test_start_time": "2026-11-01 10:00:00", "test_version": "0.5.28",
}  # fmt: skip


def exported(db: Path) -> list[dict[str, Any]]:
    """The database's measurements as `probe export` writes them."""
    result = probe("export", "--db", str(db))
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def open_report(client: httpx.Client, token: str, **template: Any) -> str:
    r = client.post("/report", json=TEMPLATE | template, headers=auth(token))
    assert r.status_code == 200, r.text
    assert r.json()["supported_formats"] == ["json"]
    return str(r.json()["report_id"])


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def submit(
    client: httpx.Client, token: str, report: str, content: dict[str, Any]
) -> httpx.Response:
    content = dict(content, report_id=report)
    return client.post(f"/report/{report}", json={"format": "json", "content": content},
                       headers=auth(token))  # fmt: skip


# ------------------------------------------------------------------ schema


def test_schema_is_created_once_and_partitioned_by_month(dsn, collector, tmp_path):
    again = probe("collector", "migrate", "--database", dsn)
    assert again.returncode == 0 and "up to date" in again.stdout, again.stdout + again.stderr
    db = volunteer_db(tmp_path / "a.db", "AS8449", [
        ("2026-10-30 10:00:00", {"a.kg": False}), ("2026-11-02 10:00:00", {"a.kg": True}),
    ])  # fmt: skip
    token = add_volunteer(dsn, "alice")
    result = probe("upload", "--db", str(db), "--collector", collector.url, "--token", token)
    assert result.returncode == 0, result.stderr
    with psycopg.connect(dsn) as conn:
        partitions = conn.execute(
            "select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid "
            "where i.inhparent = 'measurements'::regclass order by 1"
        ).fetchall()
        assert partitions == [("measurements_2026_10",), ("measurements_2026_11",)]
        rows = conn.execute(
            "select tableoid::regclass::text, verdict from measurements order by start_time"
        ).fetchall()
    assert rows == [("measurements_2026_10", "accessible"), ("measurements_2026_11", "blocked")]


# ------------------------------------------------------------------ tokens


def test_tokens_refused_unknown_and_revoked(dsn, collector, tmp_path):
    token = add_volunteer(dsn, "alice")
    other = add_volunteer(dsn, "bob")
    content = exported(
        volunteer_db(
            tmp_path / "a.db", "AS8449", [("2026-11-01 10:00:00", {"a.kg": True, "b.kg": False})]
        )
    )
    client = httpx.Client(base_url=collector.url)
    for headers in ({}, auth("pvt_" + "A" * 43), auth("not a token"), {"Authorization": token}):
        r = client.post("/report", json=TEMPLATE, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer")
    report = open_report(client, token)
    # Another volunteer cannot write into alice's report, nor anyone without a token.
    assert submit(client, other, report, content[0]).status_code == 401
    assert client.post(f"/report/{report}", json={"format": "json", "content": content[0]}
                       ).status_code == 401  # fmt: skip
    assert count(dsn) == 0
    assert submit(client, token, report, content[0]).status_code == 200
    revoked = probe("collector", "revoke", "alice", "--database", dsn)
    assert revoked.returncode == 0, revoked.stderr
    # At once: in the report already open, and for new reports.
    r = submit(client, token, report, content[1])
    assert r.status_code == 401 and "revoked" in r.json()["error"]
    assert client.post("/report", json=TEMPLATE, headers=auth(token)).status_code == 401
    assert count(dsn) == 1
    # bob is unaffected; the list says who is what.
    assert open_report(client, other)
    listed = probe("collector", "volunteers", "--database", dsn).stdout
    assert "alice" in listed and "revoked" in listed and "bob" in listed
    assert probe("collector", "revoke", "alice", "--database", dsn).returncode == 2


# ------------------------------------------------------------------ idempotence


def test_a_resubmission_adds_nothing(dsn, collector, tmp_path):
    token = add_volunteer(dsn, "alice")
    db = volunteer_db(
        tmp_path / "a.db",
        "AS8449",
        [("2026-11-01 10:00:00", {"a.kg": True, "b.kg": False, "c.kg": False})],
    )
    content = exported(db)
    client = httpx.Client(base_url=collector.url)
    report = open_report(client, token)
    first = submit(client, token, report, content[0])
    assert first.status_code == 200 and first.json()["x_status"] == "added"
    # The same measurement again, in the same report and in another one: the first uid.
    again = submit(client, token, report, content[0])
    elsewhere = submit(client, token, open_report(client, token), content[0])
    for r in (again, elsewhere):
        assert r.status_code == 200, r.text
        assert r.json() == {"measurement_uid": first.json()["measurement_uid"],
                            "x_status": "present"}  # fmt: skip
    assert count(dsn) == 1
    # Uploading the whole database sends the other two; a second upload sends nothing.
    result = probe("upload", "--db", str(db), "--collector", collector.url, "--token", token)
    assert result.returncode == 0, result.stderr
    assert "2 measurements uploaded, 1 already there" in result.stdout
    result = probe("upload", "--db", str(db), "--collector", collector.url + "/", "--token", token)
    assert "0 measurements uploaded; 0 wait for upload" in result.stdout, result.stdout
    assert count(dsn) == 3
    assert count(dsn, "select count(distinct id) from measurements") == 3
    # Another volunteer claiming alice's measurement id is refused, not merged.
    other = add_volunteer(dsn, "mallory")
    r = submit(client, other, open_report(client, other), content[1])
    assert r.status_code == 409
    assert count(dsn, "select count(*) from measurements where volunteer_id = "
                 "(select id from volunteers where name = 'mallory')") == 0  # fmt: skip


def test_concurrent_copies_of_one_measurement_are_stored_once(dsn, collector, tmp_path):
    """Twenty connections send the same measurement at once (one group commit may hold
    several copies): one row, one uid for all."""
    import concurrent.futures

    token = add_volunteer(dsn, "alice")
    content = exported(
        volunteer_db(tmp_path / "a.db", "AS8449", [("2026-11-01 10:00:00", {"a.kg": True})])
    )[0]
    report = open_report(httpx.Client(base_url=collector.url), token)

    def send(_: int) -> httpx.Response:
        with httpx.Client(base_url=collector.url) as client:
            return submit(client, token, report, content)

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(send, range(20)))
    assert {r.status_code for r in answers} == {200}
    assert len({r.json()["measurement_uid"] for r in answers}) == 1
    assert sorted(r.json()["x_status"] for r in answers) == ["added"] + ["present"] * 19
    assert count(dsn) == 1


# ------------------------------------------------------------------ refusals


def test_bad_bodies_are_refused_with_a_reason(dsn, tmp_path):
    token = add_volunteer(dsn, "alice")
    content = exported(
        volunteer_db(tmp_path / "a.db", "AS8449", [("2026-11-01 10:00:00", {"a.kg": True})])
    )[0]
    with Collector(dsn, tmp_path / "c.log", args=("--max-body", "65536")) as running:
        client = httpx.Client(base_url=running.url, headers=auth(token))
        report = open_report(client, token)
        path = f"/report/{report}"

        def post(body: bytes, **headers: str) -> httpx.Response:
            return client.post(path, content=body, headers=headers)

        def content_with(**changes: Any) -> bytes:
            return json.dumps(
                {"format": "json", "content": content | {"report_id": report} | changes}
            ).encode()

        broken_keys = json.loads(json.dumps(content))
        broken_keys["test_keys"]["queries"] = "not a list"
        cases = [
            (post(b"{not json"), 400, "not JSON"),
            (post(b"\xff\xfe{}"), 400, "UTF-8"),
            (post(b"[]"), 400, "JSON object"),
            (post(b'{"format": "json"}'), 400, "content"),
            (post(b'{"format": "yaml", "content": {}}'), 400, "format"),
            (post(content_with(probe_asn="AS1")), 400, "Inconsistent"),
            (post(content_with(probe_cc="RU")), 400, "Inconsistent"),
            (post(content_with(report_id="x")), 400, "Inconsistent"),
            (post(content_with(probe_ip="192.0.2.7")), 400, "probe_ip"),
            (post(content_with(measurement_start_time="2099-01-01 00:00:00")), 400, "future"),
            (post(content_with(measurement_start_time="yesterday")), 400, "measurement_start"),
            (post(content_with(test_keys=broken_keys["test_keys"])), 400, "queries"),
            (post(b"x" * 70_000), 413, "larger than 65536"),
            (post(gzip.compress(b" " * 10_000_000), **{"Content-Encoding": "gzip"}), 413,
             "decoded body larger"),
            (post(b"not gzip", **{"Content-Encoding": "gzip"}), 400, "gzip"),
            (post(b"{}", **{"Content-Encoding": "br"}), 415, "Content-Encoding"),
            (client.post("/report/nonsense", json={}), 400, "Incorrect format"),
            (client.post(f"/report/{report[:-1]}0" if report[-1] != "0" else
                         f"/report/{report[:-1]}1", json={}), 404, "no such report"),
            (client.post("/report", json=TEMPLATE | {"test_name": "ndt"}), 400, "test_name"),
            (client.post("/report", json=TEMPLATE | {"probe_asn": "8449"}), 400, "probe_asn"),
            (client.post("/report", json=TEMPLATE | {"data_format_version": "0.3"}), 400,
             "data_format_version"),
            (client.get(path), 405, "POST"),
            (client.get("/nothing"), 404, "not found"),
        ]  # fmt: skip
        for response, status, reason in cases:
            assert response.status_code == status, (reason, response.text)
            assert reason in response.json()["error"], (reason, response.text)
        # The server is still fine, and stored nothing but what was right.
        assert post(content_with()).status_code == 200
        assert count(dsn) == 1
        log = running.log_path.read_text()
    assert "Traceback" not in log


def raw(port: int, data: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(data)
    return sock


def answer(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_too_many_in_flight_is_503_with_retry_after(dsn, tmp_path):
    add_volunteer(dsn, "alice")
    with Collector(dsn, tmp_path / "c.log", args=("--max-in-flight", "2")) as running:
        # Two clients send half a body: both requests are in flight until they finish.
        slow = [raw(running.port, b"POST /report HTTP/1.1\r\nHost: c\r\nContent-Length: 100"
                    b"\r\n\r\n{") for _ in range(2)]  # fmt: skip
        # Until the server has read both heads: before, it answers (401: no token).
        deadline = time.monotonic() + 30  # only against a hang
        while (r := httpx.post(running.url + "/report", json=TEMPLATE)).status_code == 401:
            assert time.monotonic() < deadline, "the two slow requests were never in flight"
            time.sleep(0.02)
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"].isdigit()
        assert "in flight" in r.json()["error"]
        for sock in slow:
            sock.close()
        # Once they are gone, the server answers again (the token's 401: it is not busy).
        deadline = time.monotonic() + 30
        while (r := httpx.post(running.url + "/report", json=TEMPLATE)).status_code == 503:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert r.status_code == 401


def test_slow_clients_are_cut_off(dsn, tmp_path):
    args = ("--client-timeout", "1")
    with Collector(dsn, tmp_path / "c.log", args=args) as running:
        half_head = raw(running.port, b"POST /report HTTP/1.1\r\nHost: c\r\n")
        half_body = raw(running.port, b"POST /report HTTP/1.1\r\nHost: c\r\n"
                        b"Content-Length: 10\r\n\r\n{")  # fmt: skip
        assert answer(half_head).startswith(b"HTTP/1.1 408 ")
        assert answer(half_body).startswith(b"HTTP/1.1 408 ")
        idle = raw(running.port, b"")
        assert answer(idle) == b""  # an idle connection is closed, quietly
        assert httpx.get(running.url + "/health").status_code == 200


# ------------------------------------------------------------------ timelines and reports


def test_timeline_and_report_are_probes_own(dsn, collector, tmp_path):
    """Two volunteers on two networks upload; the collector's timeline and reports are what
    `probe timeline --json` and `probe report` give over their databases merged."""
    day = datetime.datetime(2026, 11, 1, 6, tzinfo=datetime.UTC)

    def runs(pattern: list[bool], offset: int) -> list[tuple[str, dict[str, bool]]]:
        out = []
        for i, blocked in enumerate(pattern):
            when = (day + datetime.timedelta(hours=6 * i, minutes=offset)).strftime(
                "%Y-%m-%d %H:%M:%S"
            )
            out.append((when, {"a.kg": blocked, "b.kg": False, "c.kg": i == 3}))
        return out

    a = volunteer_db(tmp_path / "a.db", "AS8449", runs([False, True, True, True, False], 0))
    b = volunteer_db(tmp_path / "b.db", "AS12345", runs([True, True, False, False, True], 1))
    c = volunteer_db(tmp_path / "c.db", "AS8449", runs([True, True, True, False, False], 2))
    for db, name in ((a, "alice"), (b, "bob"), (c, "carol")):
        token = add_volunteer(dsn, name)
        result = probe("upload", "--db", str(db), "--collector", collector.url, "--token", token)
        assert result.returncode == 0, result.stderr
    merged = tmp_path / "merged.db"
    result = probe("merge", "--db", str(merged), str(a), str(b), str(c))
    assert result.returncode == 0, result.stderr
    token = add_volunteer(dsn, "reader")
    client = httpx.Client(base_url=collector.url, headers=auth(token))
    assert httpx.get(collector.url + "/timeline").status_code == 401  # reads need a token
    for query, args in (
        ("", []),
        ("?anomalies=1", ["--anomalies"]),
        ("?asn=AS8449&anomalies=true", ["--asn", "AS8449", "--anomalies"]),
        ("?domain=a.kg&since=2026-11-01+12:00&min_vantages=1",
         ["--domain", "a.kg", "--since", "2026-11-01 12:00", "--min-vantages", "1"]),
    ):  # fmt: skip
        local = probe("timeline", "--json", "--db", str(merged), *args)
        assert local.returncode == 0, local.stderr
        remote = client.get("/timeline" + query)
        assert remote.status_code == 200, remote.text
        assert remote.headers["content-type"].startswith("application/x-ndjson")
        assert remote.text == local.stdout, query
        assert remote.text.count("\n") >= 1
    for fmt in ("json", "md", "csv", "html"):
        out = tmp_path / f"report.{fmt}"
        local = probe("report", "--format", fmt, "--db", str(merged), "--asn", "AS8449",
                      "-o", str(out))  # fmt: skip
        assert local.returncode == 0, local.stderr
        remote = client.get(f"/report?format={fmt}&asn=AS8449")
        assert remote.status_code == 200, remote.text
        written = out.read_bytes().decode()
        # The same timeline, summaries and verdicts; the volunteer's database adds the
        # observed evidence (pages, answers) and its runs' provenance, which no collector keeps.
        assert _shared(remote.text, fmt) == _shared(written, fmt), fmt
        assert _shared(written, fmt)
        if fmt == "md":
            assert "AS8449 (ElCat)" in remote.text  # the network's name came along
    assert client.get("/report?format=pdf").status_code == 400
    assert client.get("/timeline?since=last+week").status_code == 400
    assert client.get("/timeline?color=red").status_code == 400


def _shared(text: str, fmt: str) -> Any:
    """What a collector's report and a volunteer's have in common: the timeline's events,
    summaries and stored verdicts (not the observations nor the runs' provenance)."""
    import csv
    import io
    import re

    if fmt == "json":
        data = json.loads(text)
        del data["provenance"], data["generated_at"]
        for event in data["events"] + data["anomalies"]:
            if event["detail"]:
                del event["detail"]["observed"]
        return data
    if fmt == "csv":
        own = ("page_", "control_page_", "dns_answer", "control_dns_")
        return [
            {k: v for k, v in row.items() if not k.startswith(own)}
            for row in csv.DictReader(io.StringIO(text))
        ]
    if fmt == "md":
        body = text.split("## Summary by target and network", 1)[1].split("\n### ", 1)[0]
    else:
        body = text.split("<h2>Timeline</h2>", 1)[1].split("<h2>Block events</h2>", 1)[0]
    headings = re.findall(r"^(?:### |<h3>).*$", text, re.M)
    return body, headings


def test_a_collector_without_its_database_says_so(tmp_path):
    dsn = f"postgresql:///nothing?host={tmp_path}&user=postgres&connect_timeout=2"
    result = probe("collector", "serve", "--listen", "127.0.0.1:0", "--database", dsn)
    assert result.returncode == 1
    assert "cannot connect to the database" in result.stderr
    assert "Traceback" not in result.stderr


def test_upload_refused_token_and_absent_collector_keep_everything(dsn, collector, tmp_path):
    db = volunteer_db(
        tmp_path / "a.db", "AS8449", [("2026-11-01 10:00:00", {"a.kg": True, "b.kg": False})]
    )
    result = probe("upload", "--db", str(db), "--collector", collector.url, "--token",
                   "pvt_" + "x" * 43)  # fmt: skip
    assert result.returncode == 1
    assert "refused the token" in result.stderr and "2 measurements wait" in result.stderr
    # Nobody listens on this port: retried, then given up; nothing recorded as sent.
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    token = add_volunteer(dsn, "alice")
    result = probe("upload", "--db", str(db), "--collector", f"http://127.0.0.1:{port}",
                   "--token", token, "--retries", "2", "--backoff", "0.05")  # fmt: skip
    assert result.returncode == 1
    assert "after 3 tries" in result.stderr and "2 measurements wait" in result.stderr
    status = probe("status", "--db", str(db), "--json")
    assert json.loads(status.stdout)["upload_pending"] == 2
    result = probe("upload", "--db", str(db), "--collector", collector.url, "--token", token)
    assert result.returncode == 0 and "2 measurements uploaded" in result.stdout
    assert json.loads(probe("status", "--db", str(db), "--json").stdout)["upload_pending"] == 0
    assert count(dsn) == 2


def test_workers_share_the_port_and_stop_with_the_collector(dsn, tmp_path):
    token = add_volunteer(dsn, "alice")
    db = volunteer_db(
        tmp_path / "a.db",
        "AS8449",
        [("2026-11-01 10:00:00", {f"s{i}.kg": i % 2 == 0 for i in range(12)})],
    )
    running = Collector(dsn, tmp_path / "c.log", args=("--workers", "3")).start()
    try:
        assert running.process is not None
        parent = running.process.pid
        workers = [
            int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
            and (p / "stat").exists() and _ppid(p) == parent
        ]  # fmt: skip
        assert len(workers) == 2
        result = probe("upload", "--db", str(db), "--collector", running.url, "--token", token)
        assert result.returncode == 0 and "12 measurements uploaded" in result.stdout
    finally:
        running.terminate()
    assert running.process.returncode == 0
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "Z" in _state(Path(f"/proc/{pid}"))
    assert count(dsn) == 12


def _ppid(proc: Path) -> int:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def _state(proc: Path) -> str:
    try:
        return (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"
