"""Reports as data: JSON (one object) and CSV (one table: summaries, events, anomalies)."""

from __future__ import annotations

import csv
from typing import Any, TextIO

from . import Report
from .escape import csv_cell, json_text
from .timeline import Event, iso
from .wording import part, sentences


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
                    "observed",
                )
            }
            | {"evidence_text": sentences(detail)}
            if detail
            else None
        }

    return {
        "title": report.heading,
        "generated_at": report.generated_at,
        "provenance": report.about(),
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
    out.write(json_text(report_dict(report), outline=3) + "\n")


#: One table a spreadsheet can filter by its first column, ``section``: a ``summary`` row per
#: (URL measured, network), then an ``event`` row per block event and an ``anomaly`` row per
#: isolated blocked measurement. A column a section does not have is empty; a count means
#: the same within its section (``measurements`` of a summary: all; of an event: blocked).
CSV_COLUMNS = (
    "section",
    "input",
    "domain",
    "asn",
    "network_name",
    # summary
    "first",
    "last",
    "blocked",
    "conclusive",
    "down",
    "blocked_share",
    "current",
    "current_blocking",
    "current_since",
    "events",
    "anomalies",
    "methods",
    # both
    "measurements",
    "vantages",
    "inconclusive",
    # event and anomaly
    "start",
    "end",
    "last_blocked",
    "blocking",
    "runs",
    "longest_gap_seconds",
    "blockpages",
    "failures",
    "first_measurement",
    "url",
    "reason",
    "page_status",
    "page_title",
    "page_size",
    "page_sha256",
    "control_page_status",
    "control_page_title",
    "control_page_size",
    "dns_answer",
    "control_dns_answers",
)


def _observed(detail: dict[str, Any]) -> dict[str, Any]:
    """The key facts of the observed evidence as CSV cells (empty where not known)."""
    observed = detail.get("observed")
    if not isinstance(observed, dict):
        return {}
    page = part(observed, "page")
    control = part(observed, "control")
    theirs = part(control, "page")
    dns = part(observed, "dns")
    system = part(dns, "system")
    controls = [r for r in dns.get("resolvers") or [] if isinstance(r, dict)]
    if isinstance(dns.get("helper"), dict):
        controls.append(dns["helper"] | {"resolver": "test helper"})

    def answer(side: dict[str, Any]) -> str:
        addresses = [a for a in side.get("addresses") or [] if isinstance(a, str)]
        return " ".join(addresses) or str(side.get("failure") or "")

    return {
        "page_status": page.get("status"),
        "page_title": page.get("title"),
        "page_size": page.get("size"),
        "page_sha256": page.get("sha256"),
        "control_page_status": theirs.get("status"),
        "control_page_title": theirs.get("title"),
        "control_page_size": theirs.get("size"),
        "dns_answer": answer(system) if system else None,
        "control_dns_answers": "; ".join(f"{r.get('resolver')}: {answer(r)}" for r in controls)
        or None,
    }


def write_csv(report: Report, out: TextIO) -> None:
    """The summaries, events and anomalies as one table with a ``section`` column."""
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    t = report.timeline
    for n in t.networks:
        row = n.to_dict() | {
            "section": "summary",
            "methods": ";".join(f"{m}={c}" for m, c in n.methods.most_common()),
            "network_name": report.network_names.get(n.asn or ""),
        }
        writer.writerow([csv_cell(row.get(column)) for column in CSV_COLUMNS])
    for section, events in (("event", t.events), ("anomaly", t.anomalies)):
        for e in events:
            detail = report.detail(e)
            row = {
                **e.to_dict(),
                "section": section,
                "blocking": ">".join(e.methods),
                "methods": None,  # a summary's column; an event's methods are ``blocking``
                "blockpages": ";".join(e.blockpages),
                "failures": ";".join(e.failures),
                "url": detail.get("url"),
                "reason": detail.get("reason"),
                "network_name": report.network_names.get(e.asn or ""),
                **_observed(detail),
            }
            writer.writerow([csv_cell(row.get(column)) for column in CSV_COLUMNS])
