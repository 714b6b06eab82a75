"""The timeline chart as inline SVG (see :mod:`probe.report.render`)."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any, TextIO

from . import Report
from .escape import html_text
from .timeline import Event, Network, iso
from .wording import (
    MAX_CHART_ROWS,
    MEASURED_COLOUR,
    METHOD_COLOURS,
    METHOD_NAMES,
    methods_text,
    when,
)

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
        by_network.setdefault((e.input, e.asn), []).append(e)
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
        _row(scale, index, net, by_network.get((net.input, net.asn), []), report.network, w)
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
    label = f"{net.input} · {network(net.asn)}"
    short = label if len(label) <= 42 else label[:41] + "…"
    w(
        f'<g class="row" data-domain="{html_text(net.domain)}" data-input="{html_text(net.input)}" '
        f'data-asn="{html_text(net.asn)}">\n'
    )
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
                f"{net.input} on {network(net.asn)}: blocked by "
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
