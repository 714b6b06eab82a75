"""Everything the collector and the uploader use of the OONI format and the timeline code
(issue 10's modules), in one place, so a change there is adapted here only.

* :func:`import_measurement`: an uploaded OONI measurement read back into our observations
  (:func:`probe.ooni.importing.from_ooni`), for our analysis to judge;
* :func:`timeline_lines` and :func:`write_report`: the one timeline implementation
  (:mod:`probe.report.timeline`) fed by the collector's PostgreSQL reader, written exactly as
  ``probe timeline --json`` and ``probe report`` write it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from ..errors import OONIFormatError as FormatError
from ..ooni.importing import Imported, from_ooni
from ..report import MeasurementSummary, Options, build_report, timeline
from ..report.escape import json_text
from ..report.render import FORMATS, render
from ..store.evidence import base_provenance

__all__ = [
    "FORMATS",
    "FormatError",
    "Imported",
    "MeasurementSummary",
    "Options",
    "import_measurement",
    "summary",
    "timeline_lines",
    "write_report",
]


@dataclass(frozen=True, slots=True)
class Received:
    """An uploaded measurement as the collector stores it (before our analysis)."""

    imported: Imported
    measurement_id: str  # the idempotency key: the probe's id, else derived from OONI's
    run_id: str
    vantage_id: str | None
    submitted_verdict: dict[str, Any]  # what the sender said (ours or OONI's words)
    probe_network_name: str | None  # the network's name, as the sender's run recorded it
    position: int  # the target's place in its run: ties of one second in the order measured


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
        position=imported.position,
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
    title: str | None = None,
) -> None:
    """``probe report --format FMT``'s output. The collector keeps the verdicts and their
    evidence, not the observations' page bodies nor the runs' settings: its report says so
    where a volunteer's shows the block page (``bodies`` False in its provenance)."""
    report = build_report(
        summaries,
        details_of,
        generated_at=generated_at,
        filters=filters,
        options=options,
        network_names=network_names,
        provenance=base_provenance() | {"source": "collector", "bodies": False},
        title=title,
    )
    render(report, fmt, out)
