"""`probe upload` from the lab's vantage to a collector in the lab's `net`, on a real
PostgreSQL: two volunteers (two databases on two networks), the collector killed in the
middle of an upload and started again, and then: nothing lost, nothing twice, the
collector's timeline equal to `probe timeline` over the two databases merged, and the
vantage's address nowhere in the collector's log or database.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg

from tests.postgres import Collector
from tests.test_check import TIMEOUTS, probe_check

URLS = [
    "https://www.azattyk.org/", "http://kaktus.media/", "http://24.kg/", "https://kloop.kg/",
    "https://vesti.kg/", "http://example.org/", "https://akipress.org/", "https://factcheck.kg/",
]  # fmt: skip
PORT = 9000


def sql(dsn: str, query: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query).fetchall()


def local(db: Path, query: str) -> list[tuple]:
    import sqlite3

    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute(query).fetchall()


def upload_argv(db: Path, url: str, token: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "probe.cli", "upload", "--db", str(db), "--collector", url,
            "--token", token, "--retries", "2", "--backoff", "0.2", *extra]  # fmt: skip


def test_two_vantages_upload_through_a_collector_that_goes_away(
    clean_lab, helper, cluster, tmp_path
):
    lab = clean_lab
    lab.dns_lie("24.kg", lab.BLOCKPAGE_IP)
    lab.dns_nxdomain("kloop.kg")
    lab.tcp_refuse(lab.site("factcheck.kg").ip)
    dsn = cluster.create()
    tokens = {}
    for name in ("bishkek-elcat", "osh-megacom"):
        argv = [sys.executable, "-m", "probe.cli", "collector", "add-volunteer", name,
                "--database", dsn]  # fmt: skip
        made = subprocess.run(argv, capture_output=True, text=True)
        assert made.returncode == 0, made.stderr
        tokens[name] = made.stdout.strip()
    log = tmp_path / "collector.log"
    collector = Collector(dsn, log, host=lab.HELPER_IP, port=PORT, lab=lab).start()
    try:
        a, b = tmp_path / "elcat.db", tmp_path / "megacom.db"
        for _ in range(2):
            probe_check(lab, a, URLS, "--probe-asn", "AS8449", "--probe-cc", "KG")
        probe_check(lab, b, URLS, "--probe-asn", "AS50223", "--probe-cc", "KG")
        total_a = local(a, "select count(*) from measurements")[0][0]
        assert total_a == 2 * len(URLS)

        # Elcat's upload is slowed down (300 ms RTT) and the collector killed in its middle.
        lab.throttle(lab.HELPER_IP, delay_ms=300)
        argv = upload_argv(a, collector.url, tokens["bishkek-elcat"], "--batch-size", "3")
        uploading = lab.spawn(lab.vantage, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)  # fmt: skip
        deadline = time.monotonic() + 60
        while sql(dsn, "select count(*) from measurements")[0][0] < 4:
            assert time.monotonic() < deadline and uploading.poll() is None
            time.sleep(0.05)
        collector.stop()
        out, err = uploading.communicate(timeout=60)
        assert uploading.returncode == 1, out + err
        assert "wait for upload" in err and "Traceback" not in err
        accepted = local(a, "select count(*) from uploads where status = 'accepted'")[0][0]
        stored = sql(dsn, "select count(*) from measurements")[0][0]
        # Every recorded acceptance is stored; at most the one whose answer was lost is
        # stored without the probe knowing (it is sent again, and adds nothing).
        assert 3 <= accepted <= stored <= accepted + 1 < total_a
        waiting = subprocess.run([sys.executable, "-m", "probe.cli", "status", "--db", str(a),
                                  "--json"], capture_output=True, text=True)  # fmt: skip
        assert json.loads(waiting.stdout)["upload_pending"] == total_a - accepted

        # The collector comes back; Elcat's next upload sends the rest.
        collector.start()
        done = lab.run(lab.vantage, upload_argv(a, collector.url, tokens["bishkek-elcat"]),
                       timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "; 0 wait for upload." in done.stdout, done.stdout

        # Megacom's volunteer uploads at the end of a run (upload = true in the config).
        config = tmp_path / "megacom.toml"
        config.write_text(
            'consent = "2026-11-29 00:00:00"\nvantage = "osh-megacom"\nupload = true\n'
            f'collector = "{collector.url}"\ncollector_token = "{tokens["osh-megacom"]}"\n'
        )
        argv = [sys.executable, "-m", "probe.cli", "check", "--db", str(b), "--probe-asn",
                "AS50223", "--probe-cc", "KG", "--control-resolver", lab.DOH_URL,
                "--helper", lab.helper_url, "--ca-file", lab.ca_file, *TIMEOUTS]  # fmt: skip
        for url in URLS:
            argv += ["--input", url]
        run = lab.run(lab.vantage, argv, timeout=180, env={"PROBE_CONFIG": str(config)})
        assert run.returncode == 0, run.stderr
        assert f"Upload: {2 * len(URLS)} measurements uploaded" in run.stderr, run.stderr
    finally:
        collector.stop()

    # Nothing lost, nothing twice.
    ids_a = {r[0] for r in local(a, "select id from measurements")}
    ids_b = {r[0] for r in local(b, "select id from measurements")}
    rows = sql(dsn, "select id, volunteer_id from measurements")
    assert len(rows) == len({r[0] for r in rows}) == len(ids_a) + len(ids_b)
    assert {r[0] for r in rows} == ids_a | ids_b
    for db in (a, b):
        assert local(db, "select status, count(*) from uploads group by status") == [
            ("accepted", len(ids_a if db == a else ids_b))
        ]
    verdicts = dict(sql(dsn, "select id, verdict from measurements"))
    assert verdicts == dict(local(a, "select id, verdict from measurements")) | dict(
        local(b, "select id, verdict from measurements")
    )

    # One picture: the collector's timeline is probe's over the databases merged.
    merged = tmp_path / "merged.db"
    merge = subprocess.run([sys.executable, "-m", "probe.cli", "merge", "--db", str(merged),
                            str(a), str(b)], capture_output=True, text=True)  # fmt: skip
    assert merge.returncode == 0, merge.stderr
    expected = subprocess.run([sys.executable, "-m", "probe.cli", "timeline", "--json",
                               "--anomalies", "--db", str(merged)], capture_output=True,
                              text=True)  # fmt: skip
    with Collector(dsn, log, args=("--public-reads",)) as reads:
        got = httpx.get(reads.url + "/timeline?anomalies=1", timeout=60)
    assert got.status_code == 200
    assert got.text == expected.stdout
    events = [json.loads(line) for line in got.text.splitlines()]
    assert {(e["domain"], e["asn"]) for e in events if e["kind"] == "event"} >= {
        ("24.kg", "AS8449"), ("kloop.kg", "AS8449"),
    }  # fmt: skip

    # The vantage's address is in neither the collector's log nor its database.
    assert lab.VANTAGE_IP not in log.read_text()
    dump = subprocess.run(
        ["runuser", "-u", "postgres", "--", str(cluster.bin / "pg_dump"), dsn],
        capture_output=True, text=True,
    )  # fmt: skip
    assert dump.returncode == 0, dump.stderr
    assert "bishkek-elcat" in dump.stdout  # the dump is the real thing
    assert lab.VANTAGE_IP not in dump.stdout
