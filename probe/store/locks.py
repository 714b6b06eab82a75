"""Advisory file locks beside a database: one run at a time, one migration at a time.

``flock`` locks belong to an open file and die with the process, so a lock left by a process
that was killed (kill -9, a power cut) is free again at once: nothing to clean up, nothing
stale to detect. The lock file holds who took it and when, for the message a second run
prints. It never holds an address.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


class Busy(Exception):
    """The lock is held; ``holder`` is what its owner wrote (``pid``, ``since``), if anything."""

    def __init__(self, holder: dict[str, Any]) -> None:
        super().__init__(f"held since {holder.get('since', '?')}")
        self.holder = holder


def lock_path(db: Path, kind: str) -> Path:
    return db.with_name(f"{db.name}.{kind}.lock")


@contextlib.contextmanager
def file_lock(
    path: Path, *, wait: float = 0.0, note: dict[str, Any] | None = None
) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (waiting up to ``wait`` seconds); raises
    :class:`Busy` when another process holds it. ``note`` is written into the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle: IO[str] = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held for the block)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise Busy(_holder(path)) from None
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        if note is not None:
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps({"pid": os.getpid(), **note}))
            handle.flush()
        yield
    finally:
        handle.close()  # releases the lock


def is_locked(path: Path) -> dict[str, Any] | None:
    """What the holder of ``path`` wrote, when the lock is held now; else None."""
    if not path.exists():
        return None
    try:
        with file_lock(path):
            return None
    except Busy as busy:
        return busy.holder


def _holder(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
