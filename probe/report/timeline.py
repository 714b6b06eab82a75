"""Block events from a stream of measurements: the timeline (pure: no I/O, no clock).

:func:`timeline` reads :class:`MeasurementSummary` records, the few fields of a stored
measurement a timeline needs, and returns the block events per (URL measured, network AS
number), grouped by domain for reading: ``http://respublica.kg/`` blocked by a block page while
``https://respublica.kg/`` is reachable are two timelines, never one that flips:

* an **event** opens at the first blocked measurement and ends at the first accessible one
  after it (``end`` is None while the block goes on);
* it needs ``min_measurements`` blocked measurements in a row on that network, or
  ``min_vantages`` distinct vantages among them; a shorter run of blocked measurements is an
  **anomaly** (an isolated measurement between accessible ones, or an unconfirmed last one);
* inconclusive and down measurements (anything but blocked or accessible) neither open, end
  nor split an event: they are counted in it;
* a period without measurement is unknown, never assumed accessible: each event says how long
  its longest gap between conclusive measurements was, and each network keeps its gaps longer
  than ``max_gap`` (the report draws them as unknown);
* each network keeps its **periods**: runs of consecutive measurements of one state
  (blocked, accessible, down, inconclusive), a run split where no measurement came for
  longer than ``max_gap``, so the chart can tell a time when the site was only down, or only
  inconclusive, from a time it was accessible.

The input must come in time order *per (URL, network)* (they may interleave), ties within one
second in the order measured (run, then position in the run); memory holds one small state
per (URL, network) and the events, never the measurements, so the same code
serves a volunteer's SQLite database and a collector's PostgreSQL (each has its reader that
yields these records in order: :func:`probe.store.research.iter_summaries` for SQLite).
"""

from __future__ import annotations

import datetime
import functools
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..model.records import MeasurementSummary

#: At most this many method phases, block page ids and failure strings are kept per event.
MAX_PHASES = 100
MAX_DISTINCT = 10
#: At most this many unknown gaps are kept per network (the longest ones win).
MAX_GAPS = 200
#: At most this many periods by state are kept per network: past it, the shortest pairs of
#: neighbouring periods merge (into ``mixed`` when their states differ), in batches.
MAX_PERIODS = 300
#: The states a period can have; ``mixed`` only from merging (too many changes to keep).
PERIOD_STATES = ("blocked", "accessible", "down", "inconclusive", "mixed")
_MEASURED_STATES = frozenset(PERIOD_STATES[:4])


@dataclass(frozen=True, slots=True)
class Options:
    """When a run of blocked measurements is an event, and what counts as an unknown gap."""

    min_measurements: int = 2
    min_vantages: int = 2
    max_gap: int = 24 * 3600  # seconds without a conclusive measurement drawn as unknown


@dataclass(slots=True)
class Phase:
    """A stretch of an event with one method."""

    blocking: str
    start: int
    last: int
    measurements: int = 1


@dataclass(slots=True)
class Event:
    """A block event (or an anomaly: ``kind``) of one URL on one network."""

    kind: str  # "event" | "anomaly"
    domain: str
    input: str  # the URL measured
    asn: str | None
    start: int
    last_blocked: int
    end: int | None = None
    measurements: int = 0  # blocked measurements
    inconclusive: int = 0  # inconclusive or down measurements inside the event
    phases: list[Phase] = field(default_factory=list)
    vantage_ids: set[str | None] = field(default_factory=set)
    run_ids: set[str] = field(default_factory=set)
    blockpages: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    first_measurement: str | None = None
    last_measurement: str | None = None
    first_evidence: str | Sequence[Mapping[str, Any]] | None = None
    longest_gap: int = 0  # seconds between consecutive conclusive measurements

    @property
    def methods(self) -> list[str]:
        """The methods seen, in order of first appearance."""
        return list(dict.fromkeys(p.blocking for p in self.phases))

    @property
    def blocking(self) -> str | list[str]:
        """The method, or the methods in order when it changed (``["dns", "tls"]``)."""
        methods = self.methods
        return methods[0] if len(methods) == 1 else methods

    @property
    def vantages(self) -> int:
        return len(self.vantage_ids)

    @property
    def runs(self) -> int:
        return len(self.run_ids)

    def evidence(self) -> list[dict[str, Any]]:
        """The first blocked measurement's evidence, parsed (the deciding comparison first)."""
        return parse_evidence(self.first_evidence)

    def to_dict(self) -> dict[str, Any]:
        """The event as JSON-able data, times in ISO 8601 UTC."""
        return {
            "kind": self.kind,
            "input": self.input,
            "domain": self.domain,
            "asn": self.asn,
            "start": iso(self.start),
            "end": iso(self.end),
            "last_blocked": iso(self.last_blocked),
            "blocking": self.blocking,
            "methods": [
                {
                    "blocking": p.blocking,
                    "start": iso(p.start),
                    "last": iso(p.last),
                    "measurements": p.measurements,
                }
                for p in self.phases
            ],
            "measurements": self.measurements,
            "inconclusive": self.inconclusive,
            "vantages": self.vantages,
            "runs": self.runs,
            "longest_gap_seconds": self.longest_gap,
            "blockpages": self.blockpages,
            "failures": self.failures,
            "first_measurement": self.first_measurement,
            "last_measurement": self.last_measurement,
        }


@dataclass(slots=True)
class Network:
    """One URL on one network: what was measured, and its state at the last measurement."""

    domain: str
    input: str  # the URL measured
    asn: str | None
    first: int
    last: int
    counts: Counter[str] = field(default_factory=Counter)
    methods: Counter[str] = field(default_factory=Counter)
    vantage_ids: set[str | None] = field(default_factory=set)
    #: The last conclusive measurement: (time, verdict, blocking).
    state: tuple[int, str, str | None] | None = None
    #: When the current state began: the first conclusive measurement of the current run of
    #: the same verdict (inconclusive and down measurements neither end nor start the run).
    state_since: int | None = None
    #: Runs of consecutive measurements of one state: (first, last measurement, state).
    periods: list[tuple[int, int, str]] = field(default_factory=list)
    #: Periods longer than ``max_gap`` without a conclusive measurement: (from, to).
    gaps: list[tuple[int, int]] = field(default_factory=list)
    events: int = 0
    anomalies: int = 0
    #: The run of blocked measurements in progress, and the time of the last conclusive one.
    open_event: Event | None = None
    last_conclusive: int | None = None

    @property
    def measurements(self) -> int:
        return sum(self.counts.values())

    @property
    def blocked_share(self) -> float:
        """Blocked measurements among the conclusive ones (0 when none was conclusive)."""
        conclusive = self.counts["blocked"] + self.counts["accessible"]
        return self.counts["blocked"] / conclusive if conclusive else 0.0

    @property
    def conclusive(self) -> int:
        """Blocked or accessible measurements: the denominator of :attr:`blocked_share`."""
        return self.counts["blocked"] + self.counts["accessible"]

    @property
    def inconclusive(self) -> int:
        """Measurements neither conclusive nor down (left out of :attr:`blocked_share`)."""
        return self.measurements - self.conclusive - self.counts["down"]

    @property
    def current(self) -> str:
        """``blocked``, ``accessible`` or ``unknown`` (no conclusive measurement)."""
        return self.state[1] if self.state else "unknown"

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "domain": self.domain,
            "asn": self.asn,
            "first": iso(self.first),
            "last": iso(self.last),
            "measurements": self.measurements,
            "verdicts": dict(sorted(self.counts.items())),
            "blocked_share": round(self.blocked_share, 4),
            # the share's numerator and denominator, and what it leaves out
            "blocked": self.counts["blocked"],
            "conclusive": self.conclusive,
            "inconclusive": self.inconclusive,
            "down": self.counts["down"],
            "methods": dict(self.methods.most_common()),
            "vantages": len(self.vantage_ids),
            "current": self.current,
            "current_blocking": self.state[2] if self.state else None,
            "current_since": iso(self.state_since),
            "current_last_measured": iso(self.state[0]) if self.state else None,
            "events": self.events,
            "anomalies": self.anomalies,
            "unknown_gaps": [[iso(a), iso(b)] for a, b in self.gaps],
            "periods": [[iso(a), iso(b), state] for a, b, state in self.periods],
        }


@dataclass(slots=True)
class Timeline:
    """Every event and anomaly, and a summary per (URL, network), in domain order."""

    events: list[Event]
    anomalies: list[Event]
    networks: list[Network]
    measurements: int
    first: int | None
    last: int | None
    options: Options


def timeline(summaries: Iterable[MeasurementSummary], options: Options | None = None) -> Timeline:
    """The block events in ``summaries`` (in time order per (URL, network)).

    Raises ``ValueError`` when a network's measurements go back in time (the reader's bug).
    """
    opts = options or Options()
    networks: dict[tuple[str, str | None], Network] = {}  # by (URL, AS)
    events: list[Event] = []
    anomalies: list[Event] = []
    count = 0
    first: int | None = None
    last: int | None = None
    max_gap = opts.max_gap
    current_key: tuple[str, str | None] | None = None
    net: Network | None = None
    # One string per run, however many events name it (memory stays flat in measurements).
    run_names: dict[str, str] = {}
    for s in summaries:
        count += 1
        t = s.time
        key = (s.input, s.asn)
        if key != current_key:
            net = networks.get(key)
            if net is None:
                net = networks[key] = Network(s.domain, s.input, s.asn, t, t)
            current_key = key
        assert net is not None
        previous_time = net.last
        if t < previous_time:
            raise ValueError(f"{s.input} on {s.asn}: measurements out of time order")
        verdict = s.verdict
        periods = net.periods
        # Most measurements extend the last period: that case is inline (a call per
        # measurement cost a tenth of a million-measurement timeline).
        if periods and periods[-1][2] == verdict and t - previous_time <= max_gap:
            periods[-1] = (periods[-1][0], t, verdict)
        else:
            _add_period(periods, t, verdict, previous_time, max_gap)
        net.last = t
        net.counts[verdict] += 1
        net.vantage_ids.add(s.vantage)
        event = net.open_event
        if verdict == "blocked":
            blocking = s.blocking or "unknown"
            net.methods[blocking] += 1
            if event is None:
                event = net.open_event = Event(
                    "event", s.domain, s.input, s.asn, t, t, first_measurement=s.measurement_id,
                    first_evidence=s.evidence,
                )  # fmt: skip
            run = run_names.setdefault(s.run, s.run)
            _add_blocked(event, s, run, blocking, net.last_conclusive)
        elif verdict == "accessible":
            if event is not None:
                event.end = t
                _gap(event, net.last_conclusive, t)
                _close(net, event, opts, events, anomalies)
        elif event is not None:
            event.inconclusive += 1
            continue
        else:
            continue
        # a conclusive measurement
        previous = net.last_conclusive
        if previous is not None and t - previous > max_gap:
            _keep_gap(net.gaps, (previous, t))
        net.last_conclusive = t
        if net.state is None or net.state[1] != verdict:
            net.state_since = t
        net.state = (t, verdict, s.blocking if verdict == "blocked" else None)
    for net in networks.values():
        if net.open_event is not None:
            _close(net, net.open_event, opts, events, anomalies)
    if networks:
        first = min(net.first for net in networks.values())
        last = max(net.last for net in networks.values())
    order = _event_order
    return Timeline(
        events=sorted(events, key=order),
        anomalies=sorted(anomalies, key=order),
        networks=sorted(networks.values(), key=lambda n: (n.domain, n.input, n.asn or "")),
        measurements=count,
        first=first,
        last=last,
        options=opts,
    )


def _add_blocked(
    event: Event, s: MeasurementSummary, run: str, blocking: str, previous: int | None
) -> None:
    t = s.time
    if event.measurements:
        _gap(event, previous, t)
    event.measurements += 1
    event.last_blocked = t
    event.last_measurement = s.measurement_id
    event.vantage_ids.add(s.vantage)
    event.run_ids.add(run)
    phases = event.phases
    if phases and phases[-1].blocking == blocking:
        phase = phases[-1]
        phase.last = t
        phase.measurements += 1
    elif len(phases) < MAX_PHASES:
        phases.append(Phase(blocking, t, t))
    else:  # too many changes to list: the last phase absorbs the rest
        phases[-1].last = t
        phases[-1].measurements += 1
    if s.blockpage and s.blockpage not in event.blockpages:
        if len(event.blockpages) < MAX_DISTINCT:
            event.blockpages.append(s.blockpage)
    if s.failure and s.failure not in event.failures:
        if len(event.failures) < MAX_DISTINCT:
            event.failures.append(s.failure)


def _gap(event: Event, previous: int | None, t: int) -> None:
    if previous is not None and t - previous > event.longest_gap:
        event.longest_gap = t - previous


def _close(
    net: Network, event: Event, opts: Options, events: list[Event], anomalies: list[Event]
) -> None:
    net.open_event = None
    if event.measurements >= opts.min_measurements or event.vantages >= opts.min_vantages:
        events.append(event)
        net.events += 1
    else:
        event.kind = "anomaly"
        anomalies.append(event)
        net.anomalies += 1


def _keep_gap(gaps: list[tuple[int, int]], gap: tuple[int, int]) -> None:
    """Keep at most MAX_GAPS gaps, the longest ones, in time order."""
    gaps.append(gap)
    if len(gaps) > MAX_GAPS:
        shortest = min(range(len(gaps)), key=lambda i: gaps[i][1] - gaps[i][0])
        del gaps[shortest]


def _add_period(
    periods: list[tuple[int, int, str]], t: int, verdict: str, previous: int, max_gap: int
) -> None:
    """Extend the last period with a measurement of its state, or open a new one (also after
    a time without measurement longer than ``max_gap``: that time is unknown, not the state)."""
    state = verdict if verdict in _MEASURED_STATES else "inconclusive"
    if periods:
        start, _, last_state = periods[-1]
        if last_state == state and t - previous <= max_gap:
            periods[-1] = (start, t, state)
            return
    periods.append((t, t, state))
    # Merging in batches (at half as many again) keeps the cost per measurement flat.
    if len(periods) > MAX_PERIODS + MAX_PERIODS // 2:
        _merge_periods(periods, MAX_PERIODS)


def _merge_periods(periods: list[tuple[int, int, str]], keep: int) -> None:
    """Merge the neighbouring pairs that span the least time until ``keep`` periods are left;
    the last (the current state) stays whole. A pair of different states becomes ``mixed``:
    merged, a period never claims a state some of its measurements did not have."""
    while len(periods) > keep:
        excess = len(periods) - keep
        candidates = len(periods) - 2  # pairs (i, i + 1) without the last period
        spans = sorted(periods[i + 1][1] - periods[i][0] for i in range(candidates))
        limit = spans[min(excess, candidates) - 1]
        merged: list[tuple[int, int, str]] = []
        i = 0
        while i < len(periods):
            if excess and i < candidates and periods[i + 1][1] - periods[i][0] <= limit:
                (start, _, a), (_, end, b) = periods[i], periods[i + 1]
                merged.append((start, end, a if a == b else "mixed"))
                excess -= 1
                i += 2
            else:
                merged.append(periods[i])
                i += 1
        periods[:] = merged


def _event_order(event: Event) -> tuple[str, str, str, int]:
    return (event.domain, event.input, event.asn or "", event.start)


def parse_evidence(evidence: str | Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """Stored evidence (JSON text or a list) as a list of dicts; [] when absent or unreadable."""
    if evidence is None:
        return []
    if isinstance(evidence, str):
        try:
            evidence = json.loads(evidence)
        except ValueError:
            return []
    if not isinstance(evidence, list):
        return []
    return [dict(item) for item in evidence if isinstance(item, Mapping)]


def iso(t: int | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC (``2026-10-26T08:00:00Z``), None for None."""
    if t is None:
        return None
    # A report writes a time for each of a timeline's periods (140,000 over a million
    # measurements): the day's text is looked up, the time of day is arithmetic (a fifth of
    # strftime's cost).
    day, second = divmod(int(t), 86_400)
    hour, second = divmod(second, 3600)
    minute, second = divmod(second, 60)
    return f"{_day(day)}T{hour:02d}:{minute:02d}:{second:02d}Z"


@functools.lru_cache(maxsize=4096)
def _day(day: int) -> str:
    return (_EPOCH_DAY + datetime.timedelta(days=day)).isoformat()


_EPOCH_DAY = datetime.date(1970, 1, 1)


def epoch(stored: str) -> int:
    """A stored UTC time (``YYYY-MM-DD HH:MM:SS[.mmm]``, or ISO 8601 with ``T``/``Z``) as epoch
    seconds (the fraction dropped); raises ``ValueError``."""
    text = stored.strip().replace("T", " ").removesuffix("Z")
    whole, _, fraction = text.partition(".")
    if fraction and not fraction.isdigit():
        raise ValueError(f"{stored!r}: not a time")
    parsed = datetime.datetime.strptime(whole, "%Y-%m-%d %H:%M:%S")
    return int(parsed.replace(tzinfo=datetime.UTC).timestamp())
