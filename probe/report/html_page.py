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
    duration,
    evidence_rows,
    methods_text,
    plural,
    share_text,
    state_text,
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
    w(f"<title>Website blocking report</title>\n<style>{_CSS}</style>\n</head>\n<body>\n")
    w("<h1>Website blocking report</h1>\n")
    w(f'<p class="meta">{intro(report, html_text)}</p>\n')
    w("<h2>Timeline</h2>\n<figure>\n")
    write_chart(report, out)
    w("</figure>\n")
    w(
        "<h2>Summary by target and network</h2>\n<table>\n<thead><tr><th>Target</th>"
        "<th>Network</th><th>Measurements</th><th>Blocked</th><th>Share blocked</th>"
        "<th>Current state</th><th>Methods</th></tr></thead>\n<tbody>\n"
    )
    for n in t.networks:
        methods = ", ".join(f"{m} ({c})" for m, c in n.methods.most_common())
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
        w(f" Failures: {html_text(', '.join(e.failures))}.")
    w("</p>\n")
    if detail:
        w(
            f"<p>First blocked measurement: <code>{html_text(detail.get('url'))}</code> "
            f"({html_text(e.first_measurement)}). {html_text(detail.get('reason'))}</p>\n"
        )
        rows = evidence_rows(detail)
        if rows:
            w(
                "<table>\n<thead><tr><th>Step</th><th>Finding</th><th>We saw</th>"
                "<th>The control saw</th></tr></thead>\n<tbody>\n"
            )
            for finding, step, ours, control in rows:
                w(
                    f"<tr><td>{html_text(step)}</td><td>{html_text(finding)}</td>"
                    f"<td>{html_text(ours)}</td><td>{html_text(control)}</td></tr>\n"
                )
            w("</tbody>\n</table>\n")
    w("</section>\n")
