"""Reports as data: JSON (one object) and CSV (one row per event and anomaly)."""

from __future__ import annotations

import csv
from typing import Any, TextIO

from . import Report
from .escape import csv_cell, json_text
from .timeline import Event, iso


def report_dict(report: Report) -> dict[str, Any]:
    """The whole report as one JSON-able object."""
    t = report.timeline

    def event(e: Event) -> dict[str, Any]:
        detail = report.detail(e)
        return e.to_dict() | {
            "detail": {
                key: detail.get(key)
                for key in (
                    "url",
                    "input",
                    "start_time",
                    "reason",
                    "evidence",
                    "blockpage",
                    "failure",
                    "dns_consistency",
                )
            }
            if detail
            else None
        }

    return {
        "generated_at": report.generated_at,
        "filters": report.filters,
        "options": {
            "min_measurements": t.options.min_measurements,
            "min_vantages": t.options.min_vantages,
            "max_gap_seconds": t.options.max_gap,
        },
        "measurements": t.measurements,
        "first": iso(t.first),
        "last": iso(t.last),
        "networks": [
            n.to_dict() | {"network_name": report.network_names.get(n.asn or "")}
            for n in t.networks
        ],
        "events": [event(e) for e in t.events],
        "anomalies": [event(e) for e in t.anomalies],
    }


def write_json(report: Report, out: TextIO) -> None:
    out.write(json_text(report_dict(report), indent=1) + "\n")


CSV_COLUMNS = (
    "input",
    "domain",
    "asn",
    "network_name",
    "start",
    "end",
    "last_blocked",
    "blocking",
    "measurements",
    "vantages",
    "runs",
    "inconclusive",
    "longest_gap_seconds",
    "blockpages",
    "failures",
    "first_measurement",
    "url",
    "reason",
)


def write_csv(report: Report, out: TextIO) -> None:
    """One row per event (anomalies are not events), with the timeline's fields."""
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for e in report.timeline.events:
        detail = report.detail(e)
        row = {
            **e.to_dict(),
            "blocking": ">".join(e.methods),
            "blockpages": ";".join(e.blockpages),
            "failures": ";".join(e.failures),
            "url": detail.get("url"),
            "reason": detail.get("reason"),
            "network_name": report.network_names.get(e.asn or ""),
        }
        writer.writerow([csv_cell(row.get(column)) for column in CSV_COLUMNS])
