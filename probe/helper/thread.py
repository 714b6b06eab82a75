"""The measurements' own event loop, in a thread of its own (:class:`MeasurementThread`)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger("probe.helper")

T = TypeVar("T")


class MeasurementThread:
    """An event loop in a thread of its own, where every measurement runs.

    The server's loop (accepting, reading requests, answering) never runs measurement code, so
    it answers at each request's deadline (504) even when a measurement misbehaves: ignores its
    cancellation, or holds its loop without ever yielding (a client reading a never-ending body
    as fast as it arrives). Such a measurement still holds the measurements' loop until it ends:
    the other requests then get their 504 in time rather than no answer at all.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="probe-helper-measurements", daemon=True
        )
        self.thread.start()

    async def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run ``coro`` in the thread; ``TimeoutError`` after ``timeout`` seconds whatever it
        does (it is then cancelled, and ends in its own time)."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout)

    async def stop(self, cleanup: Coroutine[Any, Any, None], timeout: float) -> None:
        """Run ``cleanup`` in the thread, then stop its loop; gives up after ``timeout`` (a
        stuck measurement cannot keep the process from exiting: the thread is a daemon)."""
        try:
            await self.run(cleanup, timeout)
        except TimeoutError:
            log.warning("measurements still running at exit")
        self.loop.call_soon_threadsafe(self.loop.stop)
        await asyncio.to_thread(self.thread.join, timeout)
        if not self.thread.is_alive():
            self.loop.close()
