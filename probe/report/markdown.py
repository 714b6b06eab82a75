"""A report as Markdown (CommonMark with GFM tables)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TextIO

from . import Report
from .escape import md_text
from .timeline import Event
from .wording import duration, evidence_rows, methods_text, plural, share_text, state_text, when


def write_markdown(report: Report, out: TextIO) -> None:
    t = report.timeline
    w = out.write
    w("# Website blocking report\n\n")
    w(f"{intro(report, md_text)}\n\n")
    w("## Summary by target and network\n\n")
    w("| Target | Network | Measurements | Blocked | Share blocked | Current state | Methods |\n")
    w("|---|---|---:|---:|---:|---|---|\n")
    for n in t.networks:
        methods = ", ".join(f"{m} ({c})" for m, c in n.methods.most_common())
        w(
            f"| {md_text(n.input)} | {md_text(report.network(n.asn))} | {n.measurements} "
            f"| {n.counts['blocked']} | {md_text(share_text(n))} | {md_text(state_text(n))} "
            f"| {md_text(methods or '-')} |\n"
        )
    w("\n## Block events\n\n")
    if not t.events:
        w("No block events.\n")
    else:
        w(
            "| Target | Network | Method | Start (UTC) | End (UTC) | Measurements | Vantages "
            "| Runs | Longest gap |\n"
        )
        w("|---|---|---|---|---|---:|---:|---:|---|\n")
        for e in t.events:
            w(
                f"| {md_text(e.input)} | {md_text(report.network(e.asn))} "
                f"| {md_text(methods_text(e))} | {when(e.start)} "
                f"| {when(e.end) or 'ongoing'} | {e.measurements} | {e.vantages} | {e.runs} "
                f"| {duration(e.longest_gap)} |\n"
            )
        for e in t.events:
            _md_event(report, e, w)
    w("\n## Anomalies\n\n")
    if not t.anomalies:
        w("No isolated blocked measurements.\n")
    else:
        w(
            "Blocked measurements too few to make an event (an isolated one between accessible "
            "ones, or the latest, not yet confirmed):\n\n"
        )
        for e in t.anomalies:
            detail = report.detail(e)
            end = f"accessible again at {when(e.end)}" if e.end else "not yet confirmed"
            w(
                f"- {md_text(e.input)} on {md_text(report.network(e.asn))}, {when(e.start)} UTC "
                f"({md_text(methods_text(e))}), {end}: {md_text(detail.get('reason') or '')}\n"
            )
    w(f"\n{md_text(method_note(report))}\n")


def _md_event(report: Report, e: Event, w: Callable[[str], Any]) -> None:
    detail = report.detail(e)
    end = f"to {when(e.end)} UTC" if e.end else "ongoing"
    w(
        f"\n### {md_text(e.input)} on {md_text(report.network(e.asn))}: {when(e.start)} UTC, "
        f"{end}\n\n"
    )
    w(f"- Method: {md_text(methods_text(e))}\n")
    w(
        f"- Last blocked measurement: {when(e.last_blocked)} UTC; {e.measurements} blocked "
        f"measurements from {plural(e.vantages, 'vantage')} in {plural(e.runs, 'run')}, "
        f"{e.inconclusive} inconclusive; longest gap between measurements "
        f"{duration(e.longest_gap)}\n"
    )
    if e.blockpages:
        w(f"- Block page fingerprints: {md_text(', '.join(e.blockpages))}\n")
    if e.failures:
        w(f"- Failures: {md_text(', '.join(e.failures))}\n")
    if detail:
        w(
            f"- First blocked measurement: {md_text(detail.get('url'))} "
            f"(`{md_text(e.first_measurement)}`)\n"
        )
        w(f"- Why: {md_text(detail.get('reason'))}\n")
        for finding, step, ours, control in evidence_rows(detail):
            w(
                f"- Evidence ({md_text(step)}, {md_text(finding)}): we saw {md_text(ours)}; "
                f"the control saw {md_text(control)}\n"
            )


def intro(report: Report, escape: Callable[[Any], str]) -> str:
    t = report.timeline
    span = f" from {when(t.first)} to {when(t.last)} UTC" if t.first is not None else ""
    filters = ", ".join(f"{k}={v}" for k, v in report.filters.items() if v)
    text = (
        f"Generated {escape(report.generated_at)} from {plural(t.measurements, 'measurement')}"
        f"{span}; {plural(len(t.networks), 'target–network pair')}, "
        f"{plural(len(t.events), 'block event')}, {plural(len(t.anomalies), 'anomaly')}."
    )
    if filters:
        text += f" Filters: {escape(filters)}."
    return text


def method_note(report: Report) -> str:
    o = report.timeline.options
    return (
        f"An event starts at the first blocked measurement of a network and ends at the first "
        f"accessible one after it; it needs {o.min_measurements} blocked measurements in a row "
        f"or {o.min_vantages} vantages agreeing. Inconclusive and down measurements neither "
        f"start, end nor split an event. A time without measurements is unknown, never "
        f"assumed accessible; in the chart, gaps longer than {duration(o.max_gap)} are hatched."
    )
