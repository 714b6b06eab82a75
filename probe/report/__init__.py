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
from .timeline import Event, Network, Options, Timeline, iso, timeline

#: A report's title unless ``--title`` gives one.
DEFAULT_TITLE = "Website blocking report"

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
    #: Where the data came from (:func:`probe.store.evidence.provenance`; the collector's
    #: is smaller): completed from the timeline by :meth:`about`.
    provenance: dict[str, Any] = field(default_factory=dict)
    #: The report's title (``probe report --title``), else :data:`DEFAULT_TITLE`.
    title: str | None = None

    @property
    def heading(self) -> str:
        return self.title or DEFAULT_TITLE

    def detail(self, event: Event) -> dict[str, Any]:
        return self.details.get(event.first_measurement or "", {})

    def network(self, asn: str | None) -> str:
        """``AS8449 (ElCat)``, ``AS8449``, or ``unknown network``."""
        if asn is None:
            return "unknown network"
        name = self.network_names.get(asn)
        return f"{asn} ({name})" if name else asn

    def about(self) -> dict[str, Any]:
        """The provenance, with what the timeline itself knows where the store said nothing
        (the time range, the measurements per network)."""
        t = self.timeline
        about = dict(self.provenance)
        about.setdefault("first", iso(t.first))
        about.setdefault("last", iso(t.last))
        about.setdefault("measurements", t.measurements)
        if "networks" not in about:
            counts: dict[str | None, int] = {}
            for net in t.networks:
                counts[net.asn] = counts.get(net.asn, 0) + net.measurements
            about["networks"] = [
                {"asn": asn, "measurements": count} for asn, count in sorted(
                    counts.items(), key=lambda item: item[0] or ""
                )
            ]  # fmt: skip
        about["networks"] = [
            n | {"network_name": self.network_names.get(n.get("asn") or "")}
            for n in about["networks"]
        ]
        about["options"] = {
            "min_measurements": t.options.min_measurements,
            "min_vantages": t.options.min_vantages,
            "max_gap_seconds": t.options.max_gap,
        }
        return about


def build_report(
    summaries: Iterable[MeasurementSummary],
    details_of: Callable[[Iterable[str]], dict[str, dict[str, Any]]],
    *,
    generated_at: str,
    filters: dict[str, Any] | None = None,
    options: Options | None = None,
    network_names: dict[str, str] | None = None,
    provenance: dict[str, Any] | None = None,
    title: str | None = None,
) -> Report:
    """The report over ``summaries``; ``details_of`` reads the stored facts of measurements
    by id (the store's :func:`~probe.store.evidence.details`: the verdict, and what was
    observed: the page, the DNS answers, the connections, what the control saw; a store
    without the observations, as a collector, gives the verdict alone);
    ``provenance`` says where the data came from (:func:`~probe.store.evidence.provenance`)."""
    result = timeline(summaries, options)
    ids = [e.first_measurement for e in (*result.events, *result.anomalies)]
    details = details_of(i for i in ids if i)
    return Report(
        generated_at,
        filters or {},
        result,
        details,
        network_names or {},
        provenance or {},
        title or None,
    )
