"""A report as Markdown (CommonMark with GFM tables)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TextIO

from . import Report
from .escape import md_text
from .timeline import Event
from .wording import (
    NO_BODIES,
    connection_sentences,
    control_sentence,
    dns_sentence,
    duration,
    failure_text,
    headers_of,
    method_name,
    methodology,
    methods_text,
    network_rows,
    page_rows,
    plural,
    provenance_lines,
    redirects_sentence,
    sentences,
    share_text,
    state_text,
    text_of,
    vantage_rows,
    when,
)


def write_markdown(report: Report, out: TextIO) -> None:
    t = report.timeline
    w = out.write
    w(f"# {md_text(report.heading)}\n\n")
    w(f"{intro(report, md_text)}\n\n")
    _md_provenance(report, w)
    w("## Summary by target and network\n\n")
    w("| Target | Network | Measurements | Blocked | Share blocked | Current state | Methods |\n")
    w("|---|---|---:|---:|---:|---|---|\n")
    for n in t.networks:
        methods = ", ".join(f"{method_name(m)} ({c})" for m, c in n.methods.most_common())
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
        for e in t.anomalies:
            detail = report.detail(e)
            if detail:
                w(
                    f"\n### Isolated: {md_text(e.input)} on {md_text(report.network(e.asn))}, "
                    f"{when(e.start)} UTC\n\n"
                )
                _md_evidence(report, detail, w)
    w(f"\n{md_text(method_note(report))}\n")


def _md_provenance(report: Report, w: Callable[[str], Any]) -> None:
    about = report.about()
    w("## About this report\n\n")
    for line in provenance_lines(about, report.network):
        w(f"{md_text(line)}\n\n")
    rows = network_rows(about, report.network)
    if rows:
        w(
            "| Network | Vantages | Runs | Measurements | First (UTC) | Last (UTC) "
            "| Network's resolver in |\n|---|---:|---:|---:|---|---|---|\n"
        )
        for row in rows:
            w("| " + " | ".join(md_text(cell) for cell in row) + " |\n")
        w("\n")
    vantages = vantage_rows(about, report.network)
    if vantages:
        w("| Vantage | What it is | Networks | Runs | Measurements |\n|---|---|---|---:|---:|\n")
        for row in vantages:
            w("| " + " | ".join(md_text(cell) for cell in row) + " |\n")
        w("\n")
    w(f"**Method.** {md_text(methodology(about))}\n\n")


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
        w(f"- Failures: {md_text('; '.join(map(failure_text, e.failures)))}\n")
    if detail:
        w(f"\n#### First blocked measurement: {md_text(detail.get('url'))}\n\n")
        _md_evidence(report, detail, w)


def _md_evidence(report: Report, detail: dict[str, Any], w: Callable[[str], Any]) -> None:
    """A measurement's evidence: the analysis' sentences, then what was observed."""
    w(f"Measured {md_text(detail.get('start_time'))} UTC (reference {md_text(detail.get('id'))}).")
    for text in sentences(detail) or [detail.get("reason") or ""]:
        w(f" {md_text(text)}")
    w("\n\n")
    observed = detail.get("observed")
    if not isinstance(observed, dict):
        if report.provenance.get("bodies") is False:
            w(f"{md_text(NO_BODIES)}\n\n")
        return
    dns = dns_sentence(observed, report.network)
    if dns:
        w(f"- DNS: {md_text(dns)}\n")
    for text in connection_sentences(observed):
        w(f"- {md_text(text)}\n")
    redirects = redirects_sentence(observed)
    if redirects:
        w(f"- {md_text(redirects)}\n")
    w(f"- Control: {md_text(control_sentence(observed))}\n")
    rows = page_rows(observed)
    if rows:
        w("\n| | The page on this network | The page the test helper fetched |\n|---|---|---|\n")
        for fact, ours, theirs in rows:
            w(f"| {md_text(fact)} | {md_text(ours)} | {md_text(theirs)} |\n")
    headers = headers_of(observed)
    if headers:
        w("\nThe server's headers:\n\n")
        for name, value in headers:
            w(f"- {_lead(md_text(name))}: {md_text(value)}\n")
    lines = text_of(observed)
    if lines:
        w("\nThe first lines of its text:\n\n")
        for line in lines:
            w(f"> {_lead(md_text(line))}\n>\n")


#: What Markdown reads as a block at the start of a line (a heading, a quote, a list item,
#: a setext underline, a fence): escaped when a line starts with text from the network.
_BLOCK_START = re.compile(r"^(?:([#>+=-])|(\d{1,9})([.)]))")


def _lead(text: str) -> str:
    return _BLOCK_START.sub(lambda m: f"\\{m[1]}" if m[1] else f"{m[2]}\\{m[3]}", text, 1)


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
