"""Stored measurements as OONI measurement JSON: the one function ``probe export`` and
``probe upload`` both write with, so a file and an upload of one measurement are the same."""

from __future__ import annotations

from typing import Any

from sqlite_utils import Database

from ..ooni.export import Provenance, to_ooni
from .research import Stored, stored

#: What a run without a recorded version (an old or merged database) says it ran.
UNKNOWN_VERSION = "unknown"


def ooni_measurement(measurement: Stored, vantage_name: str | None) -> dict[str, Any]:
    """``measurement`` as OONI JSON (a dict). ``vantage_name`` is the volunteer's name for
    the vantage (config ``vantage``), used for the local vantage when the database has none."""
    vantage, run = measurement.vantage, measurement.run
    local = vantage.get("kind") == "local"
    provenance = Provenance(
        measurement_id=measurement.measurement_id,
        run_id=run["id"],
        run_started_at=run.get("started_at"),
        probe_asn=measurement.probe_asn,
        probe_cc=measurement.probe_cc,
        vantage_id=vantage.get("id"),
        vantage_name=vantage.get("name") or (vantage_name if local else None),
        software_version=run.get("software_version") or UNKNOWN_VERSION,
        probe_network_name=run.get("probe_network_name"),
        position=measurement.position,
    )
    content: dict[str, Any] = to_ooni(measurement.observations, measurement.verdict, provenance)
    return content


def export_measurement(
    db: Database, measurement_id: str, vantage_name: str | None
) -> dict[str, Any]:
    """One stored measurement as OONI JSON, by id (an upload's payload)."""
    return ooni_measurement(stored(db, measurement_id), vantage_name)
