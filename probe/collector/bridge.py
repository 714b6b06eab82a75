"""Everything the collector and the uploader use of the OONI format and the timeline code
(issue 10's modules), in one place, so a change there is adapted here only.

* :func:`export_measurement`: one measurement of a volunteer's SQLite database as the OONI
  JSON that ``probe export --format ooni`` writes (the upload's payload);
* :func:`import_measurement`: an uploaded OONI measurement read back into our observations
  (:func:`probe.ooni.measurement.from_ooni`), for our analysis to judge;
* :func:`timeline_lines` and :func:`write_report`: the one timeline implementation
  (:mod:`probe.report.timeline`) fed by the collector's PostgreSQL reader, written exactly as
  ``probe timeline --json`` and ``probe report`` write it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from sqlite_utils import Database

from .. import __version__
from ..errors import OONIFormatError as FormatError
from ..ooni.measurement import Imported, Provenance, from_ooni, to_ooni
from ..report import MeasurementSummary, Options, build_report, timeline
from ..report.render import FORMATS, json_text, render
from ..store.research import verdict_from_row
from ..store.sqlite import load_observations

__all__ = [
    "FORMATS",
    "FormatError",
    "Imported",
    "MeasurementSummary",
    "Options",
    "export_measurement",
    "import_measurement",
    "summary",
    "timeline_lines",
    "write_report",
]


def export_measurement(db: Database, measurement_id: str, vantage_name: str | None) -> Any:
    """The stored measurement as OONI JSON (a dict), as ``probe export --format ooni`` has it.

    ``vantage_name`` is the volunteer's name for the vantage (config ``vantage``), used when
    the database has none recorded."""
    row = db.table("measurements").get(measurement_id)
    run = _one(db, "select * from runs where id = ?", [row["run_id"]]) or {"id": row["run_id"]}
    vantage = _one(db, "select * from vantages where id = ?", [run.get("vantage_id")]) or {}
    name = vantage.get("name") or (vantage_name if vantage.get("kind") == "local" else None)
    provenance = Provenance(
        measurement_id=measurement_id,
        run_id=run["id"],
        run_started_at=run.get("started_at"),
        probe_asn=row["probe_asn"] or run.get("probe_asn"),
        probe_cc=row["probe_cc"] or run.get("probe_cc"),
        vantage_id=vantage.get("id"),
        vantage_name=name,
        software_version=run.get("software_version") or __version__,
        probe_network_name=run.get("probe_network_name"),
    )
    return to_ooni(load_observations(db, measurement_id), verdict_from_row(row), provenance)


def _one(db: Database, sql: str, args: list[Any]) -> dict[str, Any] | None:
    cursor = db.execute(sql, args)
    found = cursor.fetchone()
    if found is None:
        return None
    return dict(zip([c[0] for c in cursor.description], found, strict=True))


@dataclass(frozen=True, slots=True)
class Received:
    """An uploaded measurement as the collector stores it (before our analysis)."""

    imported: Imported
    measurement_id: str  # the idempotency key: the probe's id, else derived from OONI's
    run_id: str
    vantage_id: str | None
    submitted_verdict: dict[str, Any]  # what the sender said (ours or OONI's words)
    probe_network_name: str | None  # the network's name, as the sender's run recorded it


def import_measurement(content: Any) -> Received:
    """An uploaded measurement read back; raises :data:`FormatError` naming the bad field."""
    imported = from_ooni(content)
    keys = content.get("test_keys") or {}
    submitted = {
        key: keys.get(key)
        for key in ("blocking", "accessible", "x_probe_verdict", "x_probe_blocking")
        if key in keys
    }
    return Received(
        imported=imported,
        measurement_id=imported.stored_measurement_id,
        run_id=imported.stored_run_id,
        vantage_id=imported.vantage_id,
        submitted_verdict=submitted,
        probe_network_name=imported.probe_network_name,
    )


def summary(row: tuple[Any, ...]) -> MeasurementSummary:
    """A timeline record from a row in :class:`MeasurementSummary`'s field order."""
    return MeasurementSummary._make(row)


def timeline_lines(
    summaries: Iterable[MeasurementSummary], options: Options, *, anomalies: bool
) -> Iterator[str]:
    """``probe timeline --json``'s lines (one JSON object per event, anomalies after)."""
    result = timeline(summaries, options)
    for event in [*result.events, *(result.anomalies if anomalies else [])]:
        yield json_text(event.to_dict()) + "\n"  # escaped: names and reasons are network text


def write_report(
    summaries: Iterable[MeasurementSummary],
    details_of: Callable[[Iterable[str]], dict[str, dict[str, Any]]],
    out: TextIO,
    *,
    fmt: str,
    generated_at: str,
    filters: dict[str, Any],
    options: Options,
    network_names: dict[str, str],
) -> None:
    """``probe report --format FMT``'s output."""
    report = build_report(
        summaries,
        details_of,
        generated_at=generated_at,
        filters=filters,
        options=options,
        network_names=network_names,
    )
    render(report, fmt, out)
