"""Run many targets concurrently, analyse and store each as soon as it finishes.

At most ``concurrency`` targets keep the vantage busy at once, taking their turns in list
order (:func:`run` says how targets waiting on a blackhole step aside), and memory stays flat
in the number of targets: only a few targets per busy slot are held, plus a small summary per
target for the run-level offline flag; results are read back from the store. A per-address limit
(in :class:`~probe.measure.measurer.Measurer`) keeps us from hammering one server, and an
optional rate limit caps new network requests per second.

Before the first target, the run finds its network's AS number, country and name
(:mod:`.identity`), and learns the volunteer's public address for the scrubber only. No
target connects to the vantage's own addresses (a redirect or a DNS answer naming them), nor
is the helper sent there, and every measurement is scrubbed of them (:mod:`.privacy`) before
it is analysed or stored. SIGTERM (``docker stop``, systemd) and SIGHUP end a run as Ctrl-C does:
no new target starts, the targets in flight are cancelled (never stored half: each is stored
in one transaction, or not at all), and the run is marked "interrupted".
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import sys
import traceback
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import analysis
from ..analysis.fingerprints import Fingerprints
from ..errors import StoreError, TurnRefused
from ..measure.control import HelperClient
from ..measure.measurer import Measurer
from ..measure.politeness import RateLimit
from ..measure.privacy import Scrubber
from ..model.records import Target, Verdict
from ..model.text import printable
from ..net.connections import raise_fd_limit
from ..net.kept import KeptClient
from ..net.resolvers import DoHClient
from ..store import Store
from .config import CONCURRENCY
from .identity import network_identity, record_identity

if TYPE_CHECKING:
    from .config import CheckConfig


@dataclass
class Result:
    """One finished target, as reported to the caller."""

    target: Target
    measurement_id: str
    verdict: Verdict


@dataclass
class RunSummary:
    run_id: str
    counts: Counter[str] = field(default_factory=Counter)
    offline: bool = False
    errors: list[str] = field(default_factory=list)
    #: The signal (SIGTERM, SIGHUP) that stopped the run early, or None.
    stopped_by: int | None = None
    #: The run reached its --max-runtime: targets were left unmeasured.
    partial: bool = False
    #: Why the database could not take more measurements (the run stopped), or None.
    store_error: str | None = None

    @property
    def status(self) -> str:
        """The run's final state as stored: complete, partial, interrupted or offline."""
        if self.stopped_by is not None or self.store_error is not None:
            return "interrupted"
        if self.partial:
            return "partial"
        return "offline" if self.offline else "complete"


#: Targets held at once per busy slot (see :func:`run`): one keeping the vantage busy, the
#: others resolved and waiting their turn, waiting on a blackhole or listening for late DNS
#: replies. At 64 busy slots and ~150 targets a second, 1,024 targets held reach about 7 s
#: ahead: enough for a blackholed site anywhere in a list of a thousand to start in the first
#: seconds rather than last.
TARGETS_HELD_PER_SLOT = 16


class _Turns:
    """The busy slots, granted in the order asked; a target may step aside while it waits."""

    def __init__(self, slots: int) -> None:
        self.free = slots
        self.waiting: deque[asyncio.Future[None]] = deque()
        #: Done once no target may start any more (the run's deadline).
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def close(self) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def ask(self) -> asyncio.Future[None]:
        """A ticket: done once the slot is this target's."""
        ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.free and not self.waiting:
            self.free -= 1
            ticket.set_result(None)
        else:
            self.waiting.append(ticket)
        return ticket

    def withdraw(self, ticket: asyncio.Future[None]) -> None:
        """Leave the queue (a ticket not yet granted); a granted one's slot is given back."""
        if ticket.done():
            self.give()
        else:
            self.waiting.remove(ticket)
            ticket.cancel()

    def give(self) -> None:
        """Give a slot back: to the first in the queue, else to the pool."""
        if self.waiting:
            self.waiting.popleft().set_result(None)
        else:
            self.free += 1


class _Pace:
    """One target's place in the run's pacing (see :func:`run`)."""

    def __init__(self, turns: _Turns, resolving: asyncio.Semaphore, measurer: Measurer) -> None:
        self.turns, self.resolving, self.measurer = turns, resolving, measurer
        self.is_resolving, self.is_busy = True, False
        self.resuming = asyncio.Lock()

    def resolved(self) -> None:
        if self.is_resolving:
            self.is_resolving = False
            self.resolving.release()

    async def turn(self, addresses: list[str]) -> None:
        """Wait for a busy slot; step aside as soon as every address is known silent.
        Raises :class:`TurnRefused` once the run may start no target."""
        self.resolved()
        await self._busy(addresses, first=True)

    async def resume(self) -> None:
        """Wait for a busy slot again (a connect to a silent address succeeded after all).
        Several connects of the target may resume at once: they share one slot."""
        async with self.resuming:
            if not self.is_busy:
                await self._busy([])

    async def _busy(self, addresses: list[str], first: bool = False) -> None:
        ticket = self.turns.ask()
        try:
            while not ticket.done():
                if first and self.turns.closed.done():
                    self.turns.withdraw(ticket)
                    raise TurnRefused("the run reached its deadline before this target's turn")
                if addresses and all(self.measurer.politeness.silent(ip) for ip in addresses):
                    self.turns.withdraw(ticket)
                    return
                await asyncio.wait(
                    (ticket, self.measurer.politeness.next_silence(), self.turns.closed),
                    return_when=asyncio.FIRST_COMPLETED,
                )
        except asyncio.CancelledError:
            self.turns.withdraw(ticket)
            raise
        self.is_busy = True

    def idle(self) -> None:
        if self.is_busy:
            self.is_busy = False
            self.turns.give()


#: Signals that end a run cleanly, as Ctrl-C does.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


async def run(
    targets: Iterable[Target],
    measurer: Measurer,
    store: Store,
    run_id: str,
    *,
    concurrency: int = CONCURRENCY,
    fingerprints: Fingerprints | None = None,
    probe_asn: str | None = None,
    probe_cc: str | None = None,
    on_result: Callable[[Result], None] | None = None,
    scrubber: Scrubber | None = None,
    deadline: float | None = None,
    grace: float = 0.0,
) -> RunSummary:
    """Measure every target; returns counts, the offline flag and any internal errors.

    ``scrubber`` removes the vantage's addresses from each measurement (default: its
    interfaces' addresses). ``deadline`` (the event loop's clock) stops new targets; those in
    flight get ``grace`` seconds more, then are cancelled (the summary is then ``partial``).
    A database that cannot take a measurement stops the whole run (``store_error``).
    """
    summary = RunSummary(run_id)
    scrub = scrubber or Scrubber()
    pending = enumerate(targets)
    loop = asyncio.get_running_loop()
    # Per target only what the offline flag needs, so memory stays flat.
    seen: list[analysis.OfflineSigns] = []

    # Pacing. At most ``concurrency`` targets keep the vantage busy (connecting, fetching,
    # asking the control) at once. A target first asks the system resolver, then waits its
    # turn for one of those slots, in list order, and gives it back as soon as it only listens
    # for late DNS replies (up to half a second: evidence of injection) or waits on a silent
    # address (a blackhole: up to the whole TCP timeout, sending nothing). Targets are resolved
    # ahead of their turn, so one whose every address is already known silent skips the
    # queue: a blackholed site late in the list would otherwise end a whole timeout after
    # all the others. ``held`` bounds the targets held in all (memory stays flat) and
    # ``resolving`` the targets asking the system resolver at once (a home router's resolver
    # drops queries past about 150 in flight).
    slots = max(1, concurrency)
    turns = _Turns(slots)
    held = asyncio.Semaphore(targets_held(slots))
    resolving = asyncio.Semaphore(slots)

    if deadline is not None:
        loop.call_at(deadline, turns.close)

    async def feeder(group: asyncio.TaskGroup) -> None:
        for position, target in pending:
            if deadline is not None and loop.time() >= deadline:
                summary.partial = True
                return
            await held.acquire()
            await resolving.acquire()
            group.create_task(one(position, target))

    async def one(position: int, target: Target) -> None:
        pace = _Pace(turns, resolving, measurer)
        try:
            try:
                obs = await measurer.measure(target, pace=pace)
            finally:
                pace.resolved()
                pace.idle()
            scrub.observations(obs)
            verdict = analysis.analyze(obs, fingerprints=fingerprints)
            measurement_id = store.save(
                run_id,
                obs,
                verdict,
                probe_asn=probe_asn,
                probe_cc=probe_cc,
                position=position,
            )
        except TurnRefused:
            summary.partial = True  # resolved ahead, never measured: nothing is stored
            return
        except StoreError:
            raise  # no target can be stored: the run ends (the TaskGroup cancels the rest)
        except Exception as exc:  # a bug must not lose the other targets
            detail = "".join(traceback.format_exception_only(exc)).strip()
            summary.errors.append(scrub.text(f"{target.url}: internal error: {detail}"))
            print(printable(scrub.text(traceback.format_exc()), newlines=True), file=sys.stderr)
            return
        finally:
            held.release()
        seen.append(analysis.offline_signs(obs))
        summary.counts[verdict.verdict] += 1
        if on_result is not None:
            on_result(Result(target, measurement_id, verdict))

    try:
        async with asyncio.timeout_at(None if deadline is None else deadline + grace):
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(feeder(group))
            except* StoreError as errors:
                summary.store_error = str(errors.exceptions[0])
    except TimeoutError:
        summary.partial = True
    summary.offline = analysis.is_offline(seen)
    return summary


async def check(
    targets: Iterable[Target],
    config: CheckConfig,
    store: Store,
    *,
    total: int,
    inputs: list[str],
    on_result: Callable[[Result], None] | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> RunSummary:
    """A whole ``probe check`` run: record it, measure every target, mark it finished.

    ``targets`` may be a stream (a long list is never held whole); ``total`` is its length.
    ``on_notice`` gets the lines meant for the volunteer, such as an unknown AS (default:
    stderr).

    The run is marked "complete" only when every target was measured; an interruption
    (Ctrl-C, SIGTERM, SIGHUP) marks it "interrupted" and keeps what was stored. After SIGTERM
    or SIGHUP the summary's ``stopped_by`` names the signal (Ctrl-C raises, as asyncio does).
    """
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    stopped_by: list[int] = []

    def stop(signum: int) -> None:
        if not stopped_by:  # a second signal while stopping changes nothing
            stopped_by.append(signum)
            main.cancel()

    raise_fd_limit()
    for signum in STOP_SIGNALS:  # before the run exists, so it can never stay "running"
        loop.add_signal_handler(signum, stop, signum)
    try:
        return await _check(
            targets, total, config, store, inputs, on_result, main, stopped_by, on_notice
        )
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)


async def _check(
    targets: Iterable[Target],
    total: int,
    config: CheckConfig,
    store: Store,
    inputs: list[str],
    on_result: Callable[[Result], None] | None,
    main: asyncio.Task[RunSummary],
    stopped_by: list[int],
    on_notice: Callable[[str], None] | None = None,
) -> RunSummary:
    settings = config.settings
    run_id = store.start_run(
        inputs=inputs,
        settings=config.describe(),
        targets=total,
        probe_asn=config.probe_asn,
        probe_cc=config.probe_cc,
    )
    verify = settings.ssl_context
    counts: Counter[str] = Counter()

    def counted(result: Result) -> None:
        counts[result.verdict.verdict] += 1
        if on_result is not None:
            on_result(result)

    status = "interrupted"
    summary = None
    deadline = grace = None
    if config.max_runtime is not None:
        deadline = asyncio.get_running_loop().time() + config.max_runtime
        steps = settings.timeouts
        grace = max(steps.dns, steps.tcp, steps.tls, steps.http, steps.control)
    try:
        async with (
            contextlib.aclosing(DoHClient(verify, doh_connections(config.concurrency))) as doh,
            contextlib.aclosing(KeptClient(verify, config.helper_concurrency)) as helper_http,
        ):
            # The network's identity; the public address goes into the scrubber, nowhere else.
            # Known before the first target, it is never connected to (nor the interfaces').
            scrubber = Scrubber(towards=settings.system_resolver.host)
            identity = await network_identity(config, helper_http, scrubber, warn=on_notice)
            record_identity(store, run_id, identity)
            settings = dataclasses.replace(settings, own_address=scrubber.is_own)
            helper_client = HelperClient(
                config.helpers,
                helper_http,
                concurrency=config.helper_concurrency,
                timeout=settings.timeouts.control,
            )
            measurer = Measurer(
                settings,
                doh_client=doh,
                helpers=helper_client,
                throttle=RateLimit(config.rate) if config.rate else None,
            )
            summary = await run(
                targets,
                measurer,
                store,
                run_id,
                concurrency=config.concurrency,
                fingerprints=config.fingerprints,
                probe_asn=identity.probe_asn,
                probe_cc=identity.probe_cc,
                on_result=counted,
                scrubber=scrubber,
                deadline=deadline,
                grace=grace or 0.0,
            )
        status = summary.status
    except asyncio.CancelledError:
        if not stopped_by or main.uncancel() > 0:
            raise  # Ctrl-C (asyncio.run cancels us), or a cancellation from outside
        summary = RunSummary(run_id, counts=Counter(counts), stopped_by=stopped_by[0])
    finally:
        try:
            store.finish_run(
                run_id,
                status=status,
                counts=dict(summary.counts if summary else counts),
                offline=bool(summary and summary.offline),
            )
        except StoreError:
            pass  # a full disk: the run stays "running" until the next command marks it
    return summary


def targets_held(slots: int) -> int:
    """How many targets a run holds at once: :data:`TARGETS_HELD_PER_SLOT` per busy slot, but
    within the open-files limit (each target listening for late DNS replies holds two UDP
    sockets for half a second; the busy ones a few more)."""
    wanted = TARGETS_HELD_PER_SLOT * slots
    try:
        import resource
    except ImportError:  # not on this platform
        return wanted
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(slots, min(wanted, (soft - 8 * slots - 256) // 2))


def doh_connections(concurrency: int) -> int:
    """DoH connections kept per server: one lookup at a time each (HTTP/1.1), and every target
    asks two (A and AAAA) at once, so fewer than the targets at once queues most lookups
    (at 64 targets, 16 connections made a lookup 0.29 s instead of 0.07 s at 50 ms RTT)."""
    return min(64, max(4, concurrency))
