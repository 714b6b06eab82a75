"""IP address to autonomous system number, from an iptoasn.com database.

The test helper reports the AS number of every address it saw (``ip_info``), so that a probe
can tell "the censor's resolver answered with an address in another network" from "a CDN gave
each side a different edge"; and it tells a probe which network it measures from
(:mod:`probe.helper.whoami`: AS number, country and AS name). The data is iptoasn.com's
tab-separated dump (``ip2asn-combined.tsv``, optionally gzipped), one range per line::

    range_start <TAB> range_end <TAB> AS_number <TAB> country_code <TAB> AS_description

Ranges may be IPv4 or IPv6 (the combined file has both). AS number 0 means "not routed", which
is also what :meth:`AsnDB.lookup` answers for an address no range covers. The country and
description columns are optional; a country that is not two letters (iptoasn writes ``None``
for unrouted ranges) is unknown. Blank lines and lines starting with ``#`` are ignored; any
other malformed line is an error naming ``FILE:LINE``.

Memory: the ranges are three lists of integers; the country and description are kept once per
AS number (iptoasn repeats them on each of an AS's ranges; the first line's are kept), not per
range.
"""

from __future__ import annotations

import bisect
import gzip
import ipaddress
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import AsnDBError
from ..model.addresses import canonical_ip
from ..model.text import plain_name


@dataclass(frozen=True, slots=True)
class AsInfo:
    """The AS announcing an address: its number, registration country and description."""

    asn: int
    cc: str | None  # "KG"; None when unknown
    name: str | None  # "ELCAT-AS ElCat Ltd."; None when unknown


class _Table:
    """Sorted, non-overlapping ranges of one address family."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, int, int, int]] = []  # start, end, asn, line
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.asns: list[int] = []

    def freeze(self, source: str) -> None:
        self.rows.sort()
        for before, row in zip(self.rows, self.rows[1:], strict=False):
            if row[0] <= before[1]:
                first, second = sorted((before[3], row[3]))
                raise AsnDBError(f"{source}:{second}: range overlaps the one on line {first}")
        self.starts = [r[0] for r in self.rows]
        self.ends = [r[1] for r in self.rows]
        self.asns = [r[2] for r in self.rows]
        self.rows = []

    def lookup(self, value: int) -> int:
        i = bisect.bisect_right(self.starts, value) - 1
        if i >= 0 and value <= self.ends[i]:
            return self.asns[i]
        return 0


class AsnDB:
    """IPv4 and IPv6 ranges to AS numbers; lookups are a binary search."""

    def __init__(self) -> None:
        self._v4 = _Table()
        self._v6 = _Table()
        self._about: dict[int, tuple[str | None, str | None]] = {}  # asn -> (cc, name)

    def __len__(self) -> int:
        return len(self._v4.starts) + len(self._v6.starts)

    @classmethod
    def load(cls, path: str | Path) -> AsnDB:
        """Read an iptoasn TSV file (plain or gzip); raises :class:`AsnDBError` or ``OSError``."""
        path = Path(path)
        with open(path, "rb") as f:
            magic = f.read(2)
        gzipped = magic == b"\x1f\x8b"
        try:
            if gzipped:
                with gzip.open(path, "rt", encoding="utf-8", errors="replace") as text:
                    return cls.from_lines(text, str(path))
            with open(path, encoding="utf-8", errors="replace") as text:
                return cls.from_lines(text, str(path))
        except (EOFError, gzip.BadGzipFile) as exc:
            raise AsnDBError(f"{path}: corrupt gzip file: {exc}") from exc

    @classmethod
    def from_lines(cls, lines: Iterable[str], source: str = "<asn-db>") -> AsnDB:
        """Parse TSV lines; ``source`` names the data in error messages."""
        db = cls()
        for number, raw in enumerate(lines, 1):
            line = raw.rstrip("\r\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            where = f"{source}:{number}"
            fields = line.split("\t")
            if len(fields) < 3:
                raise AsnDBError(
                    f"{where}: expected range_start, range_end, AS_number separated by tabs"
                )
            try:
                start = ipaddress.ip_address(fields[0].strip())
                end = ipaddress.ip_address(fields[1].strip())
            except ValueError as exc:
                raise AsnDBError(f"{where}: bad address: {exc}") from exc
            if start.version != end.version:
                raise AsnDBError(f"{where}: range mixes IPv4 and IPv6")
            if int(start) > int(end):
                raise AsnDBError(f"{where}: range start {start} is after its end {end}")
            text = fields[2].strip()
            if text[:2].upper() == "AS":
                text = text[2:]
            if not text.isdigit() or int(text) > 0xFFFFFFFF:
                raise AsnDBError(f"{where}: bad AS number {fields[2].strip()!r}")
            table = db._v4 if start.version == 4 else db._v6
            asn = int(text)
            table.rows.append((int(start), int(end), asn, number))
            if asn and asn not in db._about and len(fields) > 3:
                db._about[asn] = (_country(fields[3]), _name(fields[4:]))
        db._v4.freeze(source)
        db._v6.freeze(source)
        return db

    def info(self, ip: str) -> AsInfo | None:
        """The AS announcing ``ip`` with its country and description; None when unknown."""
        asn = self.lookup(ip)
        if not asn:
            return None
        cc, name = self._about.get(asn, (None, None))
        return AsInfo(asn, cc, name)

    def lookup(self, ip: str) -> int:
        """The AS number announcing ``ip``; 0 when unknown, not routed, or not an address."""
        text = canonical_ip(ip)  # (IPv4-mapped IPv6 is the IPv4 address)
        if text is None:
            return 0
        addr = ipaddress.ip_address(text)
        table = self._v6 if isinstance(addr, ipaddress.IPv6Address) else self._v4
        return table.lookup(int(addr))


def _country(field: str) -> str | None:
    code = field.strip().upper()
    return sys.intern(code) if len(code) == 2 and code.isascii() and code.isalpha() else None


def _name(fields: list[str]) -> str | None:
    # A description with a tab in it would have been split: join it back.
    name = plain_name(" ".join(fields))
    return sys.intern(name) if name else None
