"""Unattended runs in the lab: overlapping runs, kill -9, --max-runtime, and a database that
cannot be used (not SQLite, read-only, full, newer)."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.test_check import TIMEOUTS, rows

ROOT = Path(__file__).resolve().parents[1]


def argv(lab: Any, db: Path, urls: list[str], *extra: str) -> list[str]:
    out = [sys.executable, "-m", "probe.cli", "check", "--db", str(db),
           "--control-resolver", lab.DOH_URL, "--helper", lab.helper_url,
           "--ca-file", lab.ca_file, *TIMEOUTS, *extra]  # fmt: skip
    for url in urls:
        out += ["--input", url]
    return out


def slow(lab: Any, n: int, ms: int) -> list[str]:
    """``n`` distinct URLs whose pages take ``ms`` to come (the lab's /delay/MS)."""
    names = ["example.org", "www.azattyk.org", "24.kg", "kloop.kg", "kaktus.media", "vesti.kg"]
    return [lab.site(names[i % len(names)]).url(path=f"/delay/{ms}?n={i}") for i in range(n)]


def whole(db: Path) -> None:
    """The database passes integrity_check and every stored measurement has all its parts."""
    assert rows(db, "pragma integrity_check") == [("ok",)]
    partial = rows(
        db,
        "select m.id from measurements m where (select count(*) from controls c where "
        "c.measurement_id = m.id) != 1 or not exists (select 1 from dns_queries d where "
        "d.measurement_id = m.id)",
    )
    assert partial == []


def wait_for_start(db: Path, process: subprocess.Popen[str]) -> None:
    """Until the run row exists (the run holds its lock by then)."""
    for _ in range(600):
        if db.exists():
            try:
                if rows(db, "select count(*) from runs where status = 'running'") == [(1,)]:
                    return
            except sqlite3.OperationalError:
                pass  # being created
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError("the run did not start")


def test_a_second_run_on_the_same_database_exits_at_once_and_stores_nothing(lab, helper, tmp_path):
    db = tmp_path / "p.db"
    first = lab.spawn(lab.vantage, argv(lab, db, slow(lab, 4, 4000), "--http-timeout", "10"),
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_for_start(db, first)
        second = lab.run(lab.vantage, argv(lab, db, [lab.site("24.kg").url()]), timeout=30)
        assert second.returncode == 0, second.stderr
        assert "already in progress" in second.stderr and "since" in second.stderr
        assert "Traceback" not in second.stderr and "locked" not in second.stderr
        assert rows(db, "select count(*) from runs") == [(1,)]
        # --wait: the third waits for the first, then runs.
        third = lab.run(
            lab.vantage, argv(lab, db, [lab.site("24.kg").url()], "--wait", "90"), timeout=120
        )
        assert third.returncode == 0, third.stderr
        assert first.wait(60) == 0
    finally:
        first.kill()
    assert rows(db, "select status from runs order by started_at") == [
        ("complete",),
        ("complete",),
    ]
    whole(db)


def test_kill_9_at_twenty_random_moments_leaves_whole_measurements(lab, helper, tmp_path):
    db, log = tmp_path / "p.db", tmp_path / "run.log"
    urls = [lab.site(n).url() for n in ("example.org", "24.kg", "kaktus.media")] + slow(lab, 9, 300)
    moments = random.Random(7).sample([i / 20 for i in range(4, 60)], 20)
    for moment in moments:
        process = lab.spawn(lab.vantage, argv(lab, db, urls, "--log-file", str(log),
                                              "--concurrency", "3"))  # fmt: skip
        time.sleep(moment)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        whole(db)
        # Every target the run reported finished (logged after it was stored) is stored.
        logged = [line.split()[2] for line in log.read_text().splitlines() if "://" in line]
        stored = {url for (url,) in rows(db, "select input from measurements")}
        assert set(logged) <= stored
    # The next run marks the killed ones interrupted, and runs.
    after = lab.run(lab.vantage, argv(lab, db, urls[:1]), timeout=60)
    assert after.returncode == 0, after.stderr
    statuses = [s for (s,) in rows(db, "select status from runs order by started_at")]
    assert statuses[-1] == "complete"
    assert set(statuses[:-1]) <= {"interrupted", "complete"} and "running" not in statuses
    whole(db)


def test_max_runtime_stops_starting_targets_and_marks_the_run_partial(lab, helper, tmp_path):
    db = tmp_path / "p.db"
    urls = slow(lab, 12, 3000)
    result = lab.run(lab.vantage, argv(lab, db, urls, "--json", "--concurrency", "2",
                                       "--max-runtime", "2", "--http-timeout", "10"),
                     timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    ((status, targets),) = rows(db, "select status, targets from runs")
    assert (status, targets) == ("partial", 12)
    measured = rows(db, "select count(*) from measurements")[0][0]
    assert measured < 12
    assert len(result.stdout.splitlines()) == measured
    whole(db)


def offline(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """`probe` in a network namespace of its own, with no network at all."""
    return subprocess.run(
        ["unshare", "-n", sys.executable, "-m", "probe.cli", *args],
        capture_output=True, text=True, timeout=120, cwd=cwd,
    )  # fmt: skip


NOWHERE = ["--input", "http://192.88.99.1/", "--resolver", "udp://192.88.99.1",
           "--control-resolver", "udp://192.88.99.1",
           "--helper", "http://192.88.99.1/"]  # fmt: skip


@pytest.mark.parametrize("kind", ["not sqlite", "read-only", "newer"])
def test_a_database_that_cannot_be_used_is_one_line_and_exit_2(tmp_path, kind):
    db = tmp_path / "p.db"
    if kind == "not sqlite":
        db.write_bytes(b"this is a list of sites, not a database\n" * 100)
    else:
        assert offline("check", "--db", str(db), *NOWHERE).returncode == 0
        if kind == "read-only":
            subprocess.run(["chattr", "+i", str(db)], check=True)
        else:
            with sqlite3.connect(db) as conn:
                conn.execute(
                    "insert into _sqlite_migrations (migration_set, name, applied_at) "
                    "values ('probe', 'm999_from_the_future', '2027-01-01')"
                )
    try:
        before = rows(db, "select count(*) from runs") if kind != "not sqlite" else None
        result = offline("check", "--db", str(db), *NOWHERE)
    finally:
        subprocess.run(["chattr", "-i", str(db)], check=False)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert str(db) in result.stderr and len(result.stderr.strip().splitlines()) == 1
    if before is not None:
        assert rows(db, "select count(*) from runs") == before
    if kind == "newer":
        assert "newer probe" in result.stderr


def test_six_runs_on_a_new_database_at_once(tmp_path):
    db = tmp_path / "p.db"
    processes = [
        subprocess.Popen(
            [
                "unshare",
                "-n",
                sys.executable,
                "-m",
                "probe.cli",
                "check",
                "--db",
                str(db),
                *NOWHERE,
                "--dns-timeout",
                "3",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )  # fmt: skip
        for _ in range(6)
    ]
    outputs = [p.communicate(timeout=120) for p in processes]
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err
        assert "Traceback" not in err and "locked" not in err
    ran = rows(db, "select count(*) from runs")[0][0]
    busy = sum("already in progress" in err for _, err in outputs)
    assert ran >= 1 and ran + busy == 6
    whole(db)


def test_a_full_disk_stops_the_run_with_one_line_and_keeps_what_was_stored(tmp_path):
    # A small tmpfs in a mount namespace of the test's own: SQLite meets a real ENOSPC. Its
    # size leaves room for the new database's write-ahead log (every schema step, about 420 KiB)
    # and a few measurements (each commit appends some 50 KiB of pages to it).
    mount = tmp_path / "small"
    mount.mkdir()
    lists = tmp_path / "list.txt"
    lists.write_text("".join(f"http://192.88.99.1/{i}\n" for i in range(400)))
    script = (
        f"mount -t tmpfs -o size=1m tmpfs {mount} && "
        f"{sys.executable} -m probe.cli check --db {mount}/p.db {lists} "
        "--resolver udp://192.88.99.1 --control-resolver udp://192.88.99.1 "
        "--helper http://192.88.99.1/ --concurrency 8; echo status=$?; "
        f"cp {mount}/p.db* {tmp_path}/ 2>/dev/null; true"
    )
    result = subprocess.run(
        ["unshare", "-m", "-n", "sh", "-c", script],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert "status=1" in result.stdout, result.stdout + result.stderr
    assert result.stderr.count("Traceback") == 0, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "full" in errors[0], result.stderr
    copy = tmp_path / "p.db"
    stored = rows(copy, "select count(*) from measurements")[0][0]
    assert 0 < stored < 400
    whole(copy)


def test_quiet_and_log_file(tmp_path):
    db, log = tmp_path / "p.db", tmp_path / "probe.log"
    result = offline("check", "--db", str(db), *NOWHERE, "--quiet", "--log-file", str(log))
    assert result.returncode == 0 and result.stdout == "" and result.stderr == ""
    lines = log.read_text().splitlines()
    assert lines[0].endswith("run started: 1 targets")
    assert any("http://192.88.99.1/ inconclusive" in line for line in lines)
    assert all(line[:4].isdigit() and line[19] == "Z" for line in lines)  # UTC times
    assert "targets in" in lines[-1]
    json.dumps(lines)
