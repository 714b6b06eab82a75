"""The run lock and the database file: planted lock files, two names for one database, and a
read-only file system.

The lock is per database *file*: beside the real file (symbolic links resolved, as SQLite
resolves them), opened without following a link, refused when it is not a regular file of its
own. A database with two names (hard links) is refused by every command: SQLite keeps its
write-ahead log per name, so two names corrupt it whatever lock we take. On a read-only file
system a run fails with one line, and every command that only reads works.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from probe.errors import StoreError
from probe.store.locks import file_lock, is_locked, lock_path

ROOT = Path(__file__).resolve().parents[1]
# Addresses with no route inside `unshare -n`: every step fails at once, nothing leaves.
NOWHERE = ["--input", "http://192.88.99.1/", "--resolver", "udp://192.88.99.1",
           "--control-resolver", "udp://192.88.99.1", "--helper", "http://192.88.99.1/",
           "--dns-timeout", "1"]  # fmt: skip


def probe(*args: str, wrap: tuple[str, ...] = ("unshare", "-n")) -> subprocess.CompletedProcess:
    """`probe ARGS` in a network namespace of its own with no network at all."""
    return subprocess.run(
        [*wrap, sys.executable, "-m", "probe.cli", *args],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip


def runs_in(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("select count(*) from runs").fetchone()[0])
    finally:
        conn.close()  # the last connection to close removes -wal and -shm


def one_line(result: subprocess.CompletedProcess, status: int = 2) -> str:
    assert result.returncode == status, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A database with one complete run."""
    path = tmp_path / "data" / "p.db"
    result = probe("check", "--db", str(path), *NOWHERE)
    assert result.returncode == 0, result.stderr
    assert runs_in(path) == 1
    return path


# ---------------------------------------------------------------- item 10: a planted lock file


@pytest.mark.parametrize("kind", ["run", "migrate", "upload"])
def test_a_symlink_planted_at_a_lock_is_refused_and_its_target_untouched(tmp_path, kind):
    """A root cron or Docker run used to truncate and overwrite the link's target."""
    victim = tmp_path / "victim"
    victim.write_text("root:x:0:0\n")
    lock = lock_path(tmp_path / "p.db", kind)
    lock.symlink_to(victim)
    with pytest.raises(StoreError, match="symbolic link"), file_lock(lock, note={"since": "x"}):
        pass
    assert victim.read_text() == "root:x:0:0\n"
    assert is_locked(lock) is None  # status reads nothing through it either


@pytest.mark.parametrize("planted", ["hard link", "fifo", "directory"])
def test_anything_but_a_regular_file_of_its_own_at_the_lock_is_refused(tmp_path, planted):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    lock = lock_path(tmp_path / "p.db", "run")
    if planted == "hard link":
        os.link(victim, lock)
    elif planted == "fifo":
        os.mkfifo(lock)
    else:
        lock.mkdir()
    with pytest.raises(StoreError, match=str(lock)), file_lock(lock, note={"since": "x"}):
        pass
    assert victim.read_text() == "precious\n"


def test_probe_check_with_a_symlink_at_the_run_lock_is_one_line_and_writes_nothing(db, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    lock = lock_path(db, "run")
    lock.unlink()
    lock.symlink_to(victim)
    line = one_line(probe("check", "--db", str(db), *NOWHERE))
    assert str(lock) in line and "symbolic link" in line
    assert victim.read_text() == "precious\n"
    assert runs_in(db) == 1
    line = one_line(probe("prune", "--older-than", "1d", "--db", str(db)))
    assert str(lock) in line
    assert victim.read_text() == "precious\n"


# ---------------------------------------------------------------- item 9: two names, one database


def test_a_run_through_a_symlink_waits_for_the_run_through_the_real_name(db, tmp_path):
    """The lock is beside the real file (SQLite resolves links too), so both names meet it."""
    link = tmp_path / "elsewhere.db"
    link.symlink_to(db)
    assert lock_path(link, "run") == lock_path(db, "run")
    with file_lock(lock_path(db, "run"), note={"since": "2026-11-29 10:00:00"}):
        result = probe("check", "--db", str(link), *NOWHERE)
        assert is_locked(lock_path(link, "run")) is not None
    assert result.returncode == 0, result.stderr
    assert "already in progress" in result.stderr and "2026-11-29 10:00:00" in result.stderr
    assert runs_in(db) == 1
    assert not Path(f"{link}.run.lock").exists()


def test_a_database_with_two_names_is_refused_by_every_command(db, tmp_path):
    """Two runs through a hard link gave "database disk image is malformed": SQLite keeps its
    -wal and -shm per name, so no lock makes two names safe. Each command says so."""
    other = tmp_path / "other.db"
    os.link(db, other)
    for name in (other, db):
        for argv in (["check", *NOWHERE], ["runs"], ["status"], ["timeline"]):
            line = one_line(probe(*argv, "--db", str(name)))
            assert str(name) in line and "2 names" in line and "hard link" in line, argv
    assert runs_in(db) == 1
    other.unlink()  # one name again: usable again
    assert probe("check", "--db", str(db), *NOWHERE).returncode == 0
    assert runs_in(db) == 2


# ---------------------------------------------------------------- item 13: a read-only mount


def read_only(directory: Path, *commands: list[str]) -> list[subprocess.CompletedProcess]:
    """Each ``probe`` command run with ``directory`` bind-mounted read-only over itself, in a
    private mount namespace (nothing changes outside it) with no network."""
    results = []
    for argv in commands:
        mount = f"mount --bind {directory} {directory} && mount -o remount,bind,ro {directory}"
        script = f'{mount} && exec "$@"'
        results.append(probe(*argv, wrap=("unshare", "-m", "-n", "sh", "-c", script, "sh")))
    return results


READS = [["runs", "--json"], ["status", "--json"], ["timeline", "--json"],
         ["export"], ["report", "--format", "json"]]  # fmt: skip


def test_on_a_read_only_mount_a_run_is_one_line_and_reads_work(db):
    writable = [probe(*argv, "--db", str(db)).stdout for argv in READS]
    runs_in(db)  # closes the last connection: no -wal left
    before = sorted(p.name for p in db.parent.iterdir())
    assert not Path(f"{db}-wal").exists()  # closed cleanly: no write-ahead log to read
    check, prune, reanalyze, *reads = read_only(
        db.parent,
        ["check", "--db", str(db), *NOWHERE],
        ["prune", "--older-than", "1d", "--db", str(db)],
        ["reanalyze", "--db", str(db)],
        *[[*argv, "--db", str(db)] for argv in READS],
    )
    for result in (check, prune, reanalyze):
        line = one_line(result)
        assert "read-only" in line.lower() and str(db.parent) in line
    for argv, result, expected in zip(READS, reads, writable, strict=True):
        assert result.returncode == 0, (argv, result.stderr)
        assert "Traceback" not in result.stderr
        if argv[0] not in ("report", "status"):  # when it was made; the size of -wal
            assert result.stdout == expected, argv
    (run,) = [json.loads(line) for line in reads[0].stdout.splitlines()]
    assert json.loads(reads[1].stdout)["last_run"]["id"] == run["id"]
    assert json.loads(reads[3].stdout.splitlines()[0])["input"] == "http://192.88.99.1/"
    assert sorted(p.name for p in db.parent.iterdir()) == before
    assert runs_in(db) == 1


def test_on_a_read_only_mount_what_is_still_in_the_write_ahead_log_is_read(db):
    """A run killed before its last checkpoint leaves rows in p.db-wal: they are read too."""
    code = (
        "import os, sqlite3, sys\n"
        "conn = sqlite3.connect(sys.argv[1])\n"
        "conn.execute('pragma wal_autocheckpoint = 0')\n"
        "conn.execute(\"update runs set status = 'interrupted'\")\n"
        "conn.commit()\n"
        "os._exit(0)  # as kill -9 would: no checkpoint, -wal and -shm stay\n"
    )
    subprocess.run([sys.executable, "-c", code, str(db)], check=True)
    assert Path(f"{db}-wal").stat().st_size > 0
    (result,) = read_only(db.parent, ["runs", "--json", "--db", str(db)])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "interrupted"
