"""Run-wide limits of the measurer: connections per server address, and the rate limit."""

import asyncio

import pytest

from probe.measure.measurer import Measurer, Settings
from probe.net.connections import client_context
from probe.net.resolvers import parse_resolver


class CountingThrottle:
    """Stands in for asyncio_throttle.Throttler: counts the requests it lets through."""

    def __init__(self) -> None:
        self.entered = 0

    async def __aenter__(self) -> None:
        self.entered += 1

    async def __aexit__(self, *exc: object) -> None:
        return None


def measurer(per_address: int = 2, throttle=None) -> Measurer:
    settings = Settings(
        system_resolver=parse_resolver("udp://192.88.99.10", engine="system"),
        control_resolvers=[],
        ssl_context=client_context(),
        per_address=per_address,
    )
    return Measurer(settings, doh_client=None, helpers=None, throttle=throttle)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_at_most_two_connections_at_once_to_one_address():
    m = measurer()
    now = {"192.88.99.100": 0, "192.88.99.101": 0}
    peak = dict(now)

    async def connection(ip: str) -> None:
        async with m.slot(ip):
            now[ip] += 1
            peak[ip] = max(peak[ip], now[ip])
            await asyncio.sleep(0.01)
            now[ip] -= 1

    await asyncio.gather(*(connection(ip) for ip in now for _ in range(10)))
    assert peak == {"192.88.99.100": 2, "192.88.99.101": 2}
    assert not m._slots  # no state kept for addresses no longer in use (flat memory)


@pytest.mark.asyncio
async def test_every_connection_passes_the_rate_limit():
    throttle = CountingThrottle()
    m = measurer(throttle=throttle)
    for _ in range(5):
        async with m.slot("192.88.99.100"):
            pass
    assert throttle.entered == 5
