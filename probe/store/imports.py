"""Storing OONI measurements read by :mod:`probe.ooni.importing`, re-analysed by us.

Each imported measurement becomes a measurement of a run of its own report (OONI's
``report_id``: one probe session), on its ``probe_asn``/``probe_cc``, with the verdict *our*
analysis gave; what OONI said, its identity and the measurement as published go to
``ooni_imports``. Ids are derived from OONI's identity of the measurement, so importing the
same file twice adds nothing; a file that is probe's own export keeps the ids (measurement,
run, vantage) it was exported with, so it never duplicates a database merged later.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

from ..model.records import Verdict, utc_now
from ..ooni.format import OONI_VANTAGE_NAME
from ..ooni.importing import Imported
from .research import OONI_VANTAGE, local_vantage
from .sqlite import Store


@dataclass(frozen=True, slots=True)
class Stored:
    """Where an imported measurement went; ``added`` is False when it was already there."""

    measurement_id: str
    run_id: str
    added: bool


def store_import(
    db: Database, imported: Imported, verdict: Verdict, *, source: str, raw: Any
) -> Stored:
    """Write one imported measurement (with its run and vantage) in one transaction."""
    measurement_id = imported.stored_measurement_id
    run_id = imported.stored_run_id
    known = db.execute(
        "select measurement_id, (select run_id from measurements where id = measurement_id) "
        "from ooni_imports where uid = ?",
        [imported.uid],
    ).fetchone()
    if known is not None:
        return Stored(known[0], known[1], False)
    if db.execute("select 1 from measurements where id = ?", [measurement_id]).fetchone():
        return Stored(measurement_id, run_id, False)  # our own measurement, already here
    with db.atomic():
        vantage = _vantage(db, imported)
        db.table("runs").insert(
            {
                "id": run_id,
                "started_at": imported.test_start_time,
                "finished_at": imported.test_start_time,
                "status": "imported",
                "software_version": imported.software,
                "probe_asn": imported.probe_asn,
                "probe_cc": imported.probe_cc,
                "inputs": "[]",
                "settings": json.dumps(
                    {
                        "source": "ooni",
                        "report_id": imported.report_id,
                        "test_version": imported.test_version,
                    }
                ),
                "offline": 0,
                "targets": 0,
                "counts": "{}",
                "vantage_id": vantage,
                "probe_network_name": imported.probe_network_name,
            },
            ignore=True,
        )
        Store(db).save(
            run_id,
            imported.observations,
            verdict,
            probe_asn=imported.probe_asn,
            probe_cc=imported.probe_cc,
            measurement_id=measurement_id,
            position=imported.position,
        )
        (counts,) = db.execute("select counts from runs where id = ?", [run_id]).fetchone()
        tally = json.loads(counts or "{}")
        tally[verdict.verdict] = tally.get(verdict.verdict, 0) + 1
        db.execute(
            "update runs set targets = targets + 1, counts = ? where id = ?",
            [json.dumps(tally), run_id],
        )
        db.table("ooni_imports").insert(
            {
                "measurement_id": measurement_id,
                "uid": imported.uid,
                "report_id": imported.report_id,
                "source": source,
                "test_version": imported.test_version,
                "software": imported.software,
                "ooni_blocking": json.dumps(imported.ooni_blocking),
                "ooni_accessible": json.dumps(imported.ooni_accessible),
                "measurement": zlib.compress(json.dumps(raw).encode("utf-8")),
                "imported_at": utc_now(),
            }
        )
    return Stored(measurement_id, run_id, True)


def _vantage(db: Database, imported: Imported) -> str:
    """The vantage to file the run under: the exporting probe's, else OONI's."""
    if imported.vantage_id is not None:
        if imported.vantage_id != local_vantage(db):
            db.table("vantages").insert(
                {
                    "id": imported.vantage_id,
                    "name": imported.vantage_name,
                    "kind": "remote",
                    "added_at": utc_now(),
                },
                ignore=True,
            )
        return imported.vantage_id
    db.table("vantages").insert(
        {"id": OONI_VANTAGE, "name": OONI_VANTAGE_NAME, "kind": "ooni", "added_at": utc_now()},
        ignore=True,
    )
    return OONI_VANTAGE
