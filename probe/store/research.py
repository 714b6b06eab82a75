"""The database as researchers read it: vantages, OONI imports, views, and the readers of
timelines, reports and exports.

Schema steps m005–m008 live here (registered on :data:`probe.store.sqlite.migrations`, applied
by :func:`~probe.store.sqlite.open_db` after m001–m004):

* m005: ``vantages``, one row per probe whose runs are in this database; the probe that
  writes this file is the one ``local`` vantage (a random id made when the schema was), and a
  trigger stamps its id on every run written without one, so ``probe check`` needs no change.
  Merged runs keep the vantage of the database they came from.
* m006: ``ooni_imports``, what ``probe import`` read: OONI's identity of the measurement,
  OONI's own verdict (for comparison only: ours is re-analysed) and the measurement as
  published (zlib JSON), so nothing OONI recorded is lost.
* m007: views a researcher would otherwise write (``verdicts``, ``blocked``,
  ``latest_verdicts``, ``run_summaries``, ``dns_answers``, ``tls_results``, ``http_hops``).
* m008: an index holding every column the timeline reads, in its order, so a million
  measurements are read from the index alone.

docs/schema.md documents every table, column and view.

The readers stream rows in the order their consumers need, one at a time (memory stays flat
over millions of measurements).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

from ..model.records import Evidence, Observations, Verdict, utc_now
from ..report.timeline import MeasurementSummary
from .sqlite import load_observations, migrations

#: Kinds of vantage: this database's own probe, another volunteer's, OONI's public data.
VANTAGE_KINDS = ("local", "remote", "ooni")
#: The vantage of every imported OONI measurement: OONI does not identify its probes.
OONI_VANTAGE = "ooni"


@migrations()
def m005_vantages(db: Database) -> None:
    db.table("vantages").create(
        {
            "id": str,
            "name": str,  # the volunteer's name for it (config `vantage`), never an address
            "kind": str,  # local | remote | ooni
            "added_at": str,  # UTC "YYYY-MM-DD HH:MM:SS"
        },
        pk="id",
    )
    db.execute("create unique index vantages_one_local on vantages(kind) where kind = 'local'")
    # A database that already has runs gets the id a merge gives it before this step
    # (derived from its first run), so it stays one vantage when merged before and after.
    first = db.execute("select id from runs order by started_at, id limit 1").fetchone()
    local = derived_vantage(first[0]) if first else str(uuid.uuid4())
    db.table("vantages").insert({"id": local, "kind": "local", "added_at": utc_now()})
    db.table("runs").add_column("vantage_id", str, fk="vantages", fk_col="id")
    db.execute("update runs set vantage_id = ?", [local])
    db.execute(
        """
        create trigger runs_local_vantage after insert on runs when new.vantage_id is null
        begin
            update runs set vantage_id = (select id from vantages where kind = 'local')
            where id = new.id;
        end
        """
    )
    db.table("runs").create_index(["vantage_id"])


@migrations()
def m006_ooni_imports(db: Database) -> None:
    db.table("ooni_imports").create(
        {
            "measurement_id": str,
            "uid": str,  # OONI's identity: measurement_uid, else report_id + input + time
            "report_id": str,
            "source": str,  # FILE:LINE it was read from
            "test_version": str,
            "software": str,  # software_name software_version
            "ooni_blocking": str,  # OONI's verdict as published (JSON), never used by us
            "ooni_accessible": str,
            "measurement": bytes,  # the measurement as published, zlib-compressed JSON
            "imported_at": str,
        },
        pk="measurement_id",
        foreign_keys=[("measurement_id", "measurements", "id")],
    )
    db.table("ooni_imports").create_index(["uid"], unique=True)


VIEWS = {
    "verdicts": """
        select m.id as measurement_id, m.start_time, m.input, m.url, m.domain, m.category,
               coalesce(m.probe_asn, r.probe_asn) as probe_asn,
               coalesce(m.probe_cc, r.probe_cc) as probe_cc,
               m.verdict, m.blocking, m.accessible, m.dns_consistency, m.failure, m.blockpage,
               m.confirmed, m.reason, m.run_id, r.started_at as run_started_at,
               r.finished_at as run_finished_at, r.status as run_status,
               r.offline as run_offline, r.vantage_id, v.name as vantage,
               v.kind as vantage_kind, m.software_version, m.pruned
        from measurements m
        left join runs r on r.id = m.run_id
        left join vantages v on v.id = r.vantage_id
    """,
    "blocked": "select * from verdicts where verdict = 'blocked'",
    "latest_verdicts": """
        select * from (
            select *, row_number() over (
                partition by domain, probe_asn order by start_time desc, measurement_id
            ) as newest
            from verdicts
        ) where newest = 1
    """,
    "run_summaries": """
        select r.id as run_id, r.started_at, r.finished_at, r.status, r.offline, r.probe_asn,
               r.probe_cc, r.vantage_id, v.name as vantage, v.kind as vantage_kind,
               r.software_version, count(m.id) as measurements,
               coalesce(sum(m.verdict = 'accessible'), 0) as accessible,
               coalesce(sum(m.verdict = 'blocked'), 0) as blocked,
               coalesce(sum(m.verdict = 'down'), 0) as down,
               coalesce(sum(m.verdict = 'inconclusive'), 0) as inconclusive
        from runs r
        left join vantages v on v.id = r.vantage_id
        left join measurements m on m.run_id = r.id
        group by r.id
    """,
    "dns_answers": """
        select q.measurement_id, m.start_time, m.domain, m.probe_asn, q.depth, q.hostname,
               q.query_type, q.engine, q.resolver, q.failure, q.rcode, q.addresses, q.cnames,
               q.t0, q.t
        from dns_queries q join measurements m on m.id = q.measurement_id
    """,
    "tls_results": """
        select h.measurement_id, m.start_time, m.domain, m.probe_asn, h.depth, h.purpose,
               h.ip, h.port, h.server_name, h.failure, h.tls_version, h.alpn, h.cert_sha256,
               h.cert_subject, h.cert_issuer, h.t0, h.t
        from tls_handshakes h join measurements m on m.id = h.measurement_id
    """,
    "http_hops": """
        select h.measurement_id, m.start_time, m.domain, m.probe_asn, h.hop, h.depth, h.url,
               h.ip, h.port, h.failure, h.status_code, h.title, h.body_length, h.body_sha256,
               h.body_truncated, h.location, h.t0, h.t
        from http_requests h join measurements m on m.id = h.measurement_id
    """,
}


@migrations()
def m007_research_views(db: Database) -> None:
    for name, sql in VIEWS.items():
        db.execute(f"create view {name} as {sql}")


#: The columns the timeline reads, in the order of its scan: an index holding them all lets
#: a million measurements be read from the index alone, never the rows.
TIMELINE_COLUMNS = ("probe_asn", "domain", "start_time", "verdict", "run_id", "blocking",
                    "failure", "blockpage", "id")  # fmt: skip


@migrations()
def m008_timeline_index(db: Database) -> None:
    db.table("measurements").create_index(
        list(TIMELINE_COLUMNS), index_name="measurements_timeline"
    )


# ------------------------------------------------------------------ vantages


def derived_vantage(first_run_id: str) -> str:
    """The vantage id of a database written before vantages existed, from its first run."""
    return "db-" + hashlib.sha256(first_run_id.encode()).hexdigest()[:24]


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


def vantage_names(db: Database) -> dict[str, str]:
    """Vantage id -> a name to show (the volunteer's name, else the id's first 8 characters)."""
    return {
        row[0]: row[1] or f"vantage {row[0][:8]}"
        for row in db.execute("select id, name from vantages")
    }


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
    """Every measurement as a :class:`~probe.report.timeline.MeasurementSummary`, each
    (domain, network)'s in time order, read from the index alone (m008): no sort, no row
    read, flat memory. Evidence is left out: a report reads it for the few measurements that
    open events (:func:`measurement_details`)."""
    where, args = filters.where()
    sql = f"""
        select cast(strftime('%s', m.start_time) as integer) as t, m.domain, m.probe_asn,
               r.vantage_id, m.run_id, m.verdict, m.blocking, m.failure, m.blockpage, m.id,
               null as evidence
        from measurements m indexed by measurements_timeline
        left join runs r on r.id = m.run_id
        where {where} and t is not null
        order by m.probe_asn, m.domain, m.start_time
    """
    make = MeasurementSummary._make
    cursor = db.conn.execute(sql, args)
    cursor.arraysize = 4096
    while rows := cursor.fetchmany():
        yield from map(make, rows)


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
        row = db.table("measurements").get(measurement_id)
        run = runs.get(row["run_id"])
        if run is None:
            found = list(db.table("runs").rows_where("id = ?", [row["run_id"]]))
            run = runs[row["run_id"]] = found[0] if found else {"id": row["run_id"]}
        yield Stored(
            measurement_id=measurement_id,
            observations=load_observations(db, measurement_id),
            verdict=verdict_from_row(row),
            run=run,
            vantage=vantages.get(run.get("vantage_id") or "", {}),
            probe_asn=row["probe_asn"] or run.get("probe_asn"),
            probe_cc=row["probe_cc"] or run.get("probe_cc"),
        )
