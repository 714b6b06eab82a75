"""`probe merge`: other volunteers' databases brought into one, idempotently, vantages kept."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from probe.analysis import analyze
from probe.cli import cli
from probe.store import Store, open_db
from probe.store.research import local_vantage, name_local_vantage
from probe.store.schema import migrations
from tests.test_reanalyze import notice_observations


def volunteer_db(path: Path, name: str | None, hours: list[int], *, finish: bool = True) -> Path:
    """A volunteer's database: one run per hour, each measuring kaktus.media (an ISP notice,
    so blocked) with all its observations."""
    db = open_db(path)
    name_local_vantage(db, name)
    store = Store(db)
    for hour in hours:
        run = store.start_run(inputs=[], settings={}, targets=1, probe_asn="AS8449", probe_cc="KG")
        obs = notice_observations()
        obs.start_time = f"2026-11-20 {hour:02d}:00:00"
        store.save(run, obs, analyze(obs), probe_asn="AS8449", probe_cc="KG")
        if finish:
            store.finish_run(run, status="complete", counts={"blocked": 1}, offline=False)
    db.conn.close()
    return path


def merge(db: Path, *others: Path) -> Any:
    result = CliRunner().invoke(cli, ["merge", "--db", str(db), *map(str, others)])
    return result


def count(db: Path, table: str) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute(f"select count(*) from {table}").fetchone()[0]


def query(db: Path, sql: str, *args: Any) -> list[tuple]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute(sql, args).fetchall()


TABLES = ("runs", "measurements", "dns_queries", "tcp_connects", "http_requests", "controls")


def test_merge_adds_the_others_and_twice_adds_nothing(tmp_path):
    a = volunteer_db(tmp_path / "a.db", "bishkek-1", [10, 12])
    b = volunteer_db(tmp_path / "b.db", "osh-2", [11, 13, 14])
    before = {t: count(a, t) + count(b, t) for t in TABLES}
    result = merge(a, b)
    assert result.exit_code == 0, result.output
    assert "3 runs, 3 measurements and 1 vantages added" in result.output
    assert {t: count(a, t) for t in TABLES} == before
    again = merge(a, b)
    assert again.exit_code == 0 and "0 runs, 0 measurements and 0 vantages added" in again.output
    assert {t: count(a, t) for t in TABLES} == before
    # Merging a database that already holds b (c merged b) adds nothing of b's twice.
    c = volunteer_db(tmp_path / "c.db", "naryn-3", [15])
    assert merge(c, b).exit_code == 0
    assert merge(a, c).exit_code == 0
    assert count(a, "measurements") == before["measurements"] + 1


def test_each_run_keeps_its_vantage(tmp_path):
    a = volunteer_db(tmp_path / "a.db", "bishkek-1", [10])
    b = volunteer_db(tmp_path / "b.db", None, [11])  # a volunteer who never named theirs
    b_vantage = local_vantage(open_db(b))
    assert merge(a, b).exit_code == 0
    vantages = dict(
        query(
            a,
            "select v.kind || ':' || coalesce(v.name, ''), count(*) from runs r "
            "join vantages v on v.id = r.vantage_id group by v.id",
        )
    )
    # This database's vantage takes the configuration's name (conftest's "test"); the other
    # volunteer named theirs nothing, so it is known by its file's name.
    assert vantages == {"local:test": 1, "remote:b": 1}
    assert query(a, "select count(*) from runs where vantage_id = ?", b_vantage) == [(1,)]
    # The timeline counts them as two vantages: one blocked measurement each, at 10:00 and
    # 11:00, agree on a block even when an event needs 3 measurements in a row.
    result = CliRunner().invoke(
        cli,
        ["timeline", "--db", str(a), "--json", "--min-measurements", "3", "--min-vantages", "2"],
    )
    (event,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert (event["vantages"], event["measurements"]) == (2, 2)
    alone = CliRunner().invoke(
        cli,
        ["timeline", "--db", str(b), "--json", "--min-measurements", "3", "--min-vantages", "2"],
    )
    assert alone.stdout == ""


def test_a_run_merged_while_running_gets_its_end_and_new_measurements(tmp_path):
    a = volunteer_db(tmp_path / "a.db", "bishkek-1", [10])
    b = volunteer_db(tmp_path / "b.db", "osh-2", [11], finish=False)
    assert merge(a, b).exit_code == 0
    assert ("running",) in query(a, "select status from runs")
    db = open_db(b)
    store = Store(db)
    (run_id,) = [row["id"] for row in db.table("runs").rows]
    obs = notice_observations()
    obs.start_time = "2026-11-20 11:30:00"
    store.save(run_id, obs, analyze(obs), probe_asn="AS8449", probe_cc="KG")
    store.finish_run(run_id, status="complete", counts={"blocked": 2}, offline=False)
    db.conn.close()
    result = merge(a, b)
    assert "0 runs, 1 measurements and 0 vantages added; 1 runs updated" in result.output
    assert query(a, "select status from runs where id = ?", run_id) == [("complete",)]


def test_the_other_database_is_only_read(tmp_path):
    a = volunteer_db(tmp_path / "a.db", "bishkek-1", [10])
    b = volunteer_db(tmp_path / "b.db", "osh-2", [11])
    digest = hashlib.sha256(b.read_bytes()).hexdigest()
    assert merge(a, b).exit_code == 0
    assert hashlib.sha256(b.read_bytes()).hexdigest() == digest
    # SQLite may leave its WAL side files beside it, with nothing written in them.
    wal = tmp_path / "b.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0


def test_a_newer_schema_is_refused(tmp_path):
    a = volunteer_db(tmp_path / "a.db", "bishkek-1", [10])
    b = volunteer_db(tmp_path / "b.db", "osh-2", [11])
    with sqlite3.connect(b) as conn:
        conn.execute(
            "insert into _sqlite_migrations (migration_set, name, applied_at) "
            "values ('probe', 'm099_from_the_future', '2027-01-01')"
        )
    result = merge(a, b)
    assert result.exit_code == 2
    assert "newer probe" in result.output and "m099_from_the_future" in result.output
    assert count(a, "runs") == 1


@pytest.mark.parametrize("kind", ["not sqlite", "not probe's", "itself", "missing"])
def test_what_cannot_be_merged_is_one_line_exit_2(tmp_path, kind):
    a = volunteer_db(tmp_path / "a.db", "bishkek-1", [10])
    other = tmp_path / "other.db"
    if kind == "not sqlite":
        other.write_text("runs,measurements\n")
    elif kind == "not probe's":
        with sqlite3.connect(other) as conn:
            conn.execute("create table runs (id)")
    elif kind == "itself":
        other = a
    result = merge(a, other)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and str(other) in result.output
    assert count(a, "runs") == 1


def test_a_database_from_before_vantages_keeps_one_vantage_across_its_upgrade(tmp_path):
    """A volunteer's database at schema m004 is merged; later its probe is upgraded (m005
    gives it a vantage) and it is merged again: its runs are still one vantage."""
    old = tmp_path / "old.db"
    from sqlite_utils import Database

    db = Database(old)
    migrations.apply(db, stop_before="m005_vantages")
    # Rows as a probe of that schema wrote them (today's Store writes columns of later steps).
    when = "2026-11-01 10:00:00"
    db.table("runs").insert(
        {"id": "run-m004", "started_at": when, "finished_at": when, "status": "complete",
         "software_version": "0.4", "probe_asn": "AS8449", "probe_cc": "KG", "targets": 1}
    )  # fmt: skip
    db.table("measurements").insert(
        {"id": "m-m004", "run_id": "run-m004", "position": 0, "input": "https://24.kg/",
         "url": "https://24.kg/", "domain": "24.kg", "start_time": when, "probe_asn": "AS8449",
         "probe_cc": "KG", "verdict": "blocked", "blocking": "http-diff", "accessible": 0}
    )  # fmt: skip
    db.conn.close()
    a = volunteer_db(tmp_path / "a.db", "bishkek-1", [10])
    assert merge(a, old).exit_code == 0
    volunteer_db(old, None, [12])  # upgraded (open_db applies m005), then one more run
    result = merge(a, old)
    assert "1 runs, 1 measurements and 0 vantages added" in result.output
    assert query(
        a,
        "select count(distinct vantage_id) from runs where vantage_id in "
        "(select id from vantages where kind = 'remote')",
    ) == [(1,)]
