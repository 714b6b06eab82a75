"""Target lists: plain text (one URL or bare domain a line) and Citizen Lab CSV.

A bare domain means ``https://DOMAIN/``. ``#`` starts a comment; blank lines are skipped.
CSV lists have the Citizen Lab header ``url,category_code,category_description,date_added,
source,notes``; the category code is kept. International domain names are measured in their
ASCII (punycode) form; ``input`` keeps the line exactly as written. The same URL listed twice
is measured once.

Lists come from volunteers and from the internet, so every bad line is a ``TargetError``
naming ``FILE:LINE``, never another exception: a line ends only at ``\n`` (or ``\r\n``), so
U+2028, NEL, VT or FF never start a new entry, and a control character in an entry is an
error; lines are at most :data:`MAX_LINE_BYTES`. Files are read as they are iterated
(:func:`iter_targets`, :func:`count`), so a list of a million lines is never held whole.

A run counts (checks) its lists before it measures them, and a pipe cannot be read twice
(``probe check <(cmd)``, ``/dev/stdin``, a named FIFO): :class:`TargetLists` reads each list
from its source once, and again from the same open file (a regular file) or from a temporary
copy made as it was first read (anything else).
"""

from __future__ import annotations

import csv
import itertools
import os
import stat
import tempfile
import unicodedata
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO

from ..errors import TargetError
from ..model.records import Target
from ..model.urls import normalise


def parse_text(content: str, name: str) -> list[Target]:
    """Targets from a plain-text list (all of them, duplicates included)."""
    return list(_text_targets(_split(content), name))


def parse_csv(content: str, name: str) -> list[Target]:
    """Targets from a Citizen Lab CSV list (all of them, duplicates included)."""
    return list(_csv_targets(_split(content), name))


def load_file(path: str | Path) -> list[Target]:
    """Targets from one file; raises ``TargetError`` (``FILE:LINE: reason``)."""
    return list(iter_file(path))


def load(paths: Iterable[str | Path] = (), inputs: Iterable[str] = ()) -> list[Target]:
    """All targets from files and ``--input`` URLs, each URL once, in order of first mention.

    Holds every target in memory: for long lists prefer :func:`iter_targets` and
    :func:`count`.
    """
    return list(iter_targets(paths, inputs))


def iter_targets(paths: Iterable[str | Path] = (), inputs: Iterable[str] = ()) -> Iterator[Target]:
    """The targets of :func:`load`, one at a time: files are read line by line as the
    iterator advances, so memory holds the URLs seen (for duplicates), not the targets.

    A bad line raises ``TargetError`` (``FILE:LINE: reason``) when the iterator reaches it,
    so a caller that must refuse a bad list before doing anything runs :func:`count` first.
    """
    return _unique(_all_targets(paths, inputs))


def count(paths: Iterable[str | Path] = (), inputs: Iterable[str] = ()) -> int:
    """How many targets :func:`iter_targets` yields; validates every line on the way (raises
    ``TargetError`` at the first bad one) without keeping any target."""
    return len({target.url for target in _all_targets(paths, inputs)})


class TargetLists:
    """The targets of lists and ``--input`` URLs, each list read from its source once.

    :meth:`count` checks every line (a run does it before anything is measured); iterating
    yields the targets as :func:`iter_targets` does, as often as asked. A regular file is
    opened once and read again through that open file (a list replaced meanwhile is not
    mixed in); anything else (a pipe, a FIFO, a terminal) is copied to a temporary file as
    it is first read, and read again from the copy. Lists are opened as they are reached.
    """

    def __init__(self, paths: Iterable[str | Path] = (), inputs: Iterable[str] = ()) -> None:
        self._lists = [_List(Path(path)) for path in paths]
        self._inputs = list(inputs)

    def count(self) -> int:
        return len({target.url for target in self._all()})

    def __iter__(self) -> Iterator[Target]:
        return _unique(self._all())

    def _all(self) -> Iterator[Target]:
        for one in self._lists:
            yield from _file_targets(one.path, one.lines())
        yield from _input_targets(self._inputs)

    def close(self) -> None:
        for one in self._lists:
            one.close()

    def __enter__(self) -> TargetLists:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _List:
    """One list file, read from its source once (see :class:`TargetLists`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.source: IO[bytes] | None = None
        self.copy: IO[bytes] | None = None  # of a source that cannot be read again
        self.whole = False  # the copy holds the whole list

    def lines(self) -> Iterator[tuple[int, str]]:
        if self.source is None:  # the first time: from the source
            self.source = _open_list(self.path)
            if not stat.S_ISREG(os.fstat(self.source.fileno()).st_mode):
                self.copy = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
            yield from _numbered(self.source, self.path, self.copy)
            self.whole = True
        elif self.copy is None:
            self.source.seek(0)
            yield from _numbered(self.source, self.path)
        elif self.whole:
            self.copy.seek(0)
            yield from _numbered(self.copy, self.path)
        else:
            raise RuntimeError(f"{self.path} read again before it was read whole")

    def close(self) -> None:
        for handle in (self.source, self.copy):
            if handle is not None:
                handle.close()


def iter_file(path: str | Path) -> Iterator[Target]:
    """The targets of one file, as read (duplicates included); the format is chosen by
    :func:`is_csv` from the name and the first line."""
    path = Path(path)
    return _file_targets(path, _file_lines(path))


def _file_targets(path: Path, lines: Iterator[tuple[int, str]]) -> Iterator[Target]:
    first = next(lines, None)
    if first is None:
        return
    rest = itertools.chain([first], lines)
    if is_csv(path, first[1]):
        yield from _csv_targets(rest, str(path))
    else:
        yield from _text_targets(rest, str(path))


def is_csv(path: Path, first_line: str) -> bool:
    """A ``.csv`` file, or one whose first line starts with a ``url,`` header."""
    return path.suffix.lower() == ".csv" or first_line.strip().lower().startswith("url,")


#: Longest line read from a list (a URL is at most a few KiB; this bounds memory per line).
MAX_LINE_BYTES = 64 * 1024
_BOM = "\ufeff"


def _all_targets(paths: Iterable[str | Path], inputs: Iterable[str]) -> Iterator[Target]:
    for path in paths:
        yield from iter_file(path)
    yield from _input_targets(inputs)


def _input_targets(inputs: Iterable[str]) -> Iterator[Target]:
    for number, entry in enumerate(inputs, 1):
        yield _target(entry.strip(" \t"), f"--input #{number}", None, source=None)


def _unique(found: Iterable[Target]) -> Iterator[Target]:
    """Each URL once, at its first mention."""
    seen: set[str] = set()
    for target in found:
        if target.url not in seen:
            seen.add(target.url)
            yield target


def _target(entry: str, where: str, category: str | None, source: str | None) -> Target:
    """A Target from one entry; ``TargetError`` naming ``where`` when it is not a URL."""
    try:
        _check_characters(entry)
        url, domain = normalise(entry)
    except ValueError as exc:
        raise TargetError(where, str(exc)) from None
    return Target(entry, url, domain, category, source)


def _check_characters(entry: str) -> None:
    """Refuse control characters (C0, DEL, C1 such as NEL) and line or paragraph
    separators: a list's entries end only at ``\n``, so these are never part of a URL."""
    for char in entry:
        if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            raise ValueError(f"{entry!r} contains a control character (U+{ord(char):04X})")


def _split(content: str) -> Iterator[tuple[int, str]]:
    """``(number, line)`` of a text, split at ``\n`` only (a ``\r`` before it is dropped)."""
    if content.startswith(_BOM):
        content = content[1:]
    if not content:
        return
    lines = content.split("\n")
    if lines[-1] == "":
        lines.pop()  # the file's last line ended with \n
    for number, line in enumerate(lines, 1):
        yield number, line.removesuffix("\r")


def _file_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(number, line)`` of a UTF-8 file read as it is iterated, split as :func:`_split`."""
    with _open_list(path) as handle:
        yield from _numbered(handle, path)


def _open_list(path: Path) -> IO[bytes]:
    try:
        return path.open("rb")
    except OSError as exc:
        raise TargetError(f"{path}:0", f"cannot read: {exc.strerror or exc}") from None


def _numbered(
    handle: IO[bytes], path: Path, copy: IO[bytes] | None = None
) -> Iterator[tuple[int, str]]:
    """``(number, line)`` of ``handle`` (named ``path``), each raw line also written to
    ``copy`` when given."""
    number = 0
    while True:
        try:
            raw = handle.readline(MAX_LINE_BYTES + 1)
            if copy is not None:
                copy.write(raw)
        except OSError as exc:
            raise TargetError(f"{path}:{number + 1}", f"cannot read: {exc.strerror}") from None
        if not raw:
            return
        number += 1
        if not raw.endswith(b"\n") and len(raw) > MAX_LINE_BYTES:
            raise TargetError(f"{path}:{number}", f"line longer than {MAX_LINE_BYTES} bytes")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise TargetError(f"{path}:{number}", "not UTF-8 text") from None
        if number == 1:
            line = line.removeprefix(_BOM)
        yield number, line.removesuffix("\n").removesuffix("\r")


def _text_targets(lines: Iterable[tuple[int, str]], name: str) -> Iterator[Target]:
    for number, line in lines:
        entry = line.split("#", 1)[0].strip(" \t")
        if entry:
            yield _target(entry, f"{name}:{number}", None, f"{name}:{number}")


def _csv_targets(lines: Iterable[tuple[int, str]], name: str) -> Iterator[Target]:
    numbered = iter(lines)
    # csv counts the lines it is given (reader.line_num): one per line of the file, so a
    # record's number is the file's; its line ending is given back for quoted multi-line cells.
    reader = csv.reader(line + "\n" for _, line in numbered)
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        return
    except csv.Error as exc:
        raise TargetError(f"{name}:1", f"bad CSV: {exc}") from None
    if "url" not in header:
        raise TargetError(f"{name}:1", "CSV list has no 'url' column")
    url_at = header.index("url")
    category_at = header.index("category_code") if "category_code" in header else None
    while True:
        first_line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # named by the line its record starts on
            raise TargetError(f"{name}:{first_line}", f"bad CSV: {exc}") from None
        where = f"{name}:{first_line}"
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) <= url_at:
            raise TargetError(where, "row has no url column")
        category = None
        if category_at is not None and len(row) > category_at:
            category = row[category_at].strip() or None
        yield _target(row[url_at].strip(" \t"), where, category, where)
