"""``probe upload`` of real measurements (made over loopback, tests/loopback.py) to ``probe
collector serve`` on a throwaway PostgreSQL (tests/postgres.py), without root.
"""

from __future__ import annotations

import subprocess
import sys

import httpx
import psycopg
import pytest
import pytest_asyncio

from tests.loopback import RESET, page
from tests.test_core_measure import PAGE, settings_for
from tests.test_core_run import run_all, servers_for


def probe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "probe.cli", *args], capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def rows(dsn: str, query: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query).fetchall()


@pytest_asyncio.fixture
async def measured(loopback, tmp_path):
    """A volunteer's database with a run of three loopback targets: two pages, one reset."""
    webs, dns, urls = servers_for(loopback, 2, page(PAGE))
    reset = loopback.http({"/": RESET})
    dns.zone["reset.test"] = [reset.host]
    urls.append(reset.url("/", "reset.test"))
    settings = settings_for(loopback, dns, *webs, reset)
    store, run_id, summary, _ = await run_all(
        settings, urls, tmp_path, concurrency=2, probe_asn="AS64500", probe_cc="KG"
    )
    store.finish_run(run_id, status="complete", counts=dict(summary.counts), offline=False)
    return tmp_path / "probe.db", urls


@pytest.mark.asyncio
async def test_upload_to_the_collector_once(measured, dsn, collector):
    db, urls = measured
    made = probe("collector", "add-volunteer", "loopback-volunteer", "--database", dsn)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()

    first = probe("upload", "--db", str(db), "--collector", collector.url, "--token", token)
    assert first.returncode == 0, first.stderr
    stored = rows(dsn, "select input, probe_asn from measurements order by input")
    assert sorted(stored) == sorted((url, "AS64500") for url in urls)

    again = probe("upload", "--db", str(db), "--collector", collector.url, "--token", token)
    assert again.returncode == 0, again.stderr
    assert len(rows(dsn, "select 1 from measurements")) == len(urls)  # nothing twice

    # The collector analysed each again: the reset target's failure is the probe's.
    failures = dict(rows(dsn, "select domain, failure from measurements"))
    assert failures["reset.test"] == "connection_reset"
    assert failures["site0.test"] is None
    timeline = httpx.get(
        collector.url + "/timeline", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert timeline.status_code == 200, timeline.text


@pytest.mark.asyncio
async def test_an_unknown_token_uploads_nothing(measured, dsn, collector):
    db, _urls = measured
    refused = probe("upload", "--db", str(db), "--collector", collector.url, "--token",
                    "pvt_not-a-token", "--retries", "0")  # fmt: skip
    assert refused.returncode != 0
    assert "token" in refused.stderr
    assert rows(dsn, "select count(*) from measurements") == [(0,)]
