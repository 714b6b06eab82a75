"""Target lists: plain text (one URL or bare domain a line) and Citizen Lab CSV.

A bare domain means ``https://DOMAIN/``. ``#`` starts a comment; blank lines are skipped.
CSV lists have the Citizen Lab header ``url,category_code,category_description,date_added,
source,notes``; the category code is kept. International domain names are measured in their
ASCII (punycode) form; ``input`` keeps the line exactly as written. The same URL listed twice
is measured once.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
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
    """Targets from a plain-text list."""
    targets = []
    for number, line in enumerate(content.splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        try:
            url, domain = normalise(entry)
        except ValueError as exc:
            raise TargetError(f"{name}:{number}", str(exc)) from None
        targets.append(Target(entry, url, domain, None, f"{name}:{number}"))
    return targets


def parse_csv(content: str, name: str) -> list[Target]:
    """Targets from a Citizen Lab CSV list."""
    reader = csv.reader(io.StringIO(content))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        return []
    if "url" not in header:
        raise TargetError(f"{name}:1", "CSV list has no 'url' column")
    url_at = header.index("url")
    category_at = header.index("category_code") if "category_code" in header else None
    targets = []
    for row in reader:
        number = reader.line_num
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) <= url_at:
            raise TargetError(f"{name}:{number}", "row has no url column")
        entry = row[url_at].strip()
        try:
            url, domain = normalise(entry)
        except ValueError as exc:
            raise TargetError(f"{name}:{number}", str(exc)) from None
        category = None
        if category_at is not None and len(row) > category_at:
            category = row[category_at].strip() or None
        targets.append(Target(entry, url, domain, category, f"{name}:{number}"))
    return targets


def is_csv(path: Path, content: str) -> bool:
    first = content.lstrip("\ufeff").split("\n", 1)[0].strip().lower()
    return path.suffix.lower() == ".csv" or first.startswith("url,")


def load_file(path: str | Path) -> list[Target]:
    """Targets from one file; raises ``TargetError`` (``FILE:LINE: reason``)."""
    path = Path(path)
    try:
        content = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise TargetError(f"{path}:0", f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        line = content_line_of(path, exc.start)
        raise TargetError(f"{path}:{line}", "not UTF-8 text") from None
    parse = parse_csv if is_csv(path, content) else parse_text
    return parse(content, str(path))


def content_line_of(path: Path, offset: int) -> int:
    return path.read_bytes()[:offset].count(b"\n") + 1


def load(paths: Iterable[str | Path] = (), inputs: Iterable[str] = ()) -> list[Target]:
    """All targets from files and ``--input`` URLs, each URL once, in order of first mention."""
    seen: set[str] = set()
    out: list[Target] = []
    found: list[Target] = []
    for path in paths:
        found.extend(load_file(path))
    for number, entry in enumerate(inputs, 1):
        try:
            url, domain = normalise(entry)
        except ValueError as exc:
            raise TargetError(f"--input #{number}", str(exc)) from None
        found.append(Target(entry.strip(), url, domain))
    for target in found:
        if target.url not in seen:
            seen.add(target.url)
            out.append(target)
    return out
