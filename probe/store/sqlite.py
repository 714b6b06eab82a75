"""SQLite storage: runs, measurements (verdicts) and the raw observations behind them.

The schema is built by :mod:`probe.store.schema` (its steps in one explicit order) and the
database runs in WAL mode so a report can read while a run writes. Each measurement
is written as soon as its target finishes (see :meth:`Store.save`), so a crash loses at most
the targets in flight. Observations are stored in normal form (one row per DNS query, TCP connect,
TLS handshake, HTTP hop) and :func:`load_observations` rebuilds them for re-analysis.

Privacy: nothing here holds the volunteer's own IP address. Runs and measurements carry the
network's AS number and country code only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import sqlite3
import urllib.parse
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from .. import __version__
from ..errors import StoreError
from ..model.records import (
    Control,
    DNSQuery,
    HTTPRequest,
    Observations,
    TCPConnect,
    TLSHandshake,
    Verdict,
    utc_now,
)
from .locks import Busy, file_lock, lock_path
from .schema import NAMES, STORED_BODY_BYTES, body_text, migrations

#: How long a writer waits for another process's transaction before giving up.
BUSY_TIMEOUT = 30.0


def open_db(path: str | Path, *, readonly: bool = False) -> Database:
    """Open (creating folders and schema as needed) the database at ``path``, in WAL mode.

    Raises :class:`~probe.errors.StoreError`, naming the file, when it is not a SQLite
    database, cannot be created or written, has two names (hard links), or was migrated by a
    newer probe (its schema is not ours to write). Processes that open a new database at once
    migrate it one at a time.

    With ``readonly`` (a caller that only reads), a database that cannot be written (on a
    read-only file system, or a file the user may not write) is opened read-only instead; its
    schema must then be current, since it cannot be migrated.
    """
    path = Path(path)
    _refuse_two_names(path)
    if readonly and path.exists() and not _writable(path):
        return _open_read_only(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = Database(sqlite3.connect(path, timeout=BUSY_TIMEOUT, check_same_thread=False))
        with file_lock(lock_path(path, "migrate"), wait=BUSY_TIMEOUT):
            db.enable_wal()
            # In WAL mode, NORMAL syncs at checkpoints, not at every commit: a power cut may
            # lose the last measurements, never whole ones or the database's integrity, and
            # each measurement's commit no longer waits for the disk (the run's event loop did).
            db.execute("pragma synchronous = normal")
            _refuse_newer(db, path)
            migrations.apply(db)
    except Busy:
        raise StoreError(f"{path}: another probe has been migrating it for too long") from None
    except (sqlite3.DatabaseError, OSError) as exc:
        raise StoreError(f"{path}: cannot use this database: {exc}") from None
    return db


def _refuse_two_names(path: Path) -> None:
    """SQLite keeps a database's -wal and -shm beside the name it was opened by: through two
    hard-linked names, two processes write one file with two logs and corrupt it ("database
    disk image is malformed"). No lock of ours can make that safe, so it is refused."""
    try:
        names = path.stat().st_nlink
    except OSError:
        return  # not there yet (or unreadable: connecting says why)
    if names > 1:
        raise StoreError(
            f"{path}: this database has {names} names (hard links); SQLite keeps its journal "
            f"per name, so two names corrupt it: remove the others (find / -samefile {path})"
        )


def _writable(path: Path) -> bool:
    """Whether SQLite can write ``path``: the file, and its folder (for -wal and -shm)."""
    real = path.resolve()
    return os.access(real, os.W_OK) and os.access(real.parent, os.W_OK)


def _open_read_only(path: Path) -> Database:
    """The database read-only, for a caller that only reads: with its -wal and -shm when they
    are there (a run killed before its last checkpoint), else as an immutable file (without
    -shm, which cannot be created, SQLite opens no WAL database; with no -wal, the file is
    all there is)."""
    real = path.resolve()
    uri = f"file:{urllib.parse.quote(str(real))}?mode=ro"
    try:
        try:
            db = Database(sqlite3.connect(uri, uri=True, check_same_thread=False))
            db.execute("select count(*) from sqlite_master").fetchone()  # opening is lazy
        except sqlite3.OperationalError:
            if real.with_name(real.name + "-wal").exists():
                raise StoreError(
                    f"{path}: read-only, with a write-ahead log (-wal) but no -shm: copy the "
                    "database and its -wal where they can be written, and open the copy"
                ) from None
            db = Database(sqlite3.connect(uri + "&immutable=1", uri=True, check_same_thread=False))
            db.execute("select count(*) from sqlite_master").fetchone()
        _refuse_newer(db, path)
        if migrations.pending(db):
            raise StoreError(
                f"{path}: read-only, and written by an older probe: open it once where it can "
                "be written, to upgrade it"
            )
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: cannot use this database: {exc}") from None
    return db


def _refuse_newer(db: Database, path: Path) -> None:
    newer = [m.name for m in migrations.applied(db) if m.name not in NAMES]
    if newer:
        raise StoreError(
            f"{path}: written by a newer probe (schema {newer[-1]}); upgrade probe to use it"
        )


class Store:
    """Writes runs and their measurements; a write the database refuses (disk full, read-only)
    raises :class:`~probe.errors.StoreError`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.DatabaseError as exc:
            name = self.db.execute("pragma database_list").fetchone()[2]
            raise StoreError(f"{name}: cannot write: {exc}") from None

    def mark_interrupted(self) -> int:
        """Runs still "running" whose process is gone become "interrupted" (call it holding
        the run lock, so no live run is among them); how many."""
        with self._writing(), self.db.atomic():
            cursor = self.db.execute(
                "update runs set status = 'interrupted' where status = 'running'"
            )
            return cursor.rowcount

    def start_run(
        self,
        *,
        inputs: list[str],
        settings: dict[str, Any],
        targets: int,
        probe_asn: str | None = None,
        probe_cc: str | None = None,
    ) -> str:
        run_id = str(uuid.uuid4())
        with self._writing():
            self._insert_run(run_id, inputs, settings, targets, probe_asn, probe_cc)
        return run_id

    def _insert_run(
        self,
        run_id: str,
        inputs: list[str],
        settings: dict[str, Any],
        targets: int,
        probe_asn: str | None,
        probe_cc: str | None,
    ) -> None:
        self.db.table("runs").insert(
            {
                "id": run_id,
                "started_at": utc_now(),
                "status": "running",
                "software_version": __version__,
                "probe_asn": probe_asn,
                "probe_cc": probe_cc,
                "inputs": json.dumps(inputs),
                "settings": json.dumps(settings),
                "offline": 0,
                "targets": targets,
            }
        )

    def finish_run(
        self, run_id: str, *, status: str, counts: dict[str, int], offline: bool
    ) -> None:
        with self._writing():
            self.db.table("runs").update(
                run_id,
                {
                    "finished_at": utc_now(),
                    "status": status,
                    "counts": json.dumps(counts),
                    "offline": int(offline),
                },
            )

    def save(
        self,
        run_id: str,
        obs: Observations,
        verdict: Verdict,
        *,
        probe_asn: str | None = None,
        probe_cc: str | None = None,
        position: int | None = None,
        measurement_id: str | None = None,
    ) -> str:
        """Write one measurement and its observations in one transaction; its id (a new one
        unless ``measurement_id`` is given, as an import keeps the id it was exported with)."""
        measurement_id = measurement_id or str(uuid.uuid4())
        with self._writing(), self.db.atomic():
            conn = self.db.conn
            _insert(
                conn,
                "measurements",
                [
                    {
                        "id": measurement_id,
                        "run_id": run_id,
                        "position": position,
                        "input": obs.input,
                        "url": obs.url,
                        "domain": obs.domain,
                        "category": obs.category,
                        "start_time": obs.start_time,
                        "runtime": obs.runtime,
                        "probe_asn": probe_asn,
                        "probe_cc": probe_cc,
                        "software_version": __version__,
                        **_verdict_row(verdict),
                    }
                ],
            )
            steps = {"measurement_id": measurement_id}
            _insert(
                conn,
                "dns_queries",
                [
                    {
                        **steps,
                        **_row(q),
                        "addresses": json.dumps(q.addresses),
                        "cnames": json.dumps(q.cnames),
                        "duplicate_replies": json.dumps(q.duplicate_replies),
                    }
                    for q in obs.dns
                ],
            )
            _insert(conn, "tcp_connects", [{**steps, **_row(c)} for c in obs.tcp])
            _insert(conn, "tls_handshakes", [{**steps, **_row(h)} for h in obs.tls])
            _insert(
                conn,
                "http_requests",
                [
                    {
                        **steps,
                        **_row(hop),
                        "hop": index,
                        "headers": json.dumps(hop.headers),
                        "informational": json.dumps(hop.informational),
                        "body_truncated": int(hop.body_truncated),
                        **_stored_body(hop, verdict),
                    }
                    for index, hop in enumerate(obs.http)
                ],
            )
            control = obs.control
            _insert(
                conn,
                "controls",
                [
                    {
                        **steps,
                        "helper": control.helper,
                        "failure": control.failure,
                        "response": json.dumps(control.response) if control.response else None,
                        "t0": control.t0,
                        "t": control.t,
                    }
                ],
            )
        return measurement_id

    def replace_verdict(
        self, measurement_id: str, verdict: Verdict, *, before: dict[str, Any] | None = None
    ) -> None:
        """Write a new verdict for a stored measurement; ``before`` (the fields that changed, as
        they were) is recorded in ``reanalyses`` with the new values, in the same transaction."""
        row = _verdict_row(verdict)
        with self._writing(), self.db.atomic():
            self.db.table("measurements").update(measurement_id, row)
            if before:
                self.db.table("reanalyses").insert(
                    {
                        "measurement_id": measurement_id,
                        "at": utc_now(),
                        "software_version": __version__,
                        "before": json.dumps(before),
                        "after": json.dumps({key: row[key] for key in before}),
                    }
                )

    def run_measurements(self, run_id: str) -> Iterator[dict[str, Any]]:
        """One run's measurements (verdict fields), in input order."""
        return self.db.table("measurements").rows_where("run_id = ?", [run_id], order_by="position")


def _stored_body(hop: HTTPRequest, verdict: Verdict) -> dict[str, Any]:
    """The evidence kept of a body: every cleartext page, and every page of a target not
    found accessible (its first :data:`~probe.store.schema.STORED_BODY_BYTES`, compressed),
    so later fingerprints and analyses can run over it; beside it, the same bytes as text in
    the page's charset (:func:`~probe.store.schema.body_text`) for Datasette, which cannot
    inflate them."""
    keep = not hop.url.lower().startswith("https://") or verdict.verdict != "accessible"
    if not keep or hop.body is None:
        return {"body": None, "body_encoding": None, "body_text": None}
    kept = hop.body[:STORED_BODY_BYTES]
    return {
        "body": zlib.compress(kept),
        "body_encoding": "zlib",
        "body_text": body_text(kept, hop.header("content-type")),
    }


@functools.cache
def _insert_sql(table: str, columns: tuple[str, ...]) -> str:
    names = ", ".join(f'"{name}"' for name in columns)
    values = ", ".join(f":{name}" for name in columns)
    return f'insert into "{table}" ({names}) values ({values})'


def _insert(conn: sqlite3.Connection, table: str, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` (alike: the first one's keys are the columns) with one statement that
    sqlite3 prepares once per connection: a measurement's writes cost no table introspection,
    SQL building or value conversion, as sqlite-utils' ``insert_all`` does per call. Values are
    stored as they are: one SQLite cannot store (a list) is an error, never converted."""
    if rows:
        conn.executemany(_insert_sql(table, tuple(rows[0])), rows)


def _row(record: Any) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__slots__}


#: Verdict fields that are booleans in the record and 0/1 in the table.
VERDICT_BOOLEANS = (
    "accessible",
    "confirmed",
    "body_length_match",
    "status_code_match",
    "headers_match",
    "title_match",
)


def _verdict_row(verdict: Verdict) -> dict[str, Any]:
    row = _row(verdict)
    row["evidence"] = json.dumps([dataclasses.asdict(e) for e in verdict.evidence])
    for key in VERDICT_BOOLEANS:
        if row[key] is not None:
            row[key] = int(row[key])
    return row


def _fields(cls: type, row: dict[str, Any]) -> dict[str, Any]:
    return {name: row[name] for name in cls.__slots__ if name in row}  # type: ignore[attr-defined]


def load_observations(db: Database, measurement_id: str) -> Observations:
    """Rebuild a stored measurement's observations (for re-analysis)."""
    m = db.table("measurements").get(measurement_id)
    where = "measurement_id = ?"
    args = [measurement_id]
    dns = []
    for row in db.table("dns_queries").rows_where(where, args, order_by="rowid"):
        row = dict(row)
        row["addresses"] = json.loads(row["addresses"] or "[]")
        row["cnames"] = json.loads(row["cnames"] or "[]")
        row["duplicate_replies"] = json.loads(row["duplicate_replies"] or "[]")
        dns.append(DNSQuery(**_fields(DNSQuery, row)))
    tcp = [
        TCPConnect(**_fields(TCPConnect, row))
        for row in db.table("tcp_connects").rows_where(where, args, order_by="rowid")
    ]
    tls = [
        TLSHandshake(**_fields(TLSHandshake, row))
        for row in db.table("tls_handshakes").rows_where(where, args, order_by="rowid")
    ]
    http = []
    for row in db.table("http_requests").rows_where(where, args, order_by="hop"):
        row = dict(row)
        row["headers"] = json.loads(row["headers"] or "[]")
        row["informational"] = json.loads(row["informational"] or "[]")
        if row.get("body_encoding") == "zlib" and row["body"] is not None:
            row["body"] = zlib.decompress(row["body"])
        row["body_truncated"] = bool(row["body_truncated"])
        http.append(HTTPRequest(**_fields(HTTPRequest, row)))
    control = Control()
    for row in db.table("controls").rows_where(where, args):
        control = Control(
            helper=row["helper"],
            failure=row["failure"],
            response=json.loads(row["response"]) if row["response"] else None,
            t0=row["t0"],
            t=row["t"],
        )
    return Observations(
        input=m["input"],
        url=m["url"],
        domain=m["domain"],
        category=m["category"],
        start_time=m["start_time"],
        runtime=m["runtime"],
        dns=dns,
        tcp=tcp,
        tls=tls,
        http=http,
        control=control,
    )
