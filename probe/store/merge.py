"""Merging other volunteers' databases into this one: ``probe merge OTHER.db...``.

Runs and measurements carry random ids (UUIDs) made where they were measured, so a merge is
a union by id: what is already here is left as it is, and merging the same file twice adds
nothing. Each run keeps its vantage: the other database's runs are filed under the vantage
that wrote them (its ``local`` vantage becomes a ``remote`` one here, named by its
volunteer, else by the file's name). Runs of a database older than the vantages table
(schema before m005) get a vantage derived from that database's first run: the id m005
gives that database when it is upgraded, so its runs stay one vantage whenever they are
merged. A run already here that has finished there since (it was merged while running) gets
its end, status and counts from there, along with its new measurements. A measurement
already here is never rewritten: ``probe reanalyze`` is how verdicts change.

The other file is opened read-only and never changed. A database whose schema has a step
this probe does not know (written by a newer probe) is refused: its columns would be lost.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from sqlite_utils import Database

from ..errors import MergeError
from ..model.records import utc_now
from .schema import NAMES, derived_vantage, fill_body_text, migrations

#: Tables copied for each new measurement, keyed by ``measurement_id``.
STEP_TABLES = (
    "dns_queries",
    "tcp_connects",
    "tls_handshakes",
    "http_requests",
    "controls",
    "reanalyses",
    "ooni_imports",
)


@dataclass(frozen=True, slots=True)
class Merged:
    """What one merge added."""

    source: str
    vantages: int
    runs: int
    runs_updated: int
    measurements: int


def _uri(path: Path, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"file:{quote(str(path.resolve()))}?{query}"


def _columns(db: Database, schema: str, table: str) -> list[str]:
    return [row[1] for row in db.execute(f"pragma {schema}.table_info({table})")]


def _attach(db: Database, path: Path) -> None:
    """Attach ``path`` read-only as ``other`` (immutable when it cannot be opened read-only,
    as a WAL database in a read-only folder cannot)."""
    if not path.is_file():
        raise MergeError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            header = f.read(16)
    except OSError as exc:
        raise MergeError(f"{path}: cannot read: {exc.strerror}") from None
    if header != b"SQLite format 3\x00":
        raise MergeError(f"{path}: not a SQLite database")
    for params in ({"mode": "ro"}, {"mode": "ro", "immutable": "1"}):
        try:
            db.execute("attach database ? as other", [_uri(path, **params)])
            db.execute("select count(*) from other.sqlite_master").fetchone()
            return
        except sqlite3.OperationalError:
            if "other" in [row[1] for row in db.execute("pragma database_list")]:
                db.execute("detach database other")
    raise MergeError(f"{path}: cannot open it read-only")


def _check_schema(db: Database, path: Path) -> set[str]:
    """The other database's tables; refuses what is not probe's, or is newer than us."""
    tables = {
        row[0] for row in db.execute("select name from other.sqlite_master where type = 'table'")
    }
    if not {"runs", "measurements", "_sqlite_migrations"} <= tables:
        raise MergeError(f"{path}: not a probe database (no runs, measurements or schema steps)")
    applied = [
        row[0]
        for row in db.execute(
            "select name from other._sqlite_migrations where migration_set = ? order by rowid",
            [migrations.name],
        )
    ]
    newer = [name for name in applied if name not in NAMES]
    if newer:
        raise MergeError(
            f"{path}: written by a newer probe (schema step {newer[-1]}); upgrade probe to merge it"
        )
    return tables


def merge(db: Database, path: Path) -> Merged:
    """Merge the probe database at ``path`` into ``db`` (see the module docstring)."""
    main_file = db.execute("pragma database_list").fetchone()[2]
    if main_file and Path(main_file).resolve() == path.resolve():
        raise MergeError(f"{path}: this is the database being merged into")
    _attach(db, path)
    try:
        tables = _check_schema(db, path)
        with db.atomic():
            return _merge(db, path, tables)
    finally:
        db.execute("detach database other")


def _merge(db: Database, path: Path, tables: set[str]) -> Merged:
    vantages_before = db.execute("select count(*) from vantages").fetchone()[0]
    if "vantages" in tables:
        vantage_expr = (
            "coalesce(o.vantage_id, (select id from other.vantages where kind = 'local'))"
        )
        db.execute(
            """insert or ignore into vantages (id, name, kind, added_at)
               select id, coalesce(name, ?), case kind when 'local' then 'remote' else kind end,
                      ?
               from other.vantages""",
            [path.stem, utc_now()],
        )
    else:  # before m005: one vantage for the whole file, stable across merges
        first = db.execute("select id from other.runs order by started_at, id limit 1").fetchone()
        derived = derived_vantage(first[0] if first else path.name)
        db.execute(
            "insert or ignore into vantages (id, name, kind, added_at) values (?, ?, 'remote', ?)",
            [derived, path.stem, utc_now()],
        )
        vantage_expr = "'" + derived + "'"
    vantages = db.execute("select count(*) from vantages").fetchone()[0] - vantages_before

    run_columns = [c for c in _columns(db, "other", "runs") if c != "vantage_id"]
    run_columns = [c for c in run_columns if c in _columns(db, "main", "runs")]
    listed = ", ".join(run_columns)
    selected = ", ".join(f"o.{c}" for c in run_columns)
    runs = db.execute(
        f"""insert or ignore into main.runs ({listed}, vantage_id)
            select {selected}, {vantage_expr} from other.runs o""",
    ).rowcount
    runs_updated = db.execute(
        """update main.runs set finished_at = o.finished_at, status = o.status,
                  counts = o.counts, offline = o.offline
           from other.runs o
           where main.runs.id = o.id and main.runs.finished_at is null
                 and o.finished_at is not null"""
    ).rowcount

    db.execute("drop table if exists temp.merged_ids")
    db.execute(
        """create temp table merged_ids as
           select id from other.measurements
           where id not in (select id from main.measurements)"""
    )
    db.execute("create unique index temp.merged_ids_id on merged_ids(id)")
    measurements = _copy(db, "measurements", "id")
    for table in STEP_TABLES:
        if table in tables:
            _copy(db, table, "measurement_id")
    fill_body_text(db)  # the pages of a database older than m070 have no text yet
    db.execute("drop table temp.merged_ids")
    return Merged(str(path), vantages, runs, runs_updated, measurements)


def _copy(db: Database, table: str, key: str) -> int:
    """Copy ``table``'s rows of the new measurements (the columns both schemas have)."""
    mine = _columns(db, "main", table)
    columns = [c for c in _columns(db, "other", table) if c in mine]
    listed = ", ".join(columns)
    cursor = db.execute(
        f"""insert into main.{table} ({listed})
            select {listed} from other.{table} where {key} in (select id from temp.merged_ids)
            order by rowid"""
    )
    return cursor.rowcount
