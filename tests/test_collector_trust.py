"""What one token holder, or one hostile site, can do to a collector (issue 16, items 2, 4, 5
and the collector's side of 1), on a real PostgreSQL (tests/postgres.py).

* a NUL in a block page is evidence: exported as base64, accepted, stored, counted;
* one row the database cannot take gets its own 400 and the rest of the batch is committed;
* impossible dates and control characters in a query string are a 400, not a traceback;
* the vantage is the token: a sender cannot make itself many vantages, nor take another
  volunteer's measurement id with another start time;
* the address a volunteer connects from is scrubbed from what it sends;
* the schema step that brings this to an existing collector keeps its data.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from probe.analysis import analyze
from probe.collector import schema
from probe.model import failures as F
from probe.model.records import TCPConnect
from probe.store import Store, open_db
from tests.postgres import Collector
from tests.test_collector import (
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

NUL_PAGE = b"<html><head><title>Blocked</title></head><body>\x00\x00 access denied</body></html>"


def nul_db(path: Path) -> Path:
    """A volunteer's database with one measurement whose cleartext page (kept as evidence)
    holds NUL bytes."""
    store = Store(open_db(path))
    run = store.start_run(inputs=[], settings={}, targets=1, probe_asn="AS8449", probe_cc="KG")
    obs = observations("a.kg", "2026-11-01 10:00:00", blocked=False)
    obs.http[0].url = "http://a.kg/"
    obs.http[0].body = NUL_PAGE
    obs.http[0].body_length = len(NUL_PAGE)
    store.save(run, obs, analyze(obs), probe_asn="AS8449", probe_cc="KG", position=0)
    store.finish_run(run, status="complete", counts={}, offline=False)
    return path


def test_a_page_with_nul_bytes_is_exported_as_base64_and_collected(dsn, collector, tmp_path):
    db = nul_db(tmp_path / "a.db")
    (measurement,) = exported(db)
    body = measurement["test_keys"]["requests"][0]["response"]["body"]
    assert body == {"format": "base64", "data": base64.b64encode(NUL_PAGE).decode()}
    token = add_volunteer(dsn, "alice")
    result = probe("upload", "--db", str(db), "--collector", collector.url, "--token", token)
    assert result.returncode == 0, result.stderr
    assert "1 measurements uploaded; 0 wait for upload" in result.stdout, result.stdout
    assert count(dsn) == 1


def test_nul_in_any_string_another_client_sends_is_kept(dsn, collector, tmp_path):
    """Other clients send bodies and titles as strings: a NUL there is evidence too."""
    token = add_volunteer(dsn, "alice")
    content = exported(volunteer_db(tmp_path / "a.db", "AS8449",
                                    [("2026-11-01 10:00:00", {"a.kg": False})]))[0]  # fmt: skip
    keys = content["test_keys"]
    keys["requests"][0]["response"]["body"] = "blocked\x00page"
    keys["control"]["http_request"]["title"] = "News\x00front page"
    client = httpx.Client(base_url=collector.url)
    r = submit(client, token, open_report(client, token), content)
    assert r.status_code == 200, r.text
    with psycopg.connect(dsn) as conn:
        (stored,) = conn.execute("select content from measurements").fetchone()
    assert "blocked\\u0000page" in stored  # the measurement as sent, NUL escaped
    assert "Traceback" not in collector.log_path.read_text()


def test_one_row_that_cannot_be_stored_does_not_drop_the_others(dsn, collector, tmp_path):
    """Forty honest uploads and five with a lone surrogate, at once: each bad one gets its
    400, every honest one is committed."""
    token = add_volunteer(dsn, "alice")
    domains = {f"site{i}.kg": i % 2 == 0 for i in range(45)}
    contents = exported(volunteer_db(tmp_path / "a.db", "AS8449",
                                     [("2026-11-01 10:00:00", domains)]))  # fmt: skip
    report = open_report(httpx.Client(base_url=collector.url), token)
    bad = set(range(0, 45, 9))

    def send(i: int) -> httpx.Response:
        content = dict(contents[i], report_id=report)
        text = json.dumps({"format": "json", "content": content})
        if i in bad:  # a title the sender made up: a lone surrogate, as JSON allows it
            text = text.replace('"title": "News front page"', '"title": "News \\ud800"')
            assert "\\ud800" in text
        with httpx.Client(base_url=collector.url) as client:
            return client.post(f"/report/{report}", content=text.encode(), headers=auth(token))

    with concurrent.futures.ThreadPoolExecutor(45) as pool:
        answers = list(pool.map(send, range(45)))
    for i, r in enumerate(answers):
        if i in bad:
            assert r.status_code == 400, r.text
            assert "surrogate" in r.json()["error"]
        else:
            assert r.status_code == 200, r.text
    assert count(dsn) == 45 - len(bad)
    assert "Traceback" not in collector.log_path.read_text()


@pytest.mark.parametrize(
    "query, reason",
    [
        ("since=2026-13-45", "not a time that exists"),
        ("until=2026-02-30%2010:00", "not a time that exists"),
        ("domain=%00", "control characters"),
        ("domain=a.kg%1b%5b2J", "control characters"),
    ],
)
def test_impossible_query_parameters_are_a_400(dsn, collector, tmp_path, query, reason):
    token = add_volunteer(dsn, "alice")
    client = httpx.Client(base_url=collector.url, headers=auth(token))
    for path in ("/timeline", "/report"):
        r = client.get(f"{path}?{query}")
        assert r.status_code == 400, r.text
        assert reason in r.json()["error"]
    assert client.get("/health").status_code == 200
    assert "Traceback" not in collector.log_path.read_text()


def timeline(client: httpx.Client) -> list[dict[str, Any]]:
    r = client.get("/timeline?min_measurements=1&min_vantages=1")
    assert r.status_code == 200, r.text
    return [json.loads(line) for line in r.text.splitlines()]


def test_one_token_is_one_vantage_and_an_id_has_one_owner(dsn, collector, tmp_path):
    alice, mallory = add_volunteer(dsn, "alice"), add_volunteer(dsn, "mallory")
    runs = [(f"2026-11-0{d} 10:00:00", {"a.kg": True}) for d in range(1, 7)]
    contents = exported(volunteer_db(tmp_path / "a.db", "AS8449", runs))
    client = httpx.Client(base_url=collector.url, headers=auth(alice))
    report = open_report(client, alice)
    for content in contents:  # six "vantages", one token
        content["test_keys"]["x_probe_vantage"] = str(uuid.uuid4())
        assert submit(client, alice, report, content).status_code == 200
    (event,) = [e for e in timeline(client) if e.get("domain") == "a.kg"]
    assert event["vantages"] == 1, event
    with psycopg.connect(dsn) as conn:
        vantages = conn.execute("select distinct vantage_id from measurements").fetchall()
    assert len(vantages) == 1 and vantages[0][0].startswith("volunteer-")
    # Mallory resends alice's measurement id with another start time: 409, nothing stored.
    other = open_report(client, mallory)
    stolen = dict(contents[0], measurement_start_time="2026-11-20 10:00:00")
    r = submit(client, mallory, other, stolen)
    assert r.status_code == 409, r.text
    assert count(dsn) == 6
    # The networks each volunteer reported from are recorded.
    open_report(client, alice, probe_asn="AS12345")
    with psycopg.connect(dsn) as conn:
        networks = conn.execute(
            "select v.name, n.probe_asn, n.reports from volunteer_networks n "
            "join volunteers v on v.id = n.volunteer_id order by 1, 2"
        ).fetchall()
    assert networks == [("alice", "AS12345", 1), ("alice", "AS8449", 1), ("mallory", "AS8449", 1)]


def test_the_operator_sees_the_networks_each_token_reports_from(dsn, collector):
    alice, bob = add_volunteer(dsn, "alice"), add_volunteer(dsn, "bob")
    client = httpx.Client(base_url=collector.url)
    for asn in ("AS8449", "AS12345", "AS8449"):
        open_report(client, alice, probe_asn=asn)
    open_report(client, bob, probe_asn="AS0", probe_cc="ZZ")
    listed = probe("collector", "volunteers", "--database", dsn)
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()}
    assert lines["alice"].endswith("networks: AS8449 KG (2 reports), AS12345 KG (1 report)")
    assert lines["bob"].endswith("networks: AS0 ZZ (1 report)")


def test_an_existing_collector_is_migrated_with_its_data(cluster, tmp_path):
    """A collector database from before the step: its ids get one owner each, its vantages
    become its tokens, its reports' networks are recorded."""
    target = cluster.create()
    with schema.connect(target) as conn:
        conn.execute("create table schema_steps (name text primary key, "
                     "applied_at timestamptz not null default now())")  # fmt: skip
        name, sql = schema.STEPS[0]
        conn.execute(sql.encode())
        conn.execute("insert into schema_steps (name) values (%s)", [name])
        import datetime

        schema.ensure_partitions(conn, [datetime.date(2026, 11, 1)])
        conn.execute("insert into volunteers (name, token_sha256) values ('alice', 'x')")
        conn.execute(
            "insert into reports (report_id, volunteer_id, probe_asn, probe_cc, test_name, "
            "test_version, software_name, software_version) values "
            "('r1', 1, 'AS8449', 'KG', 'web_connectivity', '0.5.28', 'probe', '0.1')"
        )
        for i, vantage in enumerate(["forged-a", "forged-b"]):
            conn.execute(
                "insert into measurements (id, start_time, measurement_uid, report_id, "
                "volunteer_id, vantage_id, run_id, input, url, domain, verdict, confirmed, "
                "reason, evidence, analysis_version, submitted_verdict, content) values "
                "(%s, '2026-11-01 10:00:00+00', %s, 'r1', 1, %s, 'run', 'u', 'u', 'a.kg', "
                "'accessible', false, '', '[]', '0.1', '{}', '{}')",
                [f"m{i}", f"uid{i}", vantage],
            )
    with schema.connect(target) as conn:
        assert schema.migrate(conn) == [name for name, _ in schema.STEPS[1:]]
        owners = conn.execute("select id, volunteer_id, measurement_uid from measurement_ids "
                              "order by id").fetchall()  # fmt: skip
        assert owners == [("m0", 1, "uid0"), ("m1", 1, "uid1")]
        assert conn.execute("select distinct vantage_id from measurements").fetchall() == [
            ("volunteer-1",)
        ]
        assert conn.execute("select probe_asn, probe_cc, reports from volunteer_networks"
                            ).fetchall() == [("AS8449", "KG", 1)]  # fmt: skip
        assert schema.migrate(conn) == []


def test_a_migrated_collector_keeps_an_ids_first_copy_only(cluster, tmp_path):
    """Copies of a measurement id stored before the step (another volunteer's, with another
    start time, so another vantage in the timelines): the first one received stays."""
    import datetime

    target = cluster.create()
    with schema.connect(target) as conn:
        conn.execute("create table schema_steps (name text primary key, "
                     "applied_at timestamptz not null default now())")  # fmt: skip
        name, sql = schema.STEPS[0]
        conn.execute(sql.encode())
        conn.execute("insert into schema_steps (name) values (%s)", [name])
        schema.ensure_partitions(conn, [datetime.date(2026, 11, 1)])
        for volunteer in ("alice", "mallory"):
            conn.execute("insert into volunteers (name, token_sha256) values (%s, %s)",
                         [volunteer, volunteer.encode()])  # fmt: skip
        conn.execute(
            "insert into reports (report_id, volunteer_id, probe_asn, probe_cc, test_name, "
            "test_version, software_name, software_version) values "
            "('r1', 1, 'AS8449', 'KG', 'web_connectivity', '0.5.28', 'probe', '0.1'), "
            "('r2', 2, 'AS8449', 'KG', 'web_connectivity', '0.5.28', 'probe', '0.1')"
        )
        copies = [  # (id, uid, volunteer, start, received)
            ("m0", "uid-a", 1, "2026-11-01 10:00:00", "2026-11-01 11:00:00"),
            ("m0", "uid-m", 2, "2026-11-20 10:00:00", "2026-11-21 11:00:00"),
            ("m1", "uid-b", 2, "2026-11-02 10:00:00", "2026-11-02 11:00:00"),
            ("m1", "uid-c", 2, "2026-11-03 10:00:00", "2026-11-03 11:00:00"),
        ]
        for id_, uid, volunteer, start, received in copies:
            conn.execute(
                "insert into measurements (id, start_time, measurement_uid, received_at, "
                "report_id, volunteer_id, vantage_id, run_id, probe_asn, input, url, domain, "
                "verdict, confirmed, reason, evidence, analysis_version, submitted_verdict, "
                "content) values (%s, %s, %s, %s, %s, %s, %s, 'run', 'AS8449', 'u', 'u', "
                "'a.kg', 'blocked', false, '', '[]', '0.1', '{}', '{}')",
                [id_, f"{start}+00", uid, f"{received}+00", f"r{volunteer}", volunteer, uid],
            )
    with schema.connect(target) as conn:
        assert schema.migrate(conn) == [name for name, _ in schema.STEPS[1:]]
        rows = conn.execute("select id, measurement_uid, volunteer_id from measurements "
                            "order by id").fetchall()  # fmt: skip
        assert rows == [("m0", "uid-a", 1), ("m1", "uid-b", 2)]
        owners = conn.execute("select id, measurement_uid from measurement_ids order by id")
        assert owners.fetchall() == [("m0", "uid-a"), ("m1", "uid-b")]


def test_an_http_collector_elsewhere_is_warned_about(tmp_path):
    """The warning names the risk; a collector on this machine is not warned about."""
    from probe.app.upload import cleartext_warning

    warning = cleartext_warning("http://collector.example.org")
    assert warning is not None and "unencrypted" in warning
    assert cleartext_warning("https://collector.example.org") is None
    assert cleartext_warning("http://127.0.0.1:9000") is None
    argv = [sys.executable, "-m", "probe.cli", "upload", "--db", str(nul_db(tmp_path / "a.db")),
            "--collector", "http://192.88.99.250:9", "--token", "pvt_" + "a" * 43,
            "--retries", "1", "--backoff", "0.1"]  # fmt: skip
    result = subprocess.run(["unshare", "-n", *argv], capture_output=True, text=True, timeout=120)
    assert "travel unencrypted" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_collector_scrubs_the_address_its_volunteer_connects_from(lab, cluster, tmp_path):
    """A measurement echoing the uploader's address, in spellings a probe that did not know
    its address left (an older probe, another client): the collector, which sees the address
    it is connected from, scrubs it before storing, also inside base64 bodies."""
    target = cluster.create()
    token = add_volunteer(target, "alice")
    address = lab.VANTAGE_IP  # the lab's collector sees the vantage connect from here
    db = tmp_path / "a.db"
    store = Store(open_db(db))
    run = store.start_run(inputs=[], settings={}, targets=1, probe_asn="AS8449", probe_cc="KG")
    obs = observations("a.kg", "2026-11-01 10:00:00", blocked=False)
    obs.http[0].url = "http://a.kg/"  # a cleartext page's body is kept
    obs.http[0].title = f"Your address is {address}"
    dashed = "host-" + address.replace(".", "-") + ".isp.kg"
    obs.http[0].headers.append(["X-Seen-From", dashed])
    obs.http[0].body = NUL_PAGE + f" you are {address}".encode()  # base64 in the export
    store.save(run, obs, analyze(obs), probe_asn="AS8449", probe_cc="KG", position=0)
    store.finish_run(run, status="complete", counts={}, offline=False)
    with Collector(target, tmp_path / "c.log", host=lab.HELPER_IP, port=9002, lab=lab) as c:
        argv = [sys.executable, "-m", "probe.cli", "upload", "--db", str(db), "--collector",
                c.url, "--token", token, "--retries", "1"]  # fmt: skip
        result = lab.run(lab.vantage, argv, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "1 measurements uploaded" in result.stdout
    with psycopg.connect(target) as conn:
        (stored, title_reason) = conn.execute("select content, reason from measurements").fetchone()
    assert "Your address is [scrubbed]" in stored  # it was stored, scrubbed
    content = json.loads(stored)["content"]
    body = content["test_keys"]["requests"][0]["response"]["body"]
    assert base64.b64decode(body["data"]).endswith(b" you are [scrubbed]")
    assert address not in stored and dashed not in stored
    assert address not in title_reason


def test_a_measurement_with_scrubbed_addresses_is_collected(dsn, collector, tmp_path):
    """The probe stores ``[scrubbed]`` where the vantage's own address was (a DNS answer, a
    refused connect): its export must still be a measurement the collector reads."""
    from probe.model.addresses import SCRUBBED

    db = tmp_path / "a.db"
    store = Store(open_db(db))
    run = store.start_run(inputs=[], settings={}, targets=1, probe_asn="AS8449", probe_cc="KG")
    obs = observations("a.kg", "2026-11-01 10:00:00", blocked=False)
    obs.dns[0].addresses.append(SCRUBBED)
    obs.tcp.append(TCPConnect(SCRUBBED, 443, F.REFUSED_OWN_ADDRESS))
    store.save(run, obs, analyze(obs), probe_asn="AS8449", probe_cc="KG", position=0)
    store.finish_run(run, status="complete", counts={}, offline=False)
    token = add_volunteer(dsn, "alice")
    result = probe("upload", "--db", str(db), "--collector", collector.url, "--token", token)
    assert result.returncode == 0, result.stderr
    assert "1 measurements uploaded" in result.stdout, (result.stdout, result.stderr)
    with psycopg.connect(dsn) as conn:
        (stored,) = conn.execute("select content from measurements").fetchone()
    assert f'"ip": "{SCRUBBED}"' in stored


def test_status_says_uploading_is_off_without_a_collector(tmp_path):
    """No collector configured: nothing waits for an upload that will never happen."""
    db = nul_db(tmp_path / "a.db")
    config = tmp_path / "config.toml"
    config.write_text("")
    result = probe("status", "--db", str(db), config=config)
    assert result.returncode == 0, result.stderr
    assert "Uploading is off" in result.stdout
    assert "wait for upload" not in result.stdout
    config.write_text('collector = "https://collector.example.org"\n')
    result = probe("status", "--db", str(db), config=config)
    assert "1 measurements wait for upload." in result.stdout, result.stdout
