"""Run-wide limits of the measurer: connections per server address, and the rate limit."""

import asyncio
import json
import subprocess
import sys

import pytest

from probe.measure.measurer import Measurer
from probe.measure.settings import Settings
from probe.net.connections import Clock, client_context
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


class CountingServer:
    """A loopback TCP server that counts the connections it holds at once. A client says
    "bye" before closing and the server answers once it no longer counts that connection, so
    the count never lags behind the client."""

    def __init__(self) -> None:
        self.now = self.peak = self.served = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            await reader.readexactly(3)
        finally:
            self.now -= 1
            self.served += 1
        writer.write(b"ok")
        await writer.drain()
        writer.close()


@pytest.mark.asyncio
async def test_a_server_sees_at_most_two_connections_at_once_from_us():
    servers = [CountingServer(), CountingServer()]
    listeners = [await asyncio.start_server(s.handle, "127.0.0.1", 0) for s in servers]
    ports = [listener.sockets[0].getsockname()[1] for listener in listeners]
    m = measurer()

    async def use(port: int) -> str | None:
        async with m.politeness.connection("127.0.0.1", port, Clock(), 0) as (record, conn):
            if conn is not None:
                await asyncio.sleep(0.01)
                await conn.send(b"bye")
                assert await conn.recv() == b"ok"
                conn.close()
            return record.failure

    try:
        results = await asyncio.gather(*(use(port) for port in ports for _ in range(10)))
    finally:
        for listener in listeners:
            listener.close()
    assert results == [None] * 20
    assert [(s.served, s.peak) for s in servers] == [(10, 2), (10, 2)]
    assert not m.politeness._addresses  # no state kept for addresses no longer in use (flat memory)


@pytest.mark.asyncio
async def test_every_connection_passes_the_rate_limit():
    throttle = CountingThrottle()
    m = measurer(throttle=throttle)
    listener = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        for _ in range(5):
            async with m.politeness.connection("127.0.0.1", port, Clock(), 0) as (_record, conn):
                assert conn is not None
                conn.close()
    finally:
        listener.close()
    assert throttle.entered == 5


# Run in the vantage: ten connects at once to a blackholed address, ten to a live one, ten to
# one whose every packet takes 1.5 s each way (the connects outlast the grace, then succeed).
# Prints each address's connect records and the most connections in use there at once.
BLACKHOLE_SCRIPT = """
import asyncio, json, sys
from probe.measure.measurer import Measurer
from probe.measure.settings import Settings, Timeouts
from probe.net.connections import Clock, client_context
from probe.net.resolvers import parse_resolver

async def main(addresses):
    settings = Settings(
        system_resolver=parse_resolver("udp://192.88.99.10", engine="system"),
        control_resolvers=[], ssl_context=client_context(), timeouts=Timeouts(tcp=4),
        connect_grace=0.3,
    )
    m = Measurer(settings, doh_client=None, helpers=None)
    now = {ip: 0 for ip in addresses}
    peak = dict(now)
    records = {ip: [] for ip in addresses}

    clock = Clock()

    async def one(ip):
        async with m.politeness.connection(ip, 80, clock, 0) as (record, conn):
            records[ip].append([record.failure, record.t0, record.t])
            if conn is not None:
                now[ip] += 1
                peak[ip] = max(peak[ip], now[ip])
                await asyncio.sleep(0.05)
                now[ip] -= 1
                conn.close()

    await asyncio.gather(*(one(ip) for ip in addresses for _ in range(10)))
    print(json.dumps({"records": records, "peak": peak, "left": len(m.politeness._addresses)}))

asyncio.run(main(sys.argv[1:]))
"""


def test_blackholed_connects_wait_together_and_live_servers_still_see_two(clean_lab):
    """Politeness is about connections that reach a server: ten sites on one blackholed
    address time out together (each records its own attempt), not two by two; a live address
    and a slow one (connects longer than the grace) still see at most two at once."""
    lab = clean_lab
    dark, live, slow = (lab.site(name).ip for name in ("factcheck.kg", "kaktus.media", "24.kg"))
    lab.tcp_blackhole(dark)
    lab.throttle(slow, delay_ms=1500)
    code = f"import sys; sys.argv[1:] = {[dark, live, slow]!r}\n" + BLACKHOLE_SCRIPT
    out = json.loads(lab.python(lab.vantage, code, timeout=60))
    dark_records = out["records"][dark]
    assert [failure for failure, _, _ in dark_records] == ["generic_timeout_error"] * 10
    # Every attempt had started before the first one gave up (two by two, the later ones
    # would only start as the first timed out).
    assert max(t0 for _, t0, _ in dark_records) < min(t for _, _, t in dark_records)
    for ip in (live, slow):
        assert [failure for failure, _, _ in out["records"][ip]] == [None] * 10
        assert out["peak"][ip] == 2
    assert out["left"] == 0


# Run in the vantage: ``probe``'s runner with one worker over a blackholed site, then two live
# ones (no helper, no control). Prints the URLs in the order their results came.
PARKED_SCRIPT = """
import asyncio, json, sys, tempfile
from probe.measure.measurer import Measurer
from probe.measure.settings import Settings, Timeouts
from probe.app.run import run
from probe.net.connections import client_context
from probe.net.resolvers import parse_resolver
from probe.store import Store, open_db
from probe.app.targets import load

async def main(urls):
    settings = Settings(
        system_resolver=parse_resolver("udp://192.88.99.10", engine="system"),
        control_resolvers=[], ssl_context=client_context(), timeouts=Timeouts(tcp=4),
        connect_grace=0.3,
    )
    m = Measurer(settings, doh_client=None, helpers=None)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(open_db(tmp + "/p.db"))
        run_id = store.start_run(inputs=[], settings={}, targets=len(urls))
        order = []
        summary = await run(load(inputs=urls), m, store, run_id, concurrency=1,
                            on_result=lambda r: order.append(r.target.url))
    print(json.dumps({"order": order, "counts": dict(summary.counts)}))

asyncio.run(main(sys.argv[1:]))
"""


def test_a_target_waiting_on_a_blackhole_frees_its_worker(clean_lab):
    """With one worker, a site whose address is blackholed does not hold the live sites after
    it for its whole TCP timeout: once its connect goes unanswered past the grace, the next
    target starts, so the live sites finish first (before: in list order)."""
    lab = clean_lab
    dark, first, second = ("factcheck.kg", "kaktus.media", "24.kg")
    lab.tcp_blackhole(lab.site(dark).ip)
    urls = [f"http://{dark}/", f"https://{first}/", f"https://{second}/"]
    code = f"import sys; sys.argv[1:] = {urls!r}\n" + PARKED_SCRIPT
    out = json.loads(lab.python(lab.vantage, code, timeout=60))
    assert out["order"] == [urls[1], urls[2], urls[0]]
    assert sum(out["counts"].values()) == 3


def test_a_target_whose_address_is_known_silent_does_not_wait_its_turn(clean_lab):
    """With one busy slot, a slow live site holds it for seconds; a later target whose only
    address is already known silent (another target's connect hangs there) steps out of the
    queue and starts at once, so it ends a TCP timeout after the first blackholed one, not
    after the slow site (before: in list order, the slow site first)."""
    lab = clean_lab
    dark, slow = "factcheck.kg", "24.kg"
    lab.tcp_blackhole(lab.site(dark).ip)
    # The slow site answers its GET after 8 s: it holds the one slot that long.
    urls = [f"http://{dark}/", f"http://{slow}/delay/8000", f"http://{dark}/again"]
    code = f"import sys; sys.argv[1:] = {urls!r}\n" + PARKED_SCRIPT
    out = json.loads(lab.python(lab.vantage, code, timeout=90))
    assert out["order"] == [urls[0], urls[2], urls[1]]
    assert sum(out["counts"].values()) == 3


def test_the_targets_held_fit_the_open_files_limit():
    """Targets held ahead listen for late DNS replies on two sockets each: with a soft limit of
    1,024 files the run holds fewer of them, and never fewer than its busy slots."""
    code = (
        "import resource\n"
        "from probe.app.run import TARGETS_HELD_PER_SLOT, targets_held\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))\n"
        "print(targets_held(64), targets_held(4), targets_held(600), TARGETS_HELD_PER_SLOT)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    busy64, busy4, busy600, per_slot = map(int, out.stdout.split())
    assert 64 <= busy64 < per_slot * 64 and 2 * busy64 + 8 * 64 <= 1024
    assert busy4 == per_slot * 4  # few slots: the whole lookahead fits
    assert busy600 == 600  # the limit cannot even hold the busy ones' sockets: no lookahead


# Like PARKED_SCRIPT, counting the GETs in flight at once over the whole run.
SLOW_NETWORK_SCRIPT = PARKED_SCRIPT.replace(
    "async def main(urls):",
    """import probe.net.http11 as http11
real_get, in_flight, peak = http11.get, [0], [0]

async def counted_get(*args, **kwargs):
    in_flight[0] += 1
    peak[0] = max(peak[0], in_flight[0])
    try:
        return await real_get(*args, **kwargs)
    finally:
        in_flight[0] -= 1

http11.get = counted_get

async def main(urls):""",
).replace('"counts": dict(summary.counts)', '"counts": dict(summary.counts), "peak": peak[0]')


def test_a_network_slower_than_the_grace_keeps_the_limit_on_busy_targets(clean_lab):
    """On a path where every connect takes longer than the grace (2 s round trips), each
    target goes idle while connecting; once its connect succeeds it waits to be busy again,
    so with one busy slot the three sites are never fetched at once (before: all three)."""
    lab = clean_lab
    sites = ["24.kg", "kaktus.media", "vesti.kg"]
    for site in sites:
        lab.throttle(lab.site(site).ip, delay_ms=2000)
    urls = [f"http://{site}/" for site in sites]
    code = f"import sys; sys.argv[1:] = {urls!r}\n" + SLOW_NETWORK_SCRIPT.replace(
        "timeouts=Timeouts(tcp=4)", "timeouts=Timeouts(tcp=6, tls=6, http=10)"
    )
    out = json.loads(lab.python(lab.vantage, code, timeout=120))
    assert sum(out["counts"].values()) == 3
    assert out["peak"] == 1
