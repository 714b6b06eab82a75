"""Advisory file locks beside a database: one run at a time, one migration at a time.

``flock`` locks belong to an open file and die with the process, so a lock left by a process
that was killed (kill -9, a power cut) is free again at once: nothing to clean up, nothing
stale to detect. The lock file holds who took it and when, for the message a second run
prints. It never holds an address.

A lock belongs to the database *file*: it sits beside the real file, symbolic links resolved
(as SQLite resolves them for its -wal and -shm), so every name that leads to one database
meets the same lock (a database with two hard-linked names is refused when it is opened:
:func:`probe.store.sqlite.open_db`). The lock file is opened without following a symbolic
link and used only when it is a regular file with one name: a link planted there by another
user must not make a run as root truncate its target.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ..errors import StoreError


class Busy(Exception):
    """The lock is held; ``holder`` is what its owner wrote (``pid``, ``since``), if anything."""

    def __init__(self, holder: dict[str, Any]) -> None:
        super().__init__(f"held since {holder.get('since', '?')}")
        self.holder = holder


def lock_path(db: Path, kind: str) -> Path:
    """The lock of ``kind`` (run, migrate, upload) beside the database ``db`` really is."""
    real = Path(os.path.realpath(db))
    return real.with_name(f"{real.name}.{kind}.lock")


@contextlib.contextmanager
def file_lock(
    path: Path, *, wait: float = 0.0, note: dict[str, Any] | None = None
) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (waiting up to ``wait`` seconds); raises
    :class:`Busy` when another process holds it, :class:`~probe.errors.StoreError` when the
    lock file cannot be created (a read-only file system) or is not a lock file of ours.
    ``note`` is written into the file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"{path.parent}: cannot create the folder: {_why(exc)}") from None
    handle = _open(path, os.O_RDWR | os.O_CREAT)
    with handle:  # closing it releases the lock
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise Busy(_holder(handle)) from None
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        if note is not None:
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps({"pid": os.getpid(), **note}))
            handle.flush()
        yield


def is_locked(path: Path) -> dict[str, Any] | None:
    """What the holder of ``path`` wrote, when the lock is held now; else None. Only reads
    (it works on a read-only file system); a lock file that is not ours counts as free."""
    try:
        handle = _open(path, os.O_RDONLY)
    except StoreError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder(handle)
        return None


def _open(path: Path, flags: int) -> IO[str]:
    """The lock file, opened without following a symbolic link (and without blocking on a
    FIFO); refused unless it is a regular file with one name. Raises StoreError, naming it."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StoreError(
                f"{path}: a symbolic link where probe keeps its lock; not followed (remove it)"
            ) from None
        raise StoreError(f"{path}: cannot open the lock file: {_why(exc)}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        what = "has other names (hard links)" if stat.S_ISREG(info.st_mode) else "not a file"
        raise StoreError(f"{path}: {what}; not used as probe's lock (remove it)")
    os.set_blocking(fd, True)
    return open(fd, "r+" if flags & os.O_RDWR else "r", encoding="utf-8")


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _holder(handle: IO[str]) -> dict[str, Any]:
    try:
        handle.seek(0)
        data = json.loads(handle.read(4096) or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
