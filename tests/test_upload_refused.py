"""A measurement the collector refused is kept retryable (issue 16, item 2): an unattended
probe sends it again by itself a day after the refusal (the collector or the probe may have
been fixed since: a block page with a NUL was refused for ever), at once with
``--retry-refused``, and never in a loop."""

from __future__ import annotations

import datetime
import json
import sqlite3
from pathlib import Path

from tests.postgres import Collector
from tests.test_collector import add_volunteer, count, probe, volunteer_db


def refuse(db: Path, collector: str, ago: datetime.timedelta) -> list[str]:
    """Record every measurement of ``db`` as refused by ``collector`` ``ago``, as the
    collector before the fix refused a page with a NUL; their ids, oldest first."""
    at = (datetime.datetime.now(datetime.UTC) - ago).strftime("%Y-%m-%d %H:%M:%S")
    with sqlite3.connect(db) as conn:
        ids = [r[0] for r in conn.execute("select id from measurements order by position")]
        conn.executemany(
            "insert into uploads (measurement_id, collector, status, measurement_uid, reason, "
            "at) values (?, ?, 'refused', null, ?, ?)",
            [(i, collector, "NUL characters (\\u0000) are not accepted", at) for i in ids],
        )
    return ids


def statuses(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("select measurement_id, status from uploads"))


def test_a_refusal_is_sent_again_a_day_later_by_itself(dsn, tmp_path):
    token = add_volunteer(dsn, "alice")
    old = volunteer_db(tmp_path / "old.db", "AS8449", [("2026-11-01 10:00:00", {"a.kg": True})])
    new = volunteer_db(tmp_path / "new.db", "AS8449", [("2026-11-01 10:00:00", {"b.kg": True})])
    with Collector(dsn, tmp_path / "c.log") as collector:
        (refused_long_ago,) = refuse(old, collector.url, datetime.timedelta(days=2))
        (refused_just_now,) = refuse(new, collector.url, datetime.timedelta(minutes=1))
        args = ("--collector", collector.url, "--token", token)
        result = probe("upload", "--db", str(old), *args)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("1 measurements uploaded"), result.stdout
        assert statuses(old) == {refused_long_ago: "accepted"}
        # Refused a minute ago: not sent again yet (an upload every run must not loop).
        result = probe("upload", "--db", str(new), *args)
        assert result.stdout.startswith("0 measurements uploaded"), result.stdout
        assert statuses(new) == {refused_just_now: "refused"}
        status = json.loads(probe("status", "--db", str(new), "--json").stdout)
        assert status["upload_refused"] == 1
        # --retry-refused: at once.
        result = probe("upload", "--db", str(new), *args, "--retry-refused")
        assert result.stdout.startswith("1 measurements uploaded"), result.stdout
        assert statuses(new) == {refused_just_now: "accepted"}
    assert count(dsn) == 2
