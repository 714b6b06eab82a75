"""The database as researchers read it: vantages, OONI imports, views, and the readers of
timelines, reports and exports.

Its tables (``vantages``, ``ooni_imports``) and views are made by :mod:`probe.store.schema`;
docs/schema.md documents every table, column and view.

The readers stream rows in the order their consumers need, one at a time (memory stays flat
over millions of measurements).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

from ..model.records import Evidence, MeasurementSummary, Observations, Verdict
from .sqlite import load_observations

#: The vantage of every imported OONI measurement: OONI does not identify its probes.
OONI_VANTAGE = "ooni"


# ------------------------------------------------------------------ vantages


def local_vantage(db: Database) -> str:
    """The id of the probe that writes this database."""
    row = db.execute("select id from vantages where kind = 'local'").fetchone()
    return str(row[0])


def name_local_vantage(db: Database, name: str | None) -> None:
    """Record the volunteer's name for this vantage (config ``vantage``) when it changed."""
    if name:
        db.execute(
            "update vantages set name = ? where kind = 'local' and name is not ?", [name, name]
        )
        db.conn.commit()


# ------------------------------------------------------------------ timelines and reports


@dataclass(frozen=True, slots=True)
class Filters:
    """Which measurements a timeline, report or export reads; times are stored UTC text."""

    domains: tuple[str, ...] = ()
    asns: tuple[str, ...] = ()
    since: str | None = None
    until: str | None = None

    def where(self, prefix: str = "m.") -> tuple[str, list[str]]:
        clauses, args = [], []
        if self.domains:
            clauses.append(f"{prefix}domain in ({', '.join('?' * len(self.domains))})")
            args += list(self.domains)
        if self.asns:
            clauses.append(f"{prefix}probe_asn in ({', '.join('?' * len(self.asns))})")
            args += list(self.asns)
        if self.since is not None:
            clauses.append(f"{prefix}start_time >= ?")
            args.append(self.since)
        if self.until is not None:
            clauses.append(f"{prefix}start_time < ?")
            args.append(self.until)
        return " and ".join(clauses) or "1", args


def iter_summaries(db: Database, filters: Filters = Filters()) -> Iterator[MeasurementSummary]:
    """Every measurement as a :class:`~probe.model.records.MeasurementSummary`, each
    (network, URL)'s in time order, ties in the order measured (run, then position), read from
    the index alone (m060): no sort, no row read, flat memory. Evidence is left out: a report
    reads it for the few measurements that open events (:func:`measurement_details`)."""
    where, args = filters.where()
    # A run's vantage from a dict, not a join: looking the run up for each of a million rows
    # took as long as the scan itself.
    vantage_of = dict(db.execute("select id, vantage_id from runs").fetchall())
    sql = f"""
        select {_EPOCH} as t, m.domain, m.url, m.probe_asn, m.run_id, m.verdict, m.blocking,
               m.failure, m.blockpage, m.id
        from measurements m indexed by measurements_timeline
        where {where}
        order by m.probe_asn, m.url, m.start_time, m.run_id, m.position
    """
    cursor = db.conn.execute(sql, args)
    cursor.arraysize = 4096
    vantage, new = vantage_of.get, tuple.__new__
    while rows := cursor.fetchmany():
        for t, domain, url, asn, run, verdict, blocking, failure, blockpage, mid in rows:
            # A time SQLite cannot read is left out here, not in SQL's where: there, the
            # time was converted twice per row (a third of the scan's cost).
            if t is None:
                continue
            yield new(  # MeasurementSummary's fields, in order (``_make`` costs more)
                MeasurementSummary,
                (t, domain, url, asn, vantage(run), run, verdict, blocking, failure, blockpage,
                 mid, None),
            )  # fmt: skip


#: A stored UTC time as epoch seconds, in SQL: unixepoch() where SQLite has it (3.38), about
#: a third faster than strftime('%s') over a million rows.
_EPOCH = (
    "unixepoch(m.start_time)"
    if sqlite3.sqlite_version_info >= (3, 38)
    else "cast(strftime('%s', m.start_time) as integer)"
)


_DETAIL_KEYS = (
    "id",
    "input",
    "url",
    "start_time",
    "verdict",
    "blocking",
    "failure",
    "blockpage",
    "confirmed",
    "dns_consistency",
    "reason",
    "evidence",
    "run_id",
)


def network_names(db: Database) -> dict[str, str]:
    """AS number -> the name its runs most often recorded for it (m010's
    ``probe_network_name``, from the helpers' /whoami or OONI's ``probe_network_name``)."""
    rows = db.execute(
        """select probe_asn, probe_network_name, count(*) as n from runs
           where probe_asn is not null and probe_network_name is not null
             and probe_network_name != ''
           group by 1, 2 order by n"""
    )
    return {asn: name for asn, name, _ in rows}  # the most frequent comes last and wins


def measurement_details(db: Database, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The stored facts a report shows for each measurement in ``ids``."""
    out: dict[str, dict[str, Any]] = {}
    wanted = [i for i in dict.fromkeys(ids) if i]
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        rows = db.execute(
            f"select {', '.join(_DETAIL_KEYS)} from measurements "
            f"where id in ({', '.join('?' * len(chunk))})",
            chunk,
        )
        for row in rows:
            detail = dict(zip(_DETAIL_KEYS, row, strict=True))
            try:
                detail["evidence"] = json.loads(detail["evidence"] or "[]")
            except ValueError:
                detail["evidence"] = []
            out[detail["id"]] = detail
    return out


# ------------------------------------------------------------------ exports


@dataclass(slots=True)
class Stored:
    """One stored measurement with what an export writes of it."""

    measurement_id: str
    observations: Observations
    verdict: Verdict
    run: dict[str, Any]
    vantage: dict[str, Any]
    probe_asn: str | None
    probe_cc: str | None
    position: int | None = None


def verdict_from_row(row: dict[str, Any]) -> Verdict:
    """A stored measurement's verdict fields as a :class:`Verdict`."""
    fields: dict[str, Any] = {n: row.get(n) for n in Verdict.__slots__ if n != "evidence"}
    for name in (
        "accessible",
        "body_length_match",
        "status_code_match",
        "headers_match",
        "title_match",
    ):
        if fields[name] is not None:
            fields[name] = bool(fields[name])
    fields["confirmed"] = bool(fields["confirmed"])
    fields["reason"] = fields["reason"] or ""
    try:
        evidence = [Evidence.from_dict(e) for e in json.loads(row.get("evidence") or "[]")]
    except (ValueError, KeyError, TypeError):
        evidence = []
    return Verdict(**fields, evidence=evidence)


def iter_stored(
    db: Database, filters: Filters = Filters(), *, include_imported: bool = False
) -> Iterator[Stored]:
    """Stored measurements in time order, with their observations (one at a time).

    Measurements imported from OONI are left out unless ``include_imported``: they are
    OONI's to publish, not ours. Pruned measurements (observations dropped) are left out.
    """
    where, args = filters.where()
    where += " and m.pruned = 0"  # their observations are gone: nothing to export
    if not include_imported:
        where += " and m.id not in (select measurement_id from ooni_imports)"
    ids = db.execute(
        f"select m.id from measurements m where {where} order by m.start_time, m.rowid", args
    )
    runs: dict[str, dict[str, Any]] = {}
    vantages = {row["id"]: row for row in db.table("vantages").rows}
    for (measurement_id,) in ids.fetchall():
        yield stored(db, measurement_id, runs=runs, vantages=vantages)


def stored(
    db: Database,
    measurement_id: str,
    *,
    runs: dict[str, dict[str, Any]] | None = None,
    vantages: dict[str, dict[str, Any]] | None = None,
) -> Stored:
    """One stored measurement with its run and vantage (``runs`` and ``vantages`` are caches
    a caller going through many measurements keeps; by default each is read)."""
    row = db.table("measurements").get(measurement_id)
    run = None if runs is None else runs.get(row["run_id"])
    if run is None:
        found = list(db.table("runs").rows_where("id = ?", [row["run_id"]]))
        run = found[0] if found else {"id": row["run_id"]}
        if runs is not None:
            runs[row["run_id"]] = run
    vantage_id = run.get("vantage_id") or ""
    if vantages is None:
        vantage = next(iter(db.table("vantages").rows_where("id = ?", [vantage_id])), {})
    else:
        vantage = vantages.get(vantage_id, {})
    return Stored(
        measurement_id=measurement_id,
        observations=load_observations(db, measurement_id),
        verdict=verdict_from_row(row),
        run=run,
        vantage=vantage,
        probe_asn=row["probe_asn"] or run.get("probe_asn"),
        probe_cc=row["probe_cc"] or run.get("probe_cc"),
        position=row.get("position"),
    )
