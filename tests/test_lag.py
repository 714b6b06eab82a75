"""The probe's own event-loop lag: a deadline that passed while the probe was stalled is no
evidence (issue 16, item 18).

A blocking call, a CPU hog or a machine too loaded to run the probe lets a step's deadline pass
with its answer unread; the step is measured again once, and a step that stalls twice is
inconclusive, never a block. Each test here stalls the loop on purpose, with a blocking
``time.sleep`` run inside it at a chosen moment: by a loopback server sharing the loop (DNS,
HTTP), by the client's TLS context as the handshake starts (TLS, also in the lab, against the
test helper). Nothing asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from typing import Any

import dns.message
import dns.rdatatype
import dns.rrset
import pytest
import trustme

from probe.analysis import analyze
from probe.analysis.observed import LOOP_STALLED
from probe.measure.measurer import Measurer
from probe.measure.settings import Settings, Timeouts
from probe.model import failures as F
from probe.model.records import HTTPRequest, Observations, Target, TLSHandshake
from probe.net.connections import LAG_INTERVAL, LoopLag
from probe.net.resolvers import parse_resolver
from tests.test_analysis import (
    DOMAIN,
    HELPER_HTTP_FAILED,
    IP,
    NO_HELPER,
    ctl_dns,
    helper,
    no_connection,
    page,
    site,
    sys_dns,
)

#: Every step's timeout in the loopback tests; each stall is longer.
TIMEOUT = 1.0
STALL = TIMEOUT + 0.5


# ------------------------------------------------------------------------------ the monitor


def test_the_monitor_sees_a_blocking_call_in_the_loop():
    async def main() -> tuple[float, float]:
        with LoopLag.watching() as lag:
            start = time.monotonic()
            time.sleep(STALL)  # the loop runs nothing meanwhile, the monitor included
            end = time.monotonic()
            before = lag.stalled(start, end)  # the monitor has not woken since
            await asyncio.sleep(2 * LAG_INTERVAL)
            return before, lag.stalled(start, end)  # now it has, and recorded the stall

    before, after = asyncio.run(main())
    assert before >= STALL - LAG_INTERVAL
    assert after >= STALL - LAG_INTERVAL


def test_one_monitor_per_loop_runs_while_measurements_do():
    async def main() -> None:
        with LoopLag.watching() as first, LoopLag.watching() as second:
            assert first is second
            task = first._task
            assert task is not None and not task.done()
        await asyncio.sleep(0)
        assert task.cancelled()
        assert asyncio.get_running_loop() not in LoopLag._loops

    asyncio.run(main())


# ------------------------------------------------------------------------------ the analysis

HTTPS = f"https://{DOMAIN}/"
ELCAT = (
    b'<html><head><title>Blocked</title></head><body><p class="error">Access to the '
    b"requested website has been blocked by judicial decision!</p></body></html>"
)


def stalled_tls(failure: str) -> Observations:
    """The https fetch's handshake timed out; the helper's succeeded."""
    return site(tls=[TLSHandshake(IP, 443, DOMAIN, failure)], http=[no_connection(HTTPS, failure)])


def stalled_dns(failure: str) -> Observations:
    """The system resolver's lookup timed out; DoH resolved the name."""
    return site(dns=[sys_dns((), failure), ctl_dns("https")], tcp=[], tls=[], http=[])


def ghost(failure: str) -> Observations:
    """The flaky test's run: no helper, every control resolver misbehaving (which counts as
    an answer without addresses), and the https fetch's handshake timed out, so nothing
    validates the system resolver's answer: a "ghost answer"."""
    return site(
        dns=[sys_dns(), ctl_dns("https", (), F.DNS_MISBEHAVING)],
        tls=[TLSHandshake(IP, 443, DOMAIN, failure)],
        http=[no_connection(HTTPS, failure)],
        control=NO_HELPER,
    )


@pytest.mark.parametrize(
    "observations, blocking",
    [(stalled_tls, "tls"), (stalled_dns, "dns"), (ghost, "dns")],
    ids=["tls", "dns", "ghost-answer"],
)
def test_a_step_that_stalled_twice_is_inconclusive_not_blocked(observations, blocking):
    timed_out = analyze(observations(F.GENERIC_TIMEOUT))
    assert (timed_out.verdict, timed_out.blocking) == ("blocked", blocking)  # the rule matters
    v = analyze(observations(LOOP_STALLED))
    assert (v.verdict, v.blocking, v.failure) == ("inconclusive", None, LOOP_STALLED)
    assert v.evidence[0].finding == "probe_stalled"
    assert v.dns_consistency is None
    assert "timed out while the probe itself stalled" in v.reason


DIFFERENT = b"<title>Something else</title>" + b"y" * 100


@pytest.mark.parametrize(
    "body, title, confirmed",
    [(ELCAT, "Blocked", True), (DIFFERENT, "Something else", False)],
    ids=["fingerprint", "page-differs"],
)
def test_a_page_still_decides_when_a_step_stalled(body, title, confirmed):
    url = f"http://{DOMAIN}/"
    validation = TLSHandshake(IP, 443, DOMAIN, LOOP_STALLED, purpose="validate")
    obs = site(url, tls=[validation], http=[page(url, body=body, title=title, headers=[])])
    v = analyze(obs)
    assert (v.verdict, v.blocking, v.confirmed) == ("blocked", "http-diff", confirmed)


def test_a_helper_fetch_that_stalled_is_no_control():
    """Our GET timed out after connecting; probe's own helper stalled twice on its GET."""
    url = f"http://{DOMAIN}/"
    failed = dict(HELPER_HTTP_FAILED, failure=LOOP_STALLED)
    ours = HTTPRequest(url=url, ip=IP, port=80, failure=F.GENERIC_TIMEOUT)
    obs = site(url, http=[ours], control=helper(http=failed))
    assert analyze(obs).verdict == "inconclusive"
    failed["failure"] = "generic_timeout_error"
    assert analyze(obs).verdict == "down"  # the rule matters


# ------------------------------------------------------------------------------ the measurer


class StallingDNS(asyncio.DatagramProtocol):
    """A loopback resolver in the probe's own loop: ``stall.test`` is 127.0.0.1. It blocks the
    loop (``time.sleep``) before answering the first ``stalls`` A queries."""

    def __init__(self, stalls: int) -> None:
        self.stalls = stalls
        self.asked = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        query = dns.message.from_wire(data)
        reply = dns.message.make_response(query)
        if query.question[0].rdtype == dns.rdatatype.A:
            self.asked += 1
            if self.asked <= self.stalls:
                time.sleep(STALL)  # the query's deadline passes meanwhile
            reply.answer.append(
                dns.rrset.from_text_list(query.question[0].name, 60, "IN", "A", ["127.0.0.1"])
            )
        self.transport.sendto(reply.to_wire(), addr)


class StallingHTTP:
    """A loopback web server in the probe's own loop that blocks the loop (``time.sleep``)
    before answering the first ``stalls`` requests."""

    def __init__(self, stalls: int) -> None:
        self.stalls = stalls
        self.asked = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        self.asked += 1
        if self.asked <= self.stalls:
            time.sleep(STALL)  # the GET's deadline passes meanwhile
        body = b"<title>fine</title>"
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()


class StallingContext(ssl.SSLContext):
    """A client TLS context that blocks the loop as its first ``stalls`` handshakes start (in
    the handshake's deadline)."""

    stalls = 0

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:  # type: ignore[override]
        if self.stalls > 0:
            self.stalls -= 1
            time.sleep(STALL)
        return super().wrap_bio(*args, **kwargs)


def measurer(dns_port: int = 9, context: ssl.SSLContext | None = None) -> Measurer:
    settings = Settings(
        system_resolver=parse_resolver(f"udp://127.0.0.1:{dns_port}", engine="system"),
        control_resolvers=[],
        ssl_context=context or ssl.create_default_context(),
        timeouts=Timeouts(dns=TIMEOUT, tcp=TIMEOUT, tls=TIMEOUT, http=TIMEOUT),
        dns_duplicate_window=0,
    )
    return Measurer(settings, doh_client=None, helpers=None)


def target(url: str) -> Target:
    host = url.split("/")[2].rsplit(":", 1)[0]
    return Target(input=url, url=url, domain=host)


def failures_of(obs: Observations) -> list[str | None]:
    return [r.failure for r in (*obs.dns, *obs.tcp, *obs.tls, *obs.http)]


@pytest.mark.asyncio
async def test_a_lookup_that_stalled_is_asked_again():
    loop = asyncio.get_running_loop()
    server = StallingDNS(stalls=1)
    transport, _ = await loop.create_datagram_endpoint(lambda: server, local_addr=("127.0.0.1", 0))
    try:
        port = transport.get_extra_info("sockname")[1]
        obs = await measurer(port).measure(target("http://stall.test:8/"))
    finally:
        transport.close()
    a = [q for q in obs.dns if q.query_type == "A"]
    assert [(q.failure, q.addresses) for q in a] == [(None, ["127.0.0.1"])]
    assert server.asked == 2


@pytest.mark.asyncio
@pytest.mark.parametrize("stalls, failure", [(1, None), (2, LOOP_STALLED)])
async def test_a_get_that_stalled_is_fetched_again_once(stalls, failure):
    server = StallingHTTP(stalls)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    async with listener:
        obs = await measurer().measure(target(f"http://127.0.0.1:{port}/"))
    assert [(h.failure, h.status_code) for h in obs.http] == [(failure, None if failure else 200)]
    assert server.asked == 2
    assert [t.failure for t in obs.tcp] == [None]  # the stalled attempt's connect is dropped
    assert F.GENERIC_TIMEOUT not in failures_of(obs)


@pytest.fixture(scope="module")
def loopback_tls(tmp_path_factory) -> dict[str, Any]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(server)
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return {"server": server, "ca": str(path)}


@pytest.mark.asyncio
@pytest.mark.parametrize("stalls, failure", [(1, None), (2, LOOP_STALLED)])
async def test_a_handshake_that_stalled_is_measured_again_once(loopback_tls, stalls, failure):
    server = StallingHTTP(0)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=loopback_tls["server"])
    port = listener.sockets[0].getsockname()[1]
    context = StallingContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(loopback_tls["ca"])
    context.stalls = stalls
    async with listener:
        obs = await measurer(context=context).measure(target(f"https://127.0.0.1:{port}/"))
    assert [t.failure for t in obs.tls] == [failure]
    assert [t.failure for t in obs.tcp] == [None]
    assert [h.status_code for h in obs.http] == [None if failure else 200]
    assert F.GENERIC_TIMEOUT not in failures_of(obs)


# ------------------------------------------------------------------------------ in the lab

LAB_SNIPPET = """
import asyncio, contextlib, json, ssl, sys, time
from probe.analysis import analyze
from probe.measure.control import HelperClient
from probe.measure.measurer import Measurer
from probe.measure.settings import Settings, Timeouts
from probe.net.kept import KeptClient
from probe.net.resolvers import parse_resolver
from probe.model.records import Target

url, host, helper, ca, system, control, stalls = json.loads(sys.argv[1])


class StallingContext(ssl.SSLContext):
    # As the first handshakes with the site start, makes the loop block (3 s, longer than the
    # TLS timeout) once the ClientHello is sent, while the handshake waits for the answer.
    stalls = 0

    def wrap_bio(self, *args, **kwargs):
        if self.stalls > 0 and kwargs.get("server_hostname") == host:
            self.stalls -= 1
            asyncio.get_running_loop().call_soon(time.sleep, 3)
        return super().wrap_bio(*args, **kwargs)


async def main():
    context = StallingContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(ca)
    context.set_alpn_protocols(["http/1.1"])
    context.stalls = stalls
    settings = Settings(
        system_resolver=parse_resolver(system, engine="system"),
        control_resolvers=[parse_resolver(control)],
        ssl_context=context,
        timeouts=Timeouts(dns=2, tcp=2, tls=2, http=4, control=10),
        dns_duplicate_window=0,
    )
    plain = ssl.create_default_context(cafile=ca)
    async with contextlib.aclosing(KeptClient(plain, 2)) as kept:
        helpers = HelperClient([helper], kept, timeout=10)
        measurer = Measurer(settings, doh_client=None, helpers=helpers)
        obs = await measurer.measure(Target(input=url, url=url, domain=host))
    v = analyze(obs)
    print(json.dumps({"verdict": v.verdict, "blocking": v.blocking, "failure": v.failure,
                      "tls": [t.failure for t in obs.tls], "reason": v.reason}))


asyncio.run(main())
"""


@pytest.mark.parametrize(
    "stalls, verdict, failure", [(1, "accessible", None), (99, "inconclusive", LOOP_STALLED)]
)
def test_a_probe_stalled_past_the_tls_deadline_never_calls_a_site_blocked(
    clean_lab, helper, stalls, verdict, failure
):
    """https://24.kg/ answers normally, and the helper's handshake succeeds; the probe's loop
    blocks (3 s, the TLS timeout is 2 s) while its handshake waits for the ServerHello: once
    (measured again: accessible), or every time (inconclusive, the stall named). Before the
    fix: blocked tls."""
    lab = clean_lab
    # The answer takes 400 ms or more: the handshake is surely waiting when the loop blocks
    # (a ServerHello already there would let it finish without waiting, deadline or not).
    lab.throttle("24.kg", delay_ms=400)
    resolvers = [f"udp://{lab.ISP_RESOLVER}:53", f"udp://{lab.CONTROL_RESOLVER}:53"]
    args = ["https://24.kg/", "24.kg", lab.helper_url, lab.ca_file, *resolvers, stalls]
    code = LAB_SNIPPET.replace("sys.argv[1]", repr(json.dumps(args)))
    got = json.loads(lab.python(lab.vantage, code, timeout=90).strip().splitlines()[-1])
    assert (got["verdict"], got["blocking"], got["failure"]) == (verdict, None, failure), got
    assert F.GENERIC_TIMEOUT not in got["tls"], got
