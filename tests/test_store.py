"""The SQLite store: schema, WAL mode, one transaction per measurement, lossless round trip."""

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
