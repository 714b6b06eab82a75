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
"""

from __future__ import annotations

import csv
import itertools
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .errors import TargetError
from .model import urls
from .model.addresses import is_ip_literal

CSV_HEADER = ["url", "category_code"]


@dataclass(frozen=True, slots=True)
class Target:
    input: str  # exactly as written
    url: str  # normalised: scheme, punycode host, path
    domain: str  # the URL's host, punycode
    category: str | None = None
    source: str | None = None  # "FILE:LINE", or None for --input


def normalise(text: str) -> tuple[str, str]:
    """``(url, domain)`` for a URL or bare domain; raises ``ValueError`` with the reason.

    The URL is canonical (:func:`probe.model.urls.canonical`): IDNA 2008 host, default port
    dropped, path and query percent-encoded as UTF-8, no fragment.
    """
    text = text.strip()
    if not text:
        raise ValueError("empty target")
    if any(c.isspace() for c in text):
        raise ValueError(f"{text!r} contains white space")
    if "://" not in text:
        if "/" in text:
            raise ValueError(f"{text!r} has a path but no scheme (write https://...)")
        text = f"https://{text}/"
    try:
        parts = urlsplit(text)
    except ValueError as exc:  # an unbalanced IPv6 bracket
        raise ValueError(f"{text!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in urls.DEFAULT_PORTS:
        raise ValueError(f"{text!r}: only http:// and https:// URLs can be measured")
    host = parts.hostname
    if not host:
        raise ValueError(f"{text!r} has no host")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError(f"{text!r} has a bad port")
    if parts.username or parts.password:
        raise ValueError(f"{text!r}: user names and passwords in URLs are not supported")
    domain = _ascii_host(host, text)
    try:
        url = urls.canonical(text)
    except ValueError as exc:
        raise ValueError(f"{text!r}: {exc}") from None
    return url, domain


def _ascii_host(host: str, text: str) -> str:
    """The host as measured (IDNA 2008, or an IP address); a name needs at least two labels."""
    try:
        domain = urls.ascii_host(host)
    except ValueError:
        raise ValueError(f"{text!r}: {host!r} is not a valid domain name") from None
    if not is_ip_literal(domain) and "." not in domain:
        raise ValueError(f"{text!r}: {host!r} is not a valid domain name")
    return domain


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
    seen: set[str] = set()
    for target in _all_targets(paths, inputs):
        if target.url not in seen:
            seen.add(target.url)
            yield target


def count(paths: Iterable[str | Path] = (), inputs: Iterable[str] = ()) -> int:
    """How many targets :func:`iter_targets` yields; validates every line on the way (raises
    ``TargetError`` at the first bad one) without keeping any target."""
    seen: set[str] = set()
    for target in _all_targets(paths, inputs):
        seen.add(target.url)
    return len(seen)


def iter_file(path: str | Path) -> Iterator[Target]:
    """The targets of one file, as read (duplicates included); the format is chosen by
    :func:`is_csv` from the name and the first line."""
    path = Path(path)
    lines = _file_lines(path)
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
    for number, entry in enumerate(inputs, 1):
        yield _target(entry.strip(" \t"), f"--input #{number}", None, source=None)


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
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise TargetError(f"{path}:0", f"cannot read: {exc.strerror or exc}") from None
    with handle:
        number = 0
        while True:
            try:
                raw = handle.readline(MAX_LINE_BYTES + 1)
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
