"""The collector's measurements read back for timelines and reports, from PostgreSQL.

:func:`iter_summaries` is the PostgreSQL twin of the SQLite reader: it streams
:class:`~probe.model.records.MeasurementSummary` records, each (network, domain) in time
order (the ``measurements_timeline`` index's order, merged across the month partitions), from
a server-side cursor, so memory stays flat over millions of measurements. The timeline logic
itself is the one in :mod:`probe.report.timeline` (through :mod:`.bridge`).

:class:`Query` reads the query string of ``GET /timeline`` and ``GET /report`` with the
options and defaults of ``probe timeline`` and ``probe report``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg

from ..errors import BadRequest, InputError
from ..model import network
from ..model.text import is_clean_text
from ..model.times import parse_time
from . import bridge

#: Measurements fetched from the cursor at a time.
ITERSIZE = 20_000


@dataclass(frozen=True, slots=True)
class Filters:
    """Which measurements are read (as ``probe timeline``'s options select them)."""

    domains: tuple[str, ...] = ()
    asns: tuple[str, ...] = ()
    since: str | None = None  # UTC "YYYY-MM-DD[ HH:MM[:SS]]"
    until: str | None = None

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []
        if self.domains:
            clauses.append("domain = any(%s)")
            args.append(list(self.domains))
        if self.asns:
            clauses.append("probe_asn = any(%s)")
            args.append(list(self.asns))
        if self.since is not None:
            clauses.append("start_time >= (%s)::timestamp at time zone 'UTC'")
            args.append(self.since)
        if self.until is not None:
            clauses.append("start_time < (%s)::timestamp at time zone 'UTC'")
            args.append(self.until)
        return " and ".join(clauses) or "true", args


def iter_summaries(conn: psycopg.Connection, filters: Filters) -> Iterator[Any]:
    """Every matching measurement as a ``MeasurementSummary`` (``conn`` not in autocommit:
    the cursor lives in a transaction), read from the timeline index alone. Evidence is left
    out, as the SQLite reader leaves it: a report reads it with the details."""
    where, args = filters.where()
    sql = f"""
        select extract(epoch from start_time)::bigint, domain, url, probe_asn, vantage_id,
               run_id, verdict, blocking, failure, blockpage, id, null
        from measurements
        where {where}
        order by probe_asn, url, start_time, run_id, position
    """
    with conn.cursor(name="timeline") as cursor:
        cursor.itersize = ITERSIZE
        cursor.execute(sql.encode(), args)
        summary = bridge.summary
        while rows := cursor.fetchmany(ITERSIZE):
            yield from map(summary, rows)


_DETAIL_KEYS = (
    "id", "input", "url", "start_time", "verdict", "blocking", "failure", "blockpage",
    "confirmed", "dns_consistency", "reason", "evidence", "run_id",
)  # fmt: skip


def measurement_details(conn: psycopg.Connection, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The stored facts a report shows of each measurement in ``ids`` (as the SQLite reader
    gives them: times as stored text, ``confirmed`` as 0/1)."""
    wanted = [i for i in dict.fromkeys(ids) if i]
    out: dict[str, dict[str, Any]] = {}
    for start in range(0, len(wanted), 1000):
        rows = conn.execute(
            """select id, input, url,
                      to_char(start_time at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
                      verdict, blocking, failure, blockpage, confirmed::int, dns_consistency,
                      reason, evidence::text, run_id
               from measurements where id = any(%s)""",
            [wanted[start : start + 1000]],
        )
        for row in rows:
            detail = dict(zip(_DETAIL_KEYS, row, strict=True))
            try:
                detail["evidence"] = json.loads(detail["evidence"] or "[]")
            except ValueError:
                detail["evidence"] = []
            out.setdefault(detail["id"], detail)
    return out


def network_names(conn: psycopg.Connection) -> dict[str, str]:
    """AS number -> the name most of its runs recorded (as the SQLite reader picks it)."""
    rows = conn.execute(
        """select probe_asn, probe_network_name, count(distinct run_id) as n
           from measurements
           where probe_asn is not null and probe_network_name is not null
             and probe_network_name != ''
           group by 1, 2 order by n"""
    )
    return {asn: name for asn, name, _ in rows}  # the most frequent comes last and wins


@dataclass(frozen=True, slots=True)
class Query:
    """A ``GET /timeline`` or ``GET /report`` request's options, checked (400 otherwise)."""

    what: str  # "timeline" | "report"
    filters: Filters
    options: Any  # bridge.Options
    anomalies: bool = False
    fmt: str = "md"
    shown: dict[str, Any] = field(default_factory=dict)  # the filters as the report prints them

    @classmethod
    def parse(cls, params: dict[str, list[str]], what: str) -> Query:
        allowed = {"domain", "asn", "since", "until", "min_measurements", "min_vantages"}
        allowed |= {"anomalies"} if what == "timeline" else {"format", "max_gap_hours"}
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise BadRequest(f"unknown parameter {unknown[0]!r}")
        for values in params.values():
            for value in values:
                if not is_clean_text(value):
                    raise BadRequest("a parameter holds control characters")
        domains = tuple(d.strip().lower().rstrip(".") for d in params.get("domain", []))
        asns = []
        for asn in params.get("asn", []):
            canonical = network.asn(asn)
            if canonical is None:
                raise BadRequest(f"asn {asn[:40]!r}: expected an AS number like AS8449")
            asns.append(canonical)
        since, until = _one(params, "since"), _one(params, "until")
        try:
            filters = Filters(
                domains, tuple(asns), parse_time(since) if since else None,
                parse_time(until) if until else None,
            )  # fmt: skip
        except InputError as exc:
            raise BadRequest(str(exc)) from None
        hours = _number(params, "max_gap_hours", 24.0, minimum=0.01)
        options = bridge.Options(
            int(_number(params, "min_measurements", 2, minimum=1, integer=True)),
            int(_number(params, "min_vantages", 2, minimum=1, integer=True)),
            int(hours * 3600),
        )
        fmt = _one(params, "format") or "md"
        if fmt not in bridge.FORMATS:
            raise BadRequest(f"format {fmt[:20]!r}: one of {', '.join(bridge.FORMATS)}")
        shown = {"domain": list(domains), "asn": asns, "since": since, "until": until}
        return cls(
            what=what,
            filters=filters,
            options=options,
            anomalies=(_one(params, "anomalies") or "0").lower() in ("1", "true", "yes"),
            fmt=fmt,
            shown={k: v for k, v in shown.items() if v},
        )


def _one(params: dict[str, list[str]], name: str) -> str | None:
    values = params.get(name) or []
    if len(values) > 1:
        raise BadRequest(f"{name}: give it once")
    return values[0] if values else None


def _number(
    params: dict[str, list[str]], name: str, default: float, *, minimum: float,
    integer: bool = False,
) -> float:  # fmt: skip
    text = _one(params, name)
    if text is None:
        return default
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        raise BadRequest(f"{name}: {text[:20]!r} is not a number") from None
    if not value >= minimum or value > 1e9:
        raise BadRequest(f"{name}: must be at least {minimum}")
    return value
