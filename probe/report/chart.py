"""The timeline chart as inline SVG that scales to its container, and its legend as HTML
that wraps (see :mod:`probe.report.render`).

Each row draws, over a hatched grey "unknown" ground, the network's periods by state
(:attr:`~probe.report.timeline.Network.periods`): accessible, down only and inconclusive
only each with their own fill and pattern, so a time when nothing conclusive was measured is
never drawn as "not blocked"; a period lasts to the next period's first measurement unless
no measurement came for longer than ``max_gap`` (unknown). Block events are drawn over them
by method, anomalies as diamonds."""

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

#: How each non-blocked period state is drawn: the fill, and the legend's words.
STATE_STYLES = {
    "accessible": (MEASURED_COLOUR, "accessible (measured, not blocked)"),
    "down": ("url(#state-down)", "down only (failed for the control too)"),
    "inconclusive": ("url(#state-inconclusive)", "inconclusive only"),
    "mixed": ("url(#state-mixed)", "several states (too many changes to draw)"),
}
#: The legend's words for a time without measurement, and for a block's unknown end.
UNKNOWN_TEXT = "no measurement (unknown)"
ENDING_TEXT = "block ending or not measured during a block"
ANOMALY_TEXT = "isolated blocked measurement (anomaly)"

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
    """The timeline as inline SVG, one row per (target, network), then its legend."""
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
    height = TOP + ROW_H * len(networks) + 6
    width = LABEL_W + PLOT_W + RIGHT
    # No width or height: the viewBox scales the drawing to the figure's width (CSS).
    w(
        f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" '
        f'viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="Block events per target and network over time">\n'
    )
    _defs(w)
    _axis(scale, len(networks), w)
    max_gap = t.options.max_gap
    for index, net in enumerate(networks):
        events = by_network.get((net.input, net.asn), [])
        _row(scale, index, net, events, report.network, max_gap, w)
    w("</svg>\n")
    states = {state for net in networks for _, _, state in net.periods}
    _legend("mixed" in states, w)
    if len(t.networks) > len(networks):
        w(
            f'<p class="meta">{len(t.networks) - len(networks)} more target–network pairs are '
            "in the tables below, not drawn.</p>\n"
        )


def _defs(w: Callable[[str], Any]) -> None:
    def hatch(name: str, ground: str, mark: str) -> str:
        return (
            f'<pattern id="{name}" width="6" height="6" patternUnits="userSpaceOnUse" '
            f'patternTransform="rotate(45)"><rect width="6" height="6" fill="{ground}"/>'
            f"{mark}</pattern>"
        )

    w("<defs>")
    w(hatch("unknown", "#f2f2f2", '<line x1="0" y1="0" x2="0" y2="6" stroke="#c8c8c8" '
            'stroke-width="2"/>'))  # fmt: skip
    for method, colour in METHOD_COLOURS.items():
        line = f'<line x1="0" y1="0" x2="0" y2="6" stroke="{colour}" stroke-width="2.5"/>'
        w(hatch(f"ending-{method}", "#ffffff", line))
    # Told apart by their marks as well as their colours: dots, stripes, a cross.
    w(
        '<pattern id="state-down" width="5" height="5" patternUnits="userSpaceOnUse">'
        '<rect width="5" height="5" fill="#E6DEF2"/>'
        '<circle cx="2.5" cy="2.5" r="1.2" fill="#5E4B8B"/></pattern>'
        '<pattern id="state-inconclusive" width="6" height="6" patternUnits="userSpaceOnUse">'
        '<rect width="6" height="6" fill="#FFF3C4"/>'
        '<line x1="0" y1="3" x2="6" y2="3" stroke="#A67C00" stroke-width="1.4"/></pattern>'
        '<pattern id="state-mixed" width="6" height="6" patternUnits="userSpaceOnUse">'
        '<rect width="6" height="6" fill="#D0D0D0"/>'
        '<path d="M0 0L6 6M6 0L0 6" stroke="#777" stroke-width=".8"/></pattern>'
    )
    w("</defs>\n")


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
    max_gap: int,
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
    blocks = [e for e in events if e.kind == "event"]
    # Layers, lowest first: a block's unknown end, the periods by state (a down-only period
    # after the last blocked measurement shows through), the blocks, then the anomalies.
    for e in blocks:
        _ending(scale, bar_y, e, w)
    _periods(scale, bar_y, net, max_gap, w)
    for e in blocks:
        _block(scale, bar_y, net, e, network, w)
    for e in events:
        if e.kind == "anomaly":
            x = scale.x(e.start)
            cy = y + ROW_H / 2
            w(
                f'<path class="anomaly" data-time="{iso(e.start)}" d="M{x:.1f} {cy - 6:.1f} '
                f'L{x + 5:.1f} {cy:.1f} L{x:.1f} {cy + 6:.1f} L{x - 5:.1f} {cy:.1f} Z" '
                f'fill="#222"><title>{html_text(_anomaly_title(e))}</title></path>\n'
            )
    w("</g>\n")


def _periods(
    scale: _Scale, bar_y: float, net: Network, max_gap: int, w: Callable[[str], Any]
) -> None:
    """Every period but the blocked ones (drawn by their event, or a diamond), each lasting
    to the next period's first measurement when that came within ``max_gap``."""
    periods = net.periods
    # Accessible first: a short down or inconclusive period drawn wider than it lasted (the
    # least width a reader sees) then stays on top, never hidden under "accessible".
    order = sorted(range(len(periods)), key=lambda i: periods[i][2] != "accessible")
    for i in order:
        start, last, state = periods[i]
        if state not in STATE_STYLES:
            continue
        until = last
        if i + 1 < len(periods) and periods[i + 1][0] - last <= max_gap:
            until = periods[i + 1][0]
        fill, words = STATE_STYLES[state]
        title = f"{words.split(' (')[0]}: measured {when(start)} to {when(last)} UTC"
        w(
            _rect(
                scale.x(start),
                scale.x(until),
                bar_y,
                BAR_H,
                f'class="period measured {state}" data-state="{state}" '
                f'data-start="{iso(start)}" data-end="{iso(until)}" fill="{fill}"',
                title,
            )
        )
    w("\n")


def _ending(scale: _Scale, bar_y: float, e: Event, w: Callable[[str], Any]) -> None:
    if e.end is None:
        return
    method = e.phases[-1].blocking if e.phases else "unknown"
    pattern = method if method in METHOD_COLOURS else "unknown"
    w(
        _rect(
            scale.x(e.last_blocked),
            scale.x(e.end),
            bar_y,
            BAR_H,
            f'class="ending" data-blocking="{html_text(method)}" fill="url(#ending-{pattern})"',
            f"the block ended between {when(e.last_blocked)} and {when(e.end)} UTC "
            "(no conclusive measurement in between)",
        )
        + "\n"
    )


def _block(
    scale: _Scale,
    bar_y: float,
    net: Network,
    e: Event,
    network: Callable[[str | None], str],
    w: Callable[[str], Any],
) -> None:
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
                    f"no conclusive measurement from {when(gap_from)} to {when(gap_to)} UTC: "
                    "blocked before and after, unknown in between",
                )
            )
    w("\n")


def _anomaly_title(e: Event) -> str:
    then = f"accessible again at {when(e.end)} UTC" if e.end else "not yet confirmed"
    return f"isolated blocked measurement ({methods_text(e)}) at {when(e.start)} UTC, {then}"


def _swatch(inner: str) -> str:
    # A tiny SVG of its own: the page's patterns (by id) fill it as they fill the chart.
    return (
        '<svg class="swatch" viewBox="0 0 14 12" width="14" height="12" aria-hidden="true">'
        f"{inner}</svg>"
    )


def _legend(mixed: bool, w: Callable[[str], Any]) -> None:
    """The legend as an HTML list (it wraps on a narrow screen): every method, every period
    state, the unknown, a block's unknown end and the anomaly."""
    box = '<rect width="14" height="12" fill="{}" stroke="#999" stroke-width=".5"/>'
    items: list[tuple[str, str, str]] = [
        (f"blocked-{method}", box.format(colour), f"blocked: {METHOD_NAMES[method]}")
        for method, colour in METHOD_COLOURS.items()
        if method != "unknown"
    ]
    items += [
        (state, box.format(fill), words)
        for state, (fill, words) in STATE_STYLES.items()
        if state != "mixed" or mixed
    ]
    items += [
        ("ending", box.format("url(#ending-dns)"), ENDING_TEXT),
        ("unknown", box.format("url(#unknown)"), UNKNOWN_TEXT),
        ("anomaly", '<path d="M7 0L12 6L7 12L2 6Z" fill="#222"/>', ANOMALY_TEXT),
    ]
    w('<ul class="legend">\n')
    for key, inner, words in items:
        w(f'<li data-legend="{key}">{_swatch(inner)}{html_text(words)}</li>\n')
    w("</ul>\n")
