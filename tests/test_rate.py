"""``--rate`` with the real asyncio-throttle behind it: requests granted in the order asked, one
task at a time polling the throttler, never more than the rate in any period."""

from __future__ import annotations

import asyncio

import pytest

from probe.measure.politeness import RateLimit


async def _grants(limit: RateLimit, tasks: int) -> tuple[list[int], list[float], int]:
    """The order the tasks were let through, when, and the most tasks inside the throttler's
    acquire at once."""
    order: list[int] = []
    times: list[float] = []
    inside = peak = 0
    acquire = limit.throttler.acquire

    async def counted_acquire() -> None:  # the real acquire, counted
        nonlocal inside, peak
        inside += 1
        peak = max(peak, inside)
        try:
            await acquire()
        finally:
            inside -= 1

    limit.throttler.acquire = counted_acquire  # type: ignore[method-assign]

    async def one(number: int) -> None:
        async with limit:
            order.append(number)
            times.append(limit.throttler._task_logs[-1])  # the time it counted this one at

    started = []
    for number in range(tasks):
        started.append(asyncio.create_task(one(number)))
        await asyncio.sleep(0)  # each asks in turn: number is the order asked
    await asyncio.gather(*started)
    return order, times, peak


@pytest.mark.asyncio
async def test_requests_are_granted_in_the_order_they_were_asked_for():
    limit = RateLimit(200.0)  # 200 a second: 400 requests take about two seconds
    order, _times, peak = await _grants(limit, 400)
    assert order == list(range(400))
    assert peak == 1  # no herd: one waiter polls the throttler, the others wait their turn


@pytest.mark.asyncio
async def test_no_period_holds_more_requests_than_the_rate():
    limit = RateLimit(50.0)
    _order, times, _peak = await _grants(limit, 120)
    k, period = limit.throttler.rate_limit, limit.throttler.period
    # Any k + 1 grants in a row span more than one period, on the throttler's own clock.
    spans = [times[i + k] - times[i] for i in range(len(times) - k)]
    assert spans and min(spans) >= period
