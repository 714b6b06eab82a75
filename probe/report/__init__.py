"""Timelines and reports over stored measurements (pure: no I/O but the stream written to).

* :mod:`~probe.report.timeline`: block events per (domain, network) from a stream of
  :class:`~probe.model.records.MeasurementSummary` (the same code for SQLite and a
  collector's PostgreSQL);
* :mod:`~probe.report.render`: a :class:`Report` as Markdown, self-contained HTML (with an
  SVG timeline chart), CSV or JSON; everything that came from the network or a user is
  escaped for the format, and CSV cells a spreadsheet would run as formulas are neutralised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..model.records import MeasurementSummary
from .timeline import Event, Network, Options, Timeline, timeline

__all__ = [
    "Event",
    "MeasurementSummary",
    "Network",
    "Options",
    "Report",
    "Timeline",
    "build_report",
    "timeline",
]


@dataclass(slots=True)
class Report:
    """A timeline with, for each event and anomaly, the stored facts of the measurement that
    opened it (its URL, the reason in words and the evidence: what we saw, what the control
    saw), so a reader can check the finding."""

    generated_at: str  # ISO 8601 UTC
    filters: dict[str, Any]
    timeline: Timeline
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: AS number -> the network's name (from the runs), for labels.
    network_names: dict[str, str] = field(default_factory=dict)

    def detail(self, event: Event) -> dict[str, Any]:
        return self.details.get(event.first_measurement or "", {})

    def network(self, asn: str | None) -> str:
        """``AS8449 (ElCat)``, ``AS8449``, or ``unknown network``."""
        if asn is None:
            return "unknown network"
        name = self.network_names.get(asn)
        return f"{asn} ({name})" if name else asn


def build_report(
    summaries: Iterable[MeasurementSummary],
    details_of: Callable[[Iterable[str]], dict[str, dict[str, Any]]],
    *,
    generated_at: str,
    filters: dict[str, Any] | None = None,
    options: Options | None = None,
    network_names: dict[str, str] | None = None,
) -> Report:
    """The report over ``summaries``; ``details_of`` reads the stored facts of measurements
    by id (the store's :func:`~probe.store.research.measurement_details`)."""
    result = timeline(summaries, options)
    ids = [e.first_measurement for e in (*result.events, *result.anomalies)]
    details = details_of(i for i in ids if i)
    return Report(generated_at, filters or {}, result, details, network_names or {})
