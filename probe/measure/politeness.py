"""Politeness towards servers: at most a few connections at once to one address, a blackhole
never holding the others up, and the run's rate limit on every new request.

Shared by all targets of a run (the limits are run-wide); :class:`Politeness` keeps state only
for the addresses in use, so memory stays flat over a million targets.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

from asyncio_throttle.throttler import Throttler

from ..model.records import TCPConnect
from ..net.connections import Clock, Conn, tcp_connect
from .settings import Settings


class Pacing(Protocol):
    """How a runner paces the targets it measures at once (see
    :meth:`probe.measure.measurer.Measurer.measure`)."""

    async def turn(self, addresses: list[str]) -> None:
        """Wait, with the system resolver's addresses, until the target may go on."""

    def idle(self) -> None:
        """The target no longer keeps the vantage busy (it may be called more than once)."""

    async def resume(self) -> None:
        """Wait until the idle target may keep the vantage busy again."""


class _Address:
    """The limits on connections to one server address, shared by every target of a run."""

    def __init__(self, slots: int, pending: int) -> None:
        self.slots = asyncio.Semaphore(slots)  # connections in use
        self.pending = asyncio.Semaphore(pending)  # connects that gave their slot back
        #: A connect here went unanswered for the grace period, and none succeeded since.
        self.silent = False
        self.users = 0


class RateLimit:
    """``--rate``: at most ``rate`` new network requests per second, granted in the order they
    were asked for.

    asyncio-throttle's :class:`Throttler` counts the requests of the last period, but every task
    waiting on it polls it every 10 ms and whichever wakes first wins: 400 waiting targets cost
    0.6 s of CPU per 2 s, and the list's order is lost. So one task at a time waits on it, behind
    an :class:`asyncio.Lock`, which wakes its waiters first come, first served.
    """

    def __init__(self, rate: float) -> None:
        self.rate_limit = max(1, int(rate))  # whole requests per period, as Throttler counts
        self.period = self.rate_limit / rate
        self.throttler = Throttler(rate_limit=self.rate_limit, period=self.period)
        self._turn = asyncio.Lock()

    async def __aenter__(self) -> None:
        async with self._turn:
            await self.throttler.acquire()  # type: ignore[no-untyped-call]

    async def __aexit__(self, *exc: object) -> None:
        return None


class Politeness:
    """The per-address limits and the rate limit of one run (see the module docstring)."""

    def __init__(self, settings: Settings, throttle: RateLimit | None = None) -> None:
        self.settings = settings
        self.throttle = throttle
        self._addresses: dict[str, _Address] = {}
        self._silence: asyncio.Future[None] | None = None

    @asynccontextmanager
    async def connection(
        self,
        ip: str,
        port: int,
        clock: Clock,
        depth: int,
        pace: Pacing | None = None,
    ) -> AsyncIterator[tuple[TCPConnect, Conn | None]]:
        """A measured TCP connect to ``ip:port``: its record, and the connection when it
        succeeded, which the body then holds as one of the address's ``per_address`` slots.

        Politeness is about connections that reach a server, and a SYN into a blackhole reaches
        nobody. So a connect takes a slot, but one still unanswered after ``connect_grace``
        gives it back and waits on as one of at most ``pending_per_address`` such connects;
        while no connect to the address has succeeded since, new ones start there at once.
        A connect that succeeds takes a slot back before the body runs (one that succeeds only
        after the grace, while both slots are busy, waits idle for one: the server then sees
        it open, unused; at most ``pending_per_address`` of them). Ten sites on one
        blackholed address thus time out together, not five timeouts back to back, and each
        target still records its own attempt. Every connection passes the rate limit.

        ``pace`` is told when this connect waits on a silent address (gone unanswered past
        the grace, or started where connects go unanswered): the target is idle then; should
        the connect succeed after all, the target waits to be busy again before going on (a
        network slower than the grace must not lift the run's limit on busy targets).
        """
        address = self._addresses.get(ip)
        if address is None:
            address = self._addresses[ip] = _Address(
                self.settings.per_address, self.settings.pending_per_address
            )
        address.users += 1
        holding = pending = False
        attempt: asyncio.Task[tuple[TCPConnect, Conn | None]] | None = None
        conn: Conn | None = None
        try:
            if address.silent:
                if pace is not None:
                    pace.idle()
                await address.pending.acquire()
                pending = True
            else:
                await address.slots.acquire()
                holding = True
            await self.throttled()
            attempt = asyncio.create_task(
                tcp_connect(ip, port, timeout=self.settings.timeouts.tcp, clock=clock, depth=depth)
            )
            if holding:
                done, _ = await asyncio.wait({attempt}, timeout=self.settings.connect_grace)
                if not done and not address.pending.locked():
                    await address.pending.acquire()  # free: returns at once
                    pending, address.silent = True, True
                    if self._silence is not None and not self._silence.done():
                        self._silence.set_result(None)
                    address.slots.release()
                    holding = False
                    if pace is not None:
                        pace.idle()
            record, conn = await attempt
            attempt = None  # its connection, if any, is ``conn`` now
            if conn is not None:
                address.silent = False
                if pending and pace is not None:
                    await pace.resume()
                if not holding:
                    await address.slots.acquire()
                    holding = True
            if pending:
                address.pending.release()
                pending = False
            yielded, conn = conn, None  # the body owns it now
            yield record, yielded
        finally:
            if attempt is not None:  # cancelled while connecting
                attempt.cancel()
                if attempt.done() and not attempt.cancelled() and attempt.exception() is None:
                    conn = attempt.result()[1]
            if conn is not None:  # connected, but cancelled before the body got it
                conn.close()
            if holding:
                address.slots.release()
            if pending:
                address.pending.release()
            address.users -= 1
            if not address.users:  # keep memory flat over many addresses
                del self._addresses[ip]

    async def throttled(self) -> None:
        """Wait for the run's rate limit (``--rate``), if there is one."""
        if self.throttle is not None:
            async with self.throttle:
                pass

    def next_silence(self) -> asyncio.Future[None]:
        """A future done when the next address goes silent."""
        if self._silence is None or self._silence.done():
            self._silence = asyncio.get_running_loop().create_future()
        return self._silence

    def silent(self, ip: str) -> bool:
        """Whether connects to ``ip`` go unanswered: one is waiting there past the grace,
        and none has succeeded since."""
        address = self._addresses.get(ip)
        return address is not None and address.silent
