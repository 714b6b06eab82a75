"""The SQLite store: schema, WAL mode, one transaction per measurement, lossless round trip."""

import sqlite3
from pathlib import Path

import pytest
from sqlite_utils import Database

from bench.analyze_store import stored_verdict
from probe import analysis
from probe.errors import StoreError
from probe.model.records import (
    Control,
    DNSQuery,
    HTTPRequest,
    Observations,
    TCPConnect,
    TLSHandshake,
    Verdict,
)
from probe.store import Store, load_observations, open_db
from probe.store.sqlite import _verdict_row


def sample() -> Observations:
    return Observations(
        input="http://24.kg/",
        url="http://24.kg/",
        domain="24.kg",
        category="NEWS",
        start_time="2026-11-29 12:00:00",
        runtime=1.5,
        dns=[
            DNSQuery(
                "24.kg",
                "A",
                "system",
                "udp://192.88.99.10:53",
                None,
                "NOERROR",
                ["192.88.99.11"],
                [],
                300,
                0,
                0.0,
                0.01,
            ),
            DNSQuery(
                "24.kg",
                "AAAA",
                "https",
                "https://192.88.99.54/dns-query",
                "dns_no_answer",
                "NOERROR",
                [],
                [],
                None,
                0,
                0.0,
                0.02,
            ),
        ],
        tcp=[TCPConnect("192.88.99.11", 80, None, 0, 0.01, 0.02)],
        tls=[
            TLSHandshake("192.88.99.11", 443, "24.kg", "ssl_invalid_hostname", purpose="validate")
        ],
        http=[
            HTTPRequest(
                url="http://24.kg/",
                ip="192.88.99.11",
                port=80,
                status_code=200,
                headers=[["Content-Type", "text/html"], ["X-A", "1"]],
                title="Access denied",
                body=b"\x00\xffblocked by judicial decision!",
                body_length=30,
                body_sha256="ab",
            )
        ],
        control=Control("http://192.88.99.80/", None, {"dns": {"addrs": ["192.88.99.100"]}}),
    )


def test_schema_is_migrated_once_and_in_wal_mode(tmp_path):
    db = open_db(tmp_path / "sub" / "probe.db")
    assert db.journal_mode == "wal"
    tables = set(db.table_names())
    assert {
        "runs",
        "measurements",
        "dns_queries",
        "tcp_connects",
        "tls_handshakes",
        "http_requests",
        "controls",
    } <= tables
    again = open_db(tmp_path / "sub" / "probe.db")  # re-applying migrations is a no-op
    assert set(again.table_names()) == tables


def test_round_trip_and_evidence_body_kept_for_anomalies(tmp_path):
    db = open_db(tmp_path / "probe.db")
    store = Store(db)
    run_id = store.start_run(
        inputs=["kg.txt"], settings={}, targets=1, probe_asn="AS8449", probe_cc="KG"
    )
    obs = sample()
    verdict = Verdict("blocked", "http-diff", False, "consistent", None, "probe.kg.elcat", True)
    mid = store.save(run_id, obs, verdict, probe_asn="AS8449", probe_cc="KG")
    row = db["measurements"].get(mid)
    assert (row["verdict"], row["blocking"], row["confirmed"], row["probe_asn"]) == (
        "blocked",
        "http-diff",
        1,
        "AS8449",
    )
    assert load_observations(db, mid) == obs


def test_cleartext_body_kept_compressed_even_when_accessible(tmp_path):
    # Issue 7: a cleartext page is evidence whatever today's verdict, so that a later
    # fingerprint or analysis can run over it; it is stored compressed.
    db = open_db(tmp_path / "probe.db")
    store = Store(db)
    run_id = store.start_run(inputs=[], settings={}, targets=1)
    obs = sample()
    obs.http[0].body = b"<html>" + b"notice " * 20000  # larger than the stored prefix
    mid = store.save(run_id, obs, Verdict("accessible", None, True))
    stored = db.execute("select body, body_encoding from http_requests").fetchone()
    assert stored[1] == "zlib" and len(stored[0]) < 10_000
    assert load_observations(db, mid).http[0].body == obs.http[0].body[: 64 * 1024]
    store.finish_run(run_id, status="complete", counts={"accessible": 1}, offline=False)
    assert db["runs"].get(run_id)["status"] == "complete"


def test_https_body_dropped_when_accessible(tmp_path):
    db = open_db(tmp_path / "probe.db")
    store = Store(db)
    run_id = store.start_run(inputs=[], settings={}, targets=1)
    obs = sample()
    obs.http[0].url = "https://24.kg/"
    mid = store.save(run_id, obs, Verdict("accessible", None, True))
    assert load_observations(db, mid).http[0].body is None


# --------------------------------------------------------------------------------------------
# tests/data/analyze_store.db: 36 measurements of a lab run of 1,000 targets (4 of each kind),
# written by Store.save (`python -m bench.analyze_store --replay SAMPLE --per-kind 4 --out ...`).
# What Store.save writes must not change by a byte, nor the verdicts of today's analysis; when
# the analysis changes a verdict on purpose, `probe reanalyze --db` the fixture.

FIXTURE = Path(__file__).parent / "data" / "analyze_store.db"
STEP_TABLES = ("measurements", "dns_queries", "tcp_connects", "tls_handshakes", "http_requests",
               "controls")  # fmt: skip


def fixture() -> Database:
    return Database(sqlite3.connect(f"file:{FIXTURE}?mode=ro", uri=True))


def dump(db: Database, table: str, like: Database | None = None) -> list[tuple[object, ...]]:
    """Every row of ``table``, in insertion order, each value as SQL spells it (so 1 and 1.0,
    or text and a blob of the same bytes, differ); the columns ``like`` has (an older schema's),
    when given."""
    columns = [row[1] for row in (like or db).execute(f"pragma table_info({table})")]
    values = ", ".join(f"quote({name})" for name in columns)
    return db.execute(f"select {values} from {table} order by rowid").fetchall()


def test_the_fixture_has_every_kind_of_measurement():
    db = fixture()
    kinds = {tuple(row) for row in db.execute("select verdict, blocking from measurements")}
    assert kinds == {("accessible", None), ("blocked", "dns"), ("blocked", "http-diff"),
                     ("blocked", "tcp_ip"), ("blocked", "tls"), ("down", None)}  # fmt: skip
    (fingerprinted, bodies, redirects) = db.execute(
        "select (select count(*) from measurements where blockpage is not null), "
        "(select count(*) from http_requests where body is not null), "
        "(select count(*) from http_requests where hop > 0)"
    ).fetchone()
    assert fingerprinted and bodies and redirects


def test_todays_analysis_gives_the_stored_verdicts():
    db = fixture()
    ids = [row[0] for row in db.execute("select id from measurements order by rowid")]
    assert len(ids) >= 30
    for measurement_id in ids:
        verdict = analysis.analyze(load_observations(db, measurement_id))
        expected = _verdict_row(verdict)
        stored = db["measurements"].get(measurement_id)
        assert {key: stored[key] for key in expected} == expected, stored["url"]


def test_saving_stored_observations_again_writes_the_same_bytes(tmp_path):
    old = fixture()
    db = open_db(tmp_path / "again.db")
    for run in old["runs"].rows:
        db["runs"].insert(run)
    store = Store(db)
    for row in old.query("select * from measurements order by rowid"):
        obs = load_observations(old, row["id"])
        saved = store.save(
            row["run_id"],
            obs,
            stored_verdict(row),
            probe_asn=row["probe_asn"],
            probe_cc=row["probe_cc"],
            position=row["position"],
            measurement_id=row["id"],
        )
        assert saved == row["id"]
        assert load_observations(db, saved) == obs  # every field round-trips
    for table in STEP_TABLES:
        assert dump(db, table, like=old) == dump(old, table), table


def test_a_measurement_the_database_refuses_in_part_is_not_stored_at_all(tmp_path):
    db = open_db(tmp_path / "probe.db")
    store = Store(db)
    run_id = store.start_run(inputs=[], settings={}, targets=2)
    # A controls row already there for the id: the measurement's last insert fails.
    db.execute("insert into controls (measurement_id) values ('taken')")
    with pytest.raises(StoreError, match="cannot write"):
        store.save(run_id, sample(), Verdict("accessible", None, True), measurement_id="taken")
    for table in STEP_TABLES[:-1]:
        assert db.execute(f"select count(*) from {table}").fetchone() == (0,), table
    # The connection is usable, and the next measurement is stored whole.
    mid = store.save(run_id, sample(), Verdict("accessible", None, True))
    assert load_observations(db, mid) == sample()


def test_a_new_database_goes_through_the_schema_steps_in_their_order(tmp_path):
    from probe.store import schema

    db = open_db(tmp_path / "probe.db")
    applied = [
        row[0]
        for row in db.execute(
            "select name from _sqlite_migrations where migration_set = 'probe' order by rowid"
        )
    ]
    assert applied == list(schema.NAMES)
    assert applied == sorted(applied)  # m005 after m004, not after the last step


def test_a_database_upgraded_step_by_step_ends_with_a_new_databases_schema(tmp_path):
    from sqlite_utils import Database

    from probe.store import schema

    def tables_and_views(db):
        return db.execute(
            "select type, name, sql from sqlite_master where name not like 'sqlite_%' "
            "order by type, name"
        ).fetchall()

    new = open_db(tmp_path / "new.db")
    old = Database(tmp_path / "old.db")
    for name in schema.NAMES[1:]:  # as probes of each release would have left it
        schema.migrations.apply(old, stop_before=name)
    old.conn.close()
    upgraded = open_db(tmp_path / "old.db")
    assert tables_and_views(upgraded) == tables_and_views(new)
    columns = {row[1] for row in upgraded.execute("pragma table_info(verdicts)")}
    assert "pruned" in columns  # the view as m050 made it again
