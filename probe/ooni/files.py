"""OONI measurement files: JSON Lines or one JSON object, gzip-compressed when the name
ends in ``.gz``, read line by line with ``FILE:LINE`` for every error."""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import OONIFormatError
from .format import (
    MAX_LINE_BYTES,
)
from .importing import Imported, from_ooni


def read_file(path: Path) -> Iterator[tuple[str, Imported | OONIFormatError, Any]]:
    """``(FILE:LINE, measurement or the error, the parsed JSON or None)`` for each
    measurement in ``path``: one JSON object (possibly pretty-printed) or JSON Lines, as OONI
    publishes them, gzip-compressed when the name ends in ``.gz``. A file that cannot be read
    (or a compressed stream that breaks off) ends with an error item naming the file."""
    try:
        yield from _read(path)
    except (OSError, EOFError, zlib.error) as exc:
        yield str(path), OONIFormatError(f"cannot read: {exc}"), None


def _read(path: Path) -> Iterator[tuple[str, Imported | OONIFormatError, Any]]:
    first = None
    with _open(path) as f:
        for number, line in _lines(f):
            if line.strip():
                first = (number, line)
                break
        if first is None:
            return
        parsed = _parse_line(first[1])
        if isinstance(parsed, OONIFormatError):
            whole = _whole_file(path)
            if whole is not None:
                yield _item(path, first[0], whole)
                return
        yield _item(path, first[0], parsed)
        for number, line in _lines(f, start=first[0]):
            if line.strip():
                yield _item(path, number, _parse_line(line))


def _open(path: Path) -> io.BufferedIOBase:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def _lines(f: io.BufferedIOBase, start: int = 0) -> Iterator[tuple[int, bytes]]:
    """Numbered lines, each at most MAX_LINE_BYTES (a longer one is reported, not held)."""
    number = start
    while True:
        line = f.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        number += 1
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            while (rest := f.readline(1 << 20)) and not rest.endswith(b"\n"):
                pass
            yield number, b"\x00too long"
            continue
        yield number, line


def _parse_line(line: bytes) -> Any:
    if line.startswith(b"\x00too long"):
        return OONIFormatError(f"longer than {MAX_LINE_BYTES} bytes")
    try:
        return json.loads(line)
    except RecursionError:
        return OONIFormatError("JSON nested too deeply")
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
        return OONIFormatError(f"not JSON: {exc}")


def _whole_file(path: Path) -> Any:
    """The file as one JSON document (a pretty-printed measurement), or None."""
    with _open(path) as f:
        data = f.read(MAX_LINE_BYTES + 1)
    if len(data) > MAX_LINE_BYTES:
        return None
    parsed = _parse_line(data)
    return None if isinstance(parsed, OONIFormatError) else parsed


def _item(path: Path, number: int, parsed: Any) -> tuple[str, Imported | OONIFormatError, Any]:
    source = f"{path}:{number}"
    if isinstance(parsed, OONIFormatError):
        return source, parsed, None
    try:
        return source, from_ooni(parsed), parsed
    except OONIFormatError as exc:
        return source, exc, None
