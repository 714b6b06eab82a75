"""What every report format says the same way: method names and colours, networks, times,
durations and the evidence rows."""

from __future__ import annotations

import datetime
from typing import Any

from .escape import plain
from .timeline import Event, Network

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
        text = ", ".join(plain(v) for v in value)
    else:
        text = plain(value)
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
                    plain(item.get("finding")),
                    plain(item.get("step")),
                    _facts(item.get("ours")),
                    _facts(item.get("control")),
                )
            )
    return rows


def share_text(net: Network) -> str:
    """The blocked share with what it counts: ``33%: 2 of 6 conclusive measurements blocked;
    2 inconclusive, 0 down`` (a bare percentage would hide what it leaves out)."""
    rest = f"{net.inconclusive} inconclusive, {net.counts['down']} down"
    if not net.conclusive:
        return f"no conclusive measurement; {rest}"
    return (
        f"{net.blocked_share:.0%}: {net.counts['blocked']} of "
        f"{plural(net.conclusive, 'conclusive measurement')} blocked; {rest}"
    )
