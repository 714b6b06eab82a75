"""A report as one self-contained HTML page (no script, no external load), with the SVG
timeline chart."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TextIO

from . import Report
from .chart import write_chart
from .escape import html_text
from .markdown import intro, method_note
from .timeline import Event
from .wording import (
    METHOD_COLOURS,
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

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;
max-width:1180px;padding:0 1em;color:#1d1d1f;overflow-wrap:break-word}
h3,code{overflow-wrap:anywhere}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:1em 0;font-size:.92em;display:block;max-width:100%;
overflow-x:auto}
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f5f5f7}td.n{text-align:right}
.meta{color:#555}.event{border-left:4px solid #999;padding:.2em 1em;margin:1.2em 0}
.event h3{margin:.2em 0;font-size:1.05em}.swatch{display:inline-block;width:.9em;height:.9em;
vertical-align:middle;margin-right:.3em;border-radius:2px}
figure{margin:1em 0}svg.timeline{display:block;width:100%;height:auto}
svg text{font:12px system-ui,sans-serif;fill:#1d1d1f}
svg .axis text{fill:#555}.blocked{color:#b00020;font-weight:600}
.page-text{border-left:3px solid #ccc;margin:.6em 0;padding:.2em .8em;color:#333}
.headers td{font-family:ui-monospace,monospace;font-size:.9em}
ul.legend{display:flex;flex-wrap:wrap;gap:.3em 1.4em;list-style:none;margin:.6em 0 0;
padding:0;font-size:.88em}
ul.legend li{display:flex;align-items:center;min-width:0}
ul.legend svg.swatch{flex:none;width:14px;height:12px;margin-right:.4em;border-radius:0}
"""


def write_html(report: Report, out: TextIO) -> None:
    t = report.timeline
    w = out.write
    w('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n')
    w(
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">\n"
    )
    w('<meta name="viewport" content="width=device-width, initial-scale=1">\n')
    w(f"<title>{html_text(report.heading)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n")
    w(f"<h1>{html_text(report.heading)}</h1>\n")
    w(f'<p class="meta">{intro(report, html_text)}</p>\n')
    _html_provenance(report, w)
    w("<h2>Timeline</h2>\n<figure>\n")
    write_chart(report, out)
    w("</figure>\n")
    w(
        "<h2>Summary by target and network</h2>\n<table>\n<thead><tr><th>Target</th>"
        "<th>Network</th><th>Measurements</th><th>Blocked</th><th>Share blocked</th>"
        "<th>Current state</th><th>Methods</th></tr></thead>\n<tbody>\n"
    )
    for n in t.networks:
        methods = ", ".join(f"{method_name(m)} ({c})" for m, c in n.methods.most_common())
        state_class = ' class="blocked"' if n.current == "blocked" else ""
        w(
            f"<tr><td>{html_text(n.input)}</td><td>{html_text(report.network(n.asn))}</td>"
            f'<td class="n">{n.measurements}</td><td class="n">{n.counts["blocked"]}</td>'
            f"<td>{html_text(share_text(n))}</td><td{state_class}>"
            f"{html_text(state_text(n))}</td><td>{html_text(methods or '-')}</td></tr>\n"
        )
    w("</tbody>\n</table>\n<h2>Block events</h2>\n")
    if not t.events:
        w("<p>No block events.</p>\n")
    for e in t.events:
        _html_event(report, e, w)
    w("<h2>Anomalies</h2>\n")
    if not t.anomalies:
        w("<p>No isolated blocked measurements.</p>\n")
    else:
        w(
            "<table>\n<thead><tr><th>Target</th><th>Network</th><th>Time (UTC)</th>"
            "<th>Method</th><th>Then</th><th>Why</th></tr></thead>\n<tbody>\n"
        )
        for e in t.anomalies:
            detail = report.detail(e)
            then = f"accessible at {when(e.end)}" if e.end else "not yet confirmed"
            w(
                f"<tr><td>{html_text(e.input)}</td><td>{html_text(report.network(e.asn))}</td>"
                f"<td>{when(e.start)}</td><td>{html_text(methods_text(e))}</td>"
                f"<td>{then}</td><td>{html_text(detail.get('reason'))}</td></tr>\n"
            )
        w("</tbody>\n</table>\n")
        for e in t.anomalies:
            detail = report.detail(e)
            if detail:
                w(
                    f'<section class="event">\n<h3>Isolated: {html_text(e.input)} on '
                    f"{html_text(report.network(e.asn))}, {when(e.start)} UTC</h3>\n"
                )
                _html_evidence(report, detail, w)
                w("</section>\n")
    w(f'<h2>How to read this</h2>\n<p class="meta">{html_text(method_note(report))}</p>\n')
    w("</body>\n</html>\n")


def _html_event(report: Report, e: Event, w: Callable[[str], Any]) -> None:
    detail = report.detail(e)
    colour = METHOD_COLOURS.get(e.methods[0] if e.methods else "unknown", "#555555")
    end = f"until {when(e.end)} UTC" if e.end else "ongoing"
    w(f'<section class="event" style="border-color:{colour}">\n')
    w(
        f"<h3>{html_text(e.input)} on {html_text(report.network(e.asn))}: "
        f"{html_text(methods_text(e))}, from {when(e.start)} UTC, {end}</h3>\n<p>"
    )
    w(
        f"Last blocked measurement {when(e.last_blocked)} UTC. {e.measurements} blocked "
        f"measurements from {plural(e.vantages, 'vantage')} in {plural(e.runs, 'run')}; "
        f"{e.inconclusive} inconclusive inside; longest gap between measurements "
        f"{duration(e.longest_gap)}."
    )
    if e.blockpages:
        w(f" Block page fingerprints: {html_text(', '.join(e.blockpages))}.")
    if e.failures:
        w(f" Failures: {html_text('; '.join(map(failure_text, e.failures)))}.")
    w("</p>\n")
    if detail:
        w(f"<h4>First blocked measurement: <code>{html_text(detail.get('url'))}</code></h4>\n")
        _html_evidence(report, detail, w)
    w("</section>\n")


def _html_evidence(report: Report, detail: dict[str, Any], w: Callable[[str], Any]) -> None:
    """A measurement's evidence: the analysis' sentences, then what was observed."""
    w(
        f"<p>Measured {html_text(detail.get('start_time'))} UTC (reference "
        f"{html_text(detail.get('id'))})."
    )
    for text in sentences(detail) or [detail.get("reason") or ""]:
        w(f" {html_text(text)}")
    w("</p>\n")
    observed = detail.get("observed")
    if not isinstance(observed, dict):
        if report.provenance.get("bodies") is False:
            w(f'<p class="meta">{html_text(NO_BODIES)}</p>\n')
        return
    items = []
    dns = dns_sentence(observed, report.network)
    if dns:
        items.append(f"DNS: {dns}")
    items += connection_sentences(observed)
    redirects = redirects_sentence(observed)
    if redirects:
        items.append(redirects)
    items.append(f"Control: {control_sentence(observed)}")
    w("<ul>\n" + "".join(f"<li>{html_text(item)}</li>\n" for item in items) + "</ul>\n")
    rows = page_rows(observed)
    if rows:
        w(
            "<table>\n<thead><tr><th></th><th>The page on this network</th>"
            "<th>The page the test helper fetched</th></tr></thead>\n<tbody>\n"
        )
        for fact, ours, theirs in rows:
            w(
                f"<tr><th>{html_text(fact)}</th><td>{html_text(ours)}</td>"
                f"<td>{html_text(theirs)}</td></tr>\n"
            )
        w("</tbody>\n</table>\n")
    headers = headers_of(observed)
    if headers:
        w('<p>The server\'s headers:</p>\n<table class="headers">\n<tbody>\n')
        for name, value in headers:
            w(f"<tr><td>{html_text(name)}</td><td>{html_text(value)}</td></tr>\n")
        w("</tbody>\n</table>\n")
    lines = text_of(observed)
    if lines:
        w('<p>The first lines of its text:</p>\n<blockquote class="page-text">')
        w("<br>\n".join(html_text(line) for line in lines))
        w("</blockquote>\n")


def _html_provenance(report: Report, w: Callable[[str], Any]) -> None:
    about = report.about()
    w("<h2>About this report</h2>\n")
    for line in provenance_lines(about, report.network):
        w(f"<p>{html_text(line)}</p>\n")
    rows = network_rows(about, report.network)
    if rows:
        w(
            "<table>\n<thead><tr><th>Network</th><th>Vantages</th><th>Runs</th>"
            "<th>Measurements</th><th>First (UTC)</th><th>Last (UTC)</th>"
            "<th>Network's resolver in</th></tr></thead>\n<tbody>\n"
        )
        for row in rows:
            w("<tr>" + "".join(f"<td>{html_text(cell)}</td>" for cell in row) + "</tr>\n")
        w("</tbody>\n</table>\n")
    vantages = vantage_rows(about, report.network)
    if vantages:
        w(
            "<table>\n<thead><tr><th>Vantage</th><th>What it is</th><th>Networks</th>"
            "<th>Runs</th><th>Measurements</th></tr></thead>\n<tbody>\n"
        )
        for row in vantages:
            w("<tr>" + "".join(f"<td>{html_text(cell)}</td>" for cell in row) + "</tr>\n")
        w("</tbody>\n</table>\n")
    w(f'<p class="meta"><strong>Method.</strong> {html_text(methodology(about))}</p>\n')
