"""Target lists are read once: a pipe, ``<(cmd)``, ``/dev/stdin`` or a named FIFO cannot be
read a second time, yet a run counts (checks) its lists before it measures them.

``probe check <(cmd)`` and ``/dev/stdin`` measured nothing and stored an empty "complete"
run; a named FIFO hung with the run lock held, deaf to SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from probe.app import targets
from probe.errors import TargetError

ROOT = Path(__file__).resolve().parents[1]
LIST = "http://192.88.99.1/a\n# a comment\nhttp://192.88.99.1/b\nhttp://192.88.99.1/a\n"
# Addresses with no route inside `unshare -n`: every step fails at once, nothing leaves.
NOWHERE = ["--resolver", "udp://192.88.99.1", "--control-resolver", "udp://192.88.99.1",
           "--helper", "http://192.88.99.1/", "--dns-timeout", "1"]  # fmt: skip


def stored(db: Path) -> tuple[list[tuple[str, int]], list[str]]:
    """The runs (status, targets) and the inputs measured."""
    conn = sqlite3.connect(db)
    try:
        runs = conn.execute("select status, targets from runs").fetchall()
        inputs = [i for (i,) in conn.execute("select input from measurements order by input")]
    finally:
        conn.close()
    return runs, inputs


MEASURED = ["http://192.88.99.1/a", "http://192.88.99.1/b"]


# ---------------------------------------------------------------- the library


def test_a_pipe_is_counted_then_measured_from_what_was_read(tmp_path):
    read, write = os.pipe()
    os.write(write, LIST.encode())
    os.close(write)
    with targets.TargetLists([f"/dev/fd/{read}"]) as lists:
        assert lists.count() == 2
        assert [t.input for t in lists] == MEASURED
        assert [t.input for t in lists] == MEASURED  # as often as asked
    os.close(read)


def test_a_regular_file_is_read_through_the_one_open_file(tmp_path):
    """Replaced between the count and the run (a cron job rewriting it), the list measured is
    the one counted."""
    path = tmp_path / "kg.txt"
    path.write_text(LIST)
    with targets.TargetLists([path], ["https://24.kg/"]) as lists:
        assert lists.count() == 3
        replacement = tmp_path / "new.txt"
        replacement.write_text("http://192.88.99.1/other\n")
        replacement.replace(path)
        assert [t.input for t in lists] == [*MEASURED, "https://24.kg/"]


def test_a_bad_line_in_a_pipe_names_it_and_the_line(tmp_path):
    read, write = os.pipe()
    os.write(write, b"24.kg\nnodot\n")
    os.close(write)
    with targets.TargetLists([f"/dev/fd/{read}"]) as lists, pytest.raises(TargetError) as error:
        lists.count()
    assert str(error.value).startswith(f"/dev/fd/{read}:2: ")
    os.close(read)


def test_a_fifo_still_streams_as_it_is_written(tmp_path):
    """Read once does not mean read whole first: the first target comes before the list ends."""
    fifo = tmp_path / "list.txt"
    os.mkfifo(fifo)
    first_seen = threading.Event()

    def writer() -> None:
        with open(fifo, "w") as out:
            out.write("24.kg\n")
            out.flush()
            first_seen.wait(30)
            out.write("kloop.kg\n")

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        with targets.TargetLists([fifo]) as lists:
            got = []
            for target in lists:
                got.append(target.url)
                first_seen.set()
            assert got == ["https://24.kg/", "https://kloop.kg/"]
            assert lists.count() == 2  # from the copy: the FIFO is not opened again
    finally:
        first_seen.set()
        release(fifo, thread)


def release(fifo: Path, thread: threading.Thread) -> None:
    """Let a writer still waiting for a reader of ``fifo`` go (it then meets a closed pipe)."""
    thread.join(1)
    while thread.is_alive():
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        thread.join(1)


# ---------------------------------------------------------------- probe check


def check(db: Path, shell: str, **kwargs) -> subprocess.CompletedProcess:
    """``probe check --db DB <shell words>`` in bash (for <(...)), with no network at all."""
    command = f"exec {sys.executable} -m probe.cli check --db {db} {' '.join(NOWHERE)} {shell}"
    return subprocess.run(
        ["unshare", "-n", "bash", "-c", command],
        capture_output=True, text=True, timeout=120, cwd=ROOT, **kwargs,
    )  # fmt: skip


def test_check_of_a_process_substitution_measures_its_targets(tmp_path):
    db = tmp_path / "p.db"
    result = check(db, f"<(printf '{LIST}')")
    assert result.returncode == 0, result.stderr
    assert stored(db) == ([("offline", 2)], MEASURED)


def test_check_of_dev_stdin_from_a_pipe_measures_its_targets(tmp_path):
    db = tmp_path / "p.db"
    result = check(db, "/dev/stdin", input=LIST)
    assert result.returncode == 0, result.stderr
    assert stored(db) == ([("offline", 2)], MEASURED)


def test_check_of_a_named_fifo_measures_it_and_ends(tmp_path):
    """The FIFO's writer writes once, as a writer does; the run must not wait for another."""
    db, fifo = tmp_path / "p.db", tmp_path / "list.fifo"
    os.mkfifo(fifo)
    argv = ["unshare", "-n", sys.executable, "-m", "probe.cli", "check", "--db", str(db),
            *NOWHERE, str(fifo)]  # fmt: skip

    def writer() -> None:
        with contextlib.suppress(BrokenPipeError), open(fifo, "w") as out:
            out.write(LIST)  # once the probe opened it for reading

    thread = threading.Thread(target=writer, daemon=True)
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)  # fmt: skip
    thread.start()
    try:
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()
        release(fifo, thread)
    assert process.returncode == 0, err
    assert stored(db) == ([("offline", 2)], MEASURED)
