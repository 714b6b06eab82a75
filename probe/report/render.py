"""A :class:`~probe.report.Report` as Markdown, HTML, CSV or JSON (pure: writes to a stream).

Every string that came from the network or a user (domains, URLs, page titles, failure
strings, evidence, AS names, filters) goes through the format's escape function here,
and nowhere else. Each starts from :func:`~probe.model.text.printable`, the one escaping
function: control characters (C0, DEL, C1) and bidi controls (U+202E makes ``gpj.exe`` read
as ``exe.jpg``) become visible escapes such as ``\\x1b`` and ``\\u202e``; the format's own
quoting comes on top:

* HTML: :func:`html_text` (``&<>"'`` as entities); the page also forbids scripts and every
  external load with a Content-Security-Policy, so it is one self-contained file, readable
  offline;
* Markdown: :func:`md_text` (HTML's entities for ``&<>``, a backslash before every character
  Markdown would read as inline markup, line breaks as spaces, so a cell stays a cell);
* CSV: :func:`csv_cell` (a text cell that a spreadsheet would run as a formula gets a
  leading ``'``);
* JSON: :func:`json_text` (JSON's own ``\\uXXXX`` escapes for what a terminal would act on,
  so that a report or a ``--json`` line printed to a terminal is safe, and parses to the
  same value).

The HTML report draws the timeline as inline SVG: a row per (target, network), bars coloured
by method, the time between the last blocked and the first accessible measurement hatched in
the method's colour (the block ended somewhere in it), as is a long time without measurement
inside a block; other periods without measurements are hatched grey (unknown, not
accessible), anomalies are diamonds; a legend and dates on the axis. Rows and bars carry
``data-`` attributes (domain, network, method, times) so a browser test can check the
drawing through the DOM.
"""

from __future__ import annotations

import csv
import datetime
import html
import json
import re
from collections.abc import Callable
from typing import Any, TextIO

from ..model.text import one_line, printable
from . import Report
from .timeline import Event, Network, iso

FORMATS = ("md", "html", "csv", "json")

METHOD_NAMES = {
    "dns": "DNS",
    "tcp_ip": "TCP/IP",
    "tls": "TLS (SNI)",
    "http-failure": "HTTP failure",
    "http-diff": "HTTP block page",
    "unknown": "unknown method",
}
#: Colours told apart with the common colour-vision deficiencies (Okabe–Ito palette).
METHOD_COLOURS = {
    "dns": "#D55E00",
    "tcp_ip": "#0072B2",
    "tls": "#E69F00",
    "http-failure": "#CC79A7",
    "http-diff": "#009E73",
    "unknown": "#555555",
}
MEASURED_COLOUR = "#DDEFD9"
#: Rows drawn in the chart at most (the tables list every network).
MAX_CHART_ROWS = 500
#: Evidence items and characters of one value shown per event.
MAX_EVIDENCE = 3
MAX_VALUE = 200

#: What Markdown (CommonMark, GFM tables) could read as markup inline: a link needs ``[``,
#: emphasis ``*``/``_``, code a backtick, a table cell ends at ``|``; ``<>&`` become entities.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


# ------------------------------------------------------------------ escaping


def html_text(value: Any) -> str:
    """Any value as HTML text (element content or a quoted attribute)."""
    return html.escape(printable(_str(value), newlines=True), quote=True)


def md_text(value: Any) -> str:
    """Any value as inline Markdown that renders as exactly that text (printable's)."""
    text = one_line(_str(value))
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", text)


#: What a spreadsheet reads as the start of a formula (CSV injection). The standard
#: mitigation (OWASP's) is a leading ``'``, which makes the cell text; a tab or carriage
#: return in front (the other characters OWASP names) cannot reach here: printable()
#: escapes them.
_FORMULA_STARTS = ("=", "+", "-", "@")


def csv_cell(value: Any) -> Any:
    """A value for a CSV cell: text printable, and a leading ``'`` on text a spreadsheet
    would evaluate as a formula (``=``, ``+``, ``-``, ``@`` first)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        return value
    text = printable(value)
    if text.lstrip(" ")[:1] in _FORMULA_STARTS:
        return "'" + text
    return text


#: Characters JSON's encoder leaves as they are that a terminal could act on (DEL, C1,
#: bidi controls, ...): anything outside printable ASCII is looked at.
_NOT_PLAIN = re.compile(r"[^\x20-\x7e\n]")


def json_text(value: Any, *, indent: int | None = None) -> str:
    """``value`` as JSON in which every character :func:`~probe.model.text.printable` would
    escape is a ``\\uXXXX`` escape (the encoder already escapes C0): any JSON reader gets
    the same value back, and no terminal acts on it. Text in any script stays readable."""
    text = json.dumps(value, ensure_ascii=False, indent=indent)
    return _NOT_PLAIN.sub(_json_escape, text)


def _json_escape(match: re.Match[str]) -> str:
    char = match.group()
    if printable(char) == char:
        return char
    code = ord(char)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # JSON spells a character beyond the BMP as a surrogate pair
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def _str(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


# ------------------------------------------------------------------ shared wording


def network_name(asn: str | None) -> str:
    return asn or "unknown network"


def when(t: int | None) -> str:
    if t is None:
        return ""
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: int) -> str:
    """``3 d 4 h``, ``2 h 5 min``, ``40 s``."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min"
    return f"{secs} s"


def plural(count: int, word: str) -> str:
    """``1 run``, ``2 runs``, ``3 anomalies``."""
    if count == 1:
        return f"{count} {word}"
    return f"{count} {word[:-1]}ies" if word.endswith("y") else f"{count} {word}s"


def methods_text(event: Event) -> str:
    return " → ".join(event.methods)


def state_text(net: Network) -> str:
    if net.state is None:
        return "unknown (no conclusive measurement)"
    t, verdict, blocking = net.state
    if verdict == "blocked":
        return f"blocked ({blocking}) at {when(t)} UTC"
    return f"accessible at {when(t)} UTC"


def _value(value: Any) -> str:
    if isinstance(value, list):
        text = ", ".join(_str(v) for v in value)
    else:
        text = _str(value)
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"


def _facts(side: Any) -> str:
    if not isinstance(side, dict) or not side:
        return "-"
    return "; ".join(f"{key}: {_value(value)}" for key, value in side.items() if value is not None)


def evidence_rows(detail: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(finding, step, what we saw, what the control saw) for the deciding evidence."""
    rows = []
    for item in (detail.get("evidence") or [])[:MAX_EVIDENCE]:
        if isinstance(item, dict):
            rows.append(
                (
                    _str(item.get("finding")),
                    _str(item.get("step")),
                    _facts(item.get("ours")),
                    _facts(item.get("control")),
                )
            )
    return rows


def render(report: Report, fmt: str, out: TextIO) -> None:
    """Write ``report`` to ``out`` as ``fmt`` (one of :data:`FORMATS`)."""
    writers: dict[str, Callable[[Report, TextIO], None]] = {
        "md": write_markdown,
        "html": write_html,
        "csv": write_csv,
        "json": write_json,
    }
    writers[fmt](report, out)


# ------------------------------------------------------------------ JSON and CSV


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


# ------------------------------------------------------------------ Markdown


def write_markdown(report: Report, out: TextIO) -> None:
    t = report.timeline
    w = out.write
    w("# Website blocking report\n\n")
    w(f"{_intro(report, md_text)}\n\n")
    w("## Summary by target and network\n\n")
    w("| Target | Network | Measurements | Blocked | Share blocked | Current state | Methods |\n")
    w("|---|---|---:|---:|---:|---|---|\n")
    for n in t.networks:
        methods = ", ".join(f"{m} ({c})" for m, c in n.methods.most_common())
        w(
            f"| {md_text(n.domain)} | {md_text(report.network(n.asn))} | {n.measurements} "
            f"| {n.counts['blocked']} | {n.blocked_share:.0%} | {md_text(state_text(n))} "
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
                f"| {md_text(e.domain)} | {md_text(report.network(e.asn))} "
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
                f"- {md_text(e.domain)} on {md_text(report.network(e.asn))}, {when(e.start)} UTC "
                f"({md_text(methods_text(e))}), {end}: {md_text(detail.get('reason') or '')}\n"
            )
    w(f"\n{md_text(_method_note(report))}\n")


def _md_event(report: Report, e: Event, w: Callable[[str], Any]) -> None:
    detail = report.detail(e)
    end = f"to {when(e.end)} UTC" if e.end else "ongoing"
    w(
        f"\n### {md_text(e.domain)} on {md_text(report.network(e.asn))}: {when(e.start)} UTC, "
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


def _intro(report: Report, escape: Callable[[Any], str]) -> str:
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


def _method_note(report: Report) -> str:
    o = report.timeline.options
    return (
        f"An event starts at the first blocked measurement of a network and ends at the first "
        f"accessible one after it; it needs {o.min_measurements} blocked measurements in a row "
        f"or {o.min_vantages} vantages agreeing. Inconclusive and down measurements neither "
        f"start, end nor split an event. A time without measurements is unknown, never "
        f"assumed accessible; in the chart, gaps longer than {duration(o.max_gap)} are hatched."
    )


# ------------------------------------------------------------------ HTML

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;
max-width:1180px;padding:0 1em;color:#1d1d1f}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:1em 0;font-size:.92em}
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f5f5f7}td.n{text-align:right}
.meta{color:#555}.event{border-left:4px solid #999;padding:.2em 1em;margin:1.2em 0}
.event h3{margin:.2em 0;font-size:1.05em}.swatch{display:inline-block;width:.9em;height:.9em;
vertical-align:middle;margin-right:.3em;border-radius:2px}
figure{margin:1em 0;overflow-x:auto}svg text{font:12px system-ui,sans-serif;fill:#1d1d1f}
svg .axis text{fill:#555}.blocked{color:#b00020;font-weight:600}
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
    w(f'<p class="meta">{_intro(report, html_text)}</p>\n')
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
            f"<tr><td>{html_text(n.domain)}</td><td>{html_text(report.network(n.asn))}</td>"
            f'<td class="n">{n.measurements}</td><td class="n">{n.counts["blocked"]}</td>'
            f'<td class="n">{n.blocked_share:.0%}</td><td{state_class}>'
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
                f"<tr><td>{html_text(e.domain)}</td><td>{html_text(report.network(e.asn))}</td>"
                f"<td>{when(e.start)}</td><td>{html_text(methods_text(e))}</td>"
                f"<td>{then}</td><td>{html_text(detail.get('reason'))}</td></tr>\n"
            )
        w("</tbody>\n</table>\n")
    w(f'<h2>How to read this</h2>\n<p class="meta">{html_text(_method_note(report))}</p>\n')
    w("</body>\n</html>\n")


def _html_event(report: Report, e: Event, w: Callable[[str], Any]) -> None:
    detail = report.detail(e)
    colour = METHOD_COLOURS.get(e.methods[0] if e.methods else "unknown", "#555555")
    end = f"until {when(e.end)} UTC" if e.end else "ongoing"
    w(f'<section class="event" style="border-color:{colour}">\n')
    w(
        f"<h3>{html_text(e.domain)} on {html_text(report.network(e.asn))}: "
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


# ------------------------------------------------------------------ the SVG chart

LABEL_W, PLOT_W, ROW_H, BAR_H, TOP, RIGHT = 290, 820, 24, 14, 34, 20
_STEPS = (
    60,
    300,
    900,
    1800,
    3600,
    3 * 3600,
    6 * 3600,
    12 * 3600,
    86400,
    2 * 86400,
    7 * 86400,
    14 * 86400,
    30 * 86400,
    91 * 86400,
    182 * 86400,
    365 * 86400,
)


class _Scale:
    def __init__(self, first: int, last: int) -> None:
        if last - first < 60:
            first, last = first - 30, last + 30
        pad = (last - first) * 0.01
        self.t0 = first - pad
        self.t1 = last + pad

    def x(self, t: float) -> float:
        return LABEL_W + (t - self.t0) / (self.t1 - self.t0) * PLOT_W

    def ticks(self) -> tuple[int, list[int]]:
        span = self.t1 - self.t0
        step = next((s for s in _STEPS if span / s <= 8), _STEPS[-1])
        first = int(-(-self.t0 // step) * step)
        return step, list(range(first, int(self.t1) + 1, step))


def write_chart(report: Report, out: TextIO) -> None:
    """The timeline as inline SVG: one row per (target, network)."""
    t = report.timeline
    w = out.write
    if t.first is None or t.last is None:
        w("<p>No measurements.</p>\n")
        return
    networks = t.networks[:MAX_CHART_ROWS]
    scale = _Scale(t.first, t.last)
    by_network: dict[tuple[str, str | None], list[Event]] = {}
    for e in (*t.events, *t.anomalies):
        by_network.setdefault((e.domain, e.asn), []).append(e)
    legend_y = TOP + ROW_H * len(networks) + 16
    height = legend_y + 40
    width = LABEL_W + PLOT_W + RIGHT
    w(
        f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="Block events per target and network over time">\n'
    )
    w(
        '<defs><pattern id="unknown" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="6" height="6" fill="#f2f2f2"/>'
        '<line x1="0" y1="0" x2="0" y2="6" stroke="#c8c8c8" stroke-width="2"/></pattern>'
    )
    for method, colour in METHOD_COLOURS.items():
        w(
            f'<pattern id="ending-{method}" width="6" height="6" patternUnits="userSpaceOnUse" '
            f'patternTransform="rotate(45)"><rect width="6" height="6" fill="#ffffff"/>'
            f'<line x1="0" y1="0" x2="0" y2="6" stroke="{colour}" stroke-width="2.5"/>'
            "</pattern>"
        )
    w("</defs>\n")
    _axis(scale, len(networks), w)
    for index, net in enumerate(networks):
        _row(scale, index, net, by_network.get((net.domain, net.asn), []), report.network, w)
    _legend(legend_y, w)
    if len(t.networks) > len(networks):
        w(
            f'<text x="{LABEL_W}" y="{height - 4}">{len(t.networks) - len(networks)} more '
            f"target–network pairs are in the tables below, not drawn.</text>\n"
        )
    w("</svg>\n")


def _axis(scale: _Scale, rows: int, w: Callable[[str], Any]) -> None:
    step, ticks = scale.ticks()
    fmt = "%Y-%m-%d" if step >= 86400 else "%m-%d %H:%M"
    bottom = TOP + ROW_H * rows
    w('<g class="axis">\n')
    for tick in ticks:
        x = scale.x(tick)
        label = datetime.datetime.fromtimestamp(tick, datetime.UTC).strftime(fmt)
        w(
            f'<line x1="{x:.1f}" y1="{TOP - 6}" x2="{x:.1f}" y2="{bottom}" stroke="#e2e2e2"/>'
            f'<text class="tick" x="{x:.1f}" y="{TOP - 10}" text-anchor="middle" '
            f'data-time="{iso(tick)}">{label}</text>\n'
        )
    w(f'<text x="{LABEL_W + PLOT_W}" y="12" text-anchor="end">UTC</text>\n</g>\n')


def _rect(x0: float, x1: float, y: float, h: float, attrs: str, title: str) -> str:
    width = max(x1 - x0, 3.0)
    return (
        f'<rect x="{x0:.1f}" y="{y:.1f}" width="{width:.1f}" height="{h}" {attrs}>'
        f"<title>{html_text(title)}</title></rect>"
    )


def _row(
    scale: _Scale,
    index: int,
    net: Network,
    events: list[Event],
    network: Callable[[str | None], str],
    w: Callable[[str], Any],
) -> None:
    y = TOP + index * ROW_H
    bar_y = y + (ROW_H - BAR_H) / 2
    label = f"{net.domain} · {network(net.asn)}"
    short = label if len(label) <= 42 else label[:41] + "…"
    w(f'<g class="row" data-domain="{html_text(net.domain)}" data-asn="{html_text(net.asn)}">\n')
    w(
        f'<text x="{LABEL_W - 8}" y="{y + ROW_H / 2 + 4:.1f}" text-anchor="end">'
        f"<title>{html_text(label)}</title>{html_text(short)}</text>\n"
    )
    w(
        f'<rect class="nodata" x="{LABEL_W}" y="{bar_y:.1f}" width="{PLOT_W}" height="{BAR_H}" '
        f'fill="url(#unknown)"><title>no measurement: unknown</title></rect>\n'
    )
    start = net.first
    for gap_from, gap_to in [*net.gaps, (net.last, net.last)]:
        w(
            _rect(
                scale.x(start),
                scale.x(gap_from),
                bar_y,
                BAR_H,
                f'class="measured" fill="{MEASURED_COLOUR}"',
                f"measured {when(start)} to {when(gap_from)} UTC",
            )
        )
        start = gap_to
    w("\n")
    for e in events:
        if e.kind == "anomaly":
            x = scale.x(e.start)
            cy = y + ROW_H / 2
            w(
                f'<path class="anomaly" data-time="{iso(e.start)}" d="M{x:.1f} {cy - 6:.1f} '
                f'L{x + 5:.1f} {cy:.1f} L{x:.1f} {cy + 6:.1f} L{x - 5:.1f} {cy:.1f} Z" '
                f'fill="#222"><title>{html_text(_anomaly_title(e))}</title></path>\n'
            )
            continue
        phases = e.phases
        for i, phase in enumerate(phases):
            until = phases[i + 1].start if i + 1 < len(phases) else e.last_blocked
            colour = METHOD_COLOURS.get(phase.blocking, METHOD_COLOURS["unknown"])
            attrs = (
                f'class="bar" data-blocking="{html_text(phase.blocking)}" '
                f'data-start="{iso(phase.start)}" data-end="{iso(e.end) or ""}" '
                f'fill="{colour}"'
            )
            title = (
                f"{net.domain} on {network(net.asn)}: blocked by "
                f"{METHOD_NAMES.get(phase.blocking, phase.blocking)} from {when(phase.start)} "
                f"UTC ({phase.measurements} measurements)"
            )
            w(_rect(scale.x(phase.start), scale.x(until), bar_y, BAR_H, attrs, title))
        for gap_from, gap_to in net.gaps:
            if e.start <= gap_from and gap_to <= e.last_blocked:
                method = next((p.blocking for p in reversed(phases) if p.start <= gap_from), "")
                pattern = method if method in METHOD_COLOURS else "unknown"
                w(
                    _rect(
                        scale.x(gap_from),
                        scale.x(gap_to),
                        bar_y,
                        BAR_H,
                        f'class="gap" data-blocking="{html_text(method)}" '
                        f'fill="url(#ending-{pattern})"',
                        f"no measurement from {when(gap_from)} to {when(gap_to)} UTC: blocked "
                        "before and after, unknown in between",
                    )
                )
        if e.end is not None:
            method = phases[-1].blocking if phases else "unknown"
            pattern = method if method in METHOD_COLOURS else "unknown"
            w(
                _rect(
                    scale.x(e.last_blocked),
                    scale.x(e.end),
                    bar_y,
                    BAR_H,
                    f'class="ending" data-blocking="{html_text(method)}" '
                    f'fill="url(#ending-{pattern})"',
                    f"the block ended between {when(e.last_blocked)} and {when(e.end)} UTC "
                    "(no conclusive measurement in between)",
                )
            )
        w("\n")
    w("</g>\n")


def _anomaly_title(e: Event) -> str:
    then = f"accessible again at {when(e.end)} UTC" if e.end else "not yet confirmed"
    return f"isolated blocked measurement ({methods_text(e)}) at {when(e.start)} UTC, {then}"


def _legend(y: int, w: Callable[[str], Any]) -> None:
    items: list[tuple[str, str]] = [
        (f'fill="{colour}"', METHOD_NAMES[method])
        for method, colour in METHOD_COLOURS.items()
        if method != "unknown"
    ]
    items += [
        (f'fill="{MEASURED_COLOUR}"', "measured, not blocked"),
        ('fill="url(#ending-dns)"', "not measured during or at the end of a block"),
        ('fill="url(#unknown)"', "no measurement (unknown)"),
    ]
    w(f'<g class="legend" transform="translate({LABEL_W},{y})">\n')
    x = line = 0
    for attrs, text in items:
        room = 40 + 7 * len(text)
        if x + room > PLOT_W:
            x, line = 0, line + 18
        w(
            f'<rect x="{x}" y="{line}" width="14" height="12" {attrs} stroke="#999" '
            f'stroke-width=".5"/><text x="{x + 19}" y="{line + 11}">{html_text(text)}</text>\n'
        )
        x += room
    w(
        f'<path d="M{x + 5} {line} L{x + 10} {line + 6} L{x + 5} {line + 12} L{x} {line + 6} Z" '
        f'fill="#222"/><text x="{x + 16}" y="{line + 11}">anomaly</text>\n</g>\n'
    )
