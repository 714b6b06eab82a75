"""The volunteer's own results, read back: runs, one run or measurement in full, the store's
state, and pruning old observations. Every query here is served by an index, so it stays fast
on a database of a million measurements."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from ..errors import InputError
from .schema import stored_bytes

#: Step tables, each row tied to a measurement.
STEP_TABLES = ("dns_queries", "tcp_connects", "tls_handshakes", "http_requests", "controls")

_AGE = re.compile(r"^(\d+)\s*([hdw])$")


def parse_age(text: str) -> str:
    """``90d``, ``12h`` or ``2w`` as an SQLite modifier (``-90 days``); raises InputError."""
    match = _AGE.match(text.strip().lower())
    if not match:
        raise InputError(f"{text!r}: expected an age like 90d, 12h or 2w")
    number, unit = int(match.group(1)), match.group(2)
    hours = number * {"h": 1, "d": 24, "w": 24 * 7}[unit]
    return f"-{hours} hours"


def runs(db: Database, *, since: str | None = None, limit: int = 20) -> Iterator[dict[str, Any]]:
    """The newest runs first: each with its counts by verdict and how many were stored."""
    sql = "select * from runs"
    args: list[Any] = []
    if since is not None:
        sql += " where started_at >= ?"
        args.append(since)
    sql += " order by started_at desc limit ?"
    args.append(limit)
    cursor = db.execute(sql, args)
    names = [c[0] for c in cursor.description]
    for row in cursor.fetchall():
        yield _run_summary(db, dict(zip(names, row, strict=True)))


def _run_summary(db: Database, run: dict[str, Any]) -> dict[str, Any]:
    measured = db.execute(
        "select count(*) from measurements where run_id = ?", [run["id"]]
    ).fetchone()[0]
    counts = json.loads(run["counts"]) if run.get("counts") else {}
    if not counts and measured:
        counts = dict(
            db.execute(
                "select verdict, count(*) from measurements where run_id = ? group by verdict",
                [run["id"]],
            ).fetchall()
        )
    return {
        "id": run["id"],
        "started_at": run["started_at"],
        "finished_at": run["finished_at"],
        "status": run["status"],
        "probe_asn": run["probe_asn"],
        "probe_cc": run["probe_cc"],
        "targets": run["targets"],
        "measured": measured,
        "counts": counts,
    }


def find(db: Database, ident: str) -> tuple[str, str]:
    """("run" | "measurement", full id) for an id or an unambiguous prefix of 6+ characters."""
    ident = ident.strip().lower()
    if len(ident) < 6 or not re.fullmatch(r"[0-9a-f-]+", ident):
        raise InputError(f"{ident!r}: give a run or measurement id (at least 6 characters)")
    found: list[tuple[str, str]] = []
    for kind, table in (("run", "runs"), ("measurement", "measurements")):
        rows = db.execute(
            f"select id from {table} where id >= ? and id < ? limit 2", [ident, ident + "g"]
        ).fetchall()
        found += [(kind, r[0]) for r in rows]
    if not found:
        raise InputError(f"{ident!r}: no run or measurement with this id")
    if len(found) > 1:
        raise InputError(f"{ident!r}: more than one run or measurement starts so; give more")
    return found[0]


def run_detail(db: Database, run_id: str) -> dict[str, Any]:
    run = dict(db.table("runs").get(run_id))
    out = _run_summary(db, run)
    out["inputs"] = json.loads(run["inputs"] or "[]")
    out["settings"] = json.loads(run["settings"] or "{}")
    out["measurements"] = [
        {k: row[k] for k in ("id", "input", "verdict", "blocking", "failure", "blockpage")}
        for row in db.table("measurements").rows_where("run_id = ?", [run_id], order_by="position")
    ]
    return out


def measurement_detail(db: Database, measurement_id: str) -> dict[str, Any]:
    """Everything stored of one measurement: verdict, evidence and every step."""
    m = dict(db.table("measurements").get(measurement_id))
    m["evidence"] = json.loads(m.get("evidence") or "[]")
    where = "measurement_id = ?"
    steps: dict[str, Any] = {}
    for table in STEP_TABLES:
        rows = []
        for row in db.table(table).rows_where(where, [measurement_id], order_by="rowid"):
            row = dict(row)
            row.pop("measurement_id", None)
            if table == "http_requests":  # the body is bytes (`probe show --body`): its facts
                kept = stored_bytes(row.pop("body", None), row.get("body_encoding"))
                row["body_stored"] = kept is not None
                row["body_stored_length"] = None if kept is None else len(kept)
                row.pop("body_text", None)
            row.pop("raw", None)
            for key in ("addresses", "cnames", "headers", "duplicate_replies", "informational",
                        "response"):  # fmt: skip
                if isinstance(row.get(key), str):
                    row[key] = json.loads(row[key])
            rows.append(row)
        steps[table] = rows
    m["steps"] = steps
    return m


def status(db: Database, path: Path) -> dict[str, Any]:
    last = next(runs(db, limit=1), None)
    size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())
    count = db.execute("select count(*) from measurements").fetchone()[0]
    return {"last_run": last, "database": str(path), "bytes": size, "measurements": count}


def prune(db: Database, older_than: str, *, everything: bool = False) -> int:
    """Drop the observations (the steps) of measurements older than ``older_than`` (an SQLite
    modifier, :func:`parse_age`), keeping their verdicts, or the measurements too with
    ``everything``; then VACUUM. How many measurements were pruned."""
    # Milliseconds, as measurements' start times have them (model.records.measurement_time).
    at = "select strftime('%Y-%m-%d %H:%M:%f', 'now', ?)"
    cutoff = db.execute(at, [older_than]).fetchone()[0]
    ids = "select id from measurements where start_time <= ?"
    with db.atomic():
        if everything:
            for table in STEP_TABLES + ("reanalyses",):
                db.execute(f"delete from {table} where measurement_id in ({ids})", [cutoff])
            count = db.execute("delete from measurements where start_time <= ?", [cutoff]).rowcount
        else:
            ids += " and pruned = 0"
            for table in STEP_TABLES:
                db.execute(f"delete from {table} where measurement_id in ({ids})", [cutoff])
            count = db.execute(
                "update measurements set pruned = 1 where start_time <= ? and pruned = 0",
                [cutoff],
            ).rowcount
    try:
        db.execute("vacuum")
    except sqlite3.OperationalError:
        pass  # another process is reading; the space is reused anyway
    return count
