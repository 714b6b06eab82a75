"""The helper's measurement: what it sees of a URL from outside the censored network.

:func:`handle_request` takes a decoded control request and answers OONI's protocol
(:mod:`probe.ooni.helper_protocol`): DNS at the helper's resolver, a TCP connect (and TLS
handshake where the URL uses TLS) to every endpoint, the fetch with redirects, and ``ip_info``.
Each endpoint is connected to once: the fetch's own connects and handshakes (redirect depth 0)
answer for the endpoints it fetches from; only the others are checked apart.
All requests share one :class:`HelperContext`, so limits (connections per address, endpoint
checks at once) hold across requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..measure.measurer import Measurer, connects
from ..measure.settings import Settings, Timeouts, exempt
from ..model import failures
from ..model.addresses import canonical_ip, is_bogon
from ..model.records import HTTPRequest, Observations
from ..net import resolvers
from ..net.connections import Clock, tcp_connect, tls_handshake
from ..ooni.helper_protocol import (
    FLAG_BOGON,
    FLAG_HELPER,
    FLAG_PROBE,
    FLAG_VALID_TLS,
    dns_failure,
    go_header_name,
    http_failure,
    legacy_failure,
)
from .asn import AsnDB
from .host import OwnHost
from .requests import (
    Endpoint,
    HelperRequest,
    bogon_refusal,
    build_endpoints,
    parse_request,
)

#: Endpoint checks at once, over all requests (each holds a socket).
MAX_CONNECTS = 512


@dataclass
class HelperTimeouts:
    """Per-step timeouts: OONI's test helper's for DNS and the fetch; for each endpoint's
    connect and handshake, the probe's own (OONI's helper gives both 15 s together; a 10 s
    connect takes the same SYN retries, and the helper is not more patient than the probe)."""

    dns: float = Timeouts.dns
    tcp: float = Timeouts.tcp
    tls: float = Timeouts.tls
    http: float = 15.0  # the whole fetch, redirects included (after its DNS)
    #: The whole measurement after its DNS, checks included, for a host whose fetch ran out
    #: of time lately (:class:`SlowHosts`): a never-answering server holds a slot this long.
    slow: float = 5.0


class SlowHosts:
    """URL hosts whose fetch ran out of time lately: their next measurements get the shorter
    :attr:`HelperTimeouts.slow` deadline, so requests for a server that never answers do not
    hold the helper's slots for a whole fetch deadline each. A fetch of the host that ends in
    time (within the shorter deadline) forgets it; so do ``remember`` seconds.
    At most ``max_hosts`` are kept (the oldest go first)."""

    def __init__(
        self,
        remember: float = 600.0,
        max_hosts: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.remember = remember
        self.max_hosts = max_hosts
        self.clock = clock
        self._until: dict[str, float] = {}

    def is_slow(self, host: str) -> bool:
        until = self._until.get(host)
        if until is not None and until <= self.clock():
            del self._until[host]
            return False
        return until is not None

    def ran_out_of_time(self, host: str) -> None:
        self._until.pop(host, None)  # (re-inserted last: the newest)
        self._until[host] = self.clock() + self.remember
        while len(self._until) > self.max_hosts:
            del self._until[next(iter(self._until))]

    def answered(self, host: str) -> None:
        self._until.pop(host, None)


# ---------------------------------------------------------------- the measurement


class HelperContext:
    """What every measurement shares: resolver, trust anchors, ASN data, DoH client, policy."""

    def __init__(
        self,
        *,
        resolver: resolvers.Resolver,
        ssl_context: ssl.SSLContext,
        asn: AsnDB | None = None,
        timeouts: HelperTimeouts | None = None,
        max_endpoints: int = 64,
        own_host: OwnHost | None = None,
        doh_client: resolvers.DoHClient | None = None,
        bogons_exempt: tuple[str, ...] = (),
    ) -> None:
        self.resolver = resolver
        # Tests only (see Settings.bogons_exempt): networks the helper measures, bogons as they are.
        self.bogons_exempt = tuple(ipaddress.ip_network(n) for n in bogons_exempt)
        self.ssl_context = ssl_context
        self.asn = asn
        self.timeouts = timeouts or HelperTimeouts()
        self.max_endpoints = max_endpoints
        self.own_host = own_host
        self.connect_slots = asyncio.Semaphore(MAX_CONNECTS)
        self.slow_hosts = SlowHosts()
        self.doh_client = doh_client or resolvers.DoHClient(ssl_context)
        # One measurer for every request, so its per-address limit holds across requests.
        self.measurer = Measurer(
            Settings(
                system_resolver=resolver,
                control_resolvers=[],
                ssl_context=ssl_context,
                timeouts=Timeouts(
                    dns=self.timeouts.dns,
                    tcp=self.timeouts.tcp,
                    tls=self.timeouts.tls,
                    http=self.timeouts.http,
                ),
                address_refusal=self.refusal,
                # The answer reports no duplicate DNS replies: listening for them would only
                # hold every request 0.5 s longer (a third of the helper's throughput).
                dns_duplicate_window=0,
                bogons_exempt=self.bogons_exempt,
            ),
            doh_client=self.doh_client,
            helpers=None,
        )

    def refusal(self, ip: str, port: int) -> str | None:
        """Why the helper may not connect to ``ip:port``, or None when it may: never to a
        bogon, nor to its own host (:class:`~probe.helper.host.OwnHost`)."""
        why = None if exempt(self.bogons_exempt, ip) else bogon_refusal(ip, port)
        if why is None and self.own_host is not None:
            why = self.own_host.refusal(ip, port)
        return why

    def asn_of(self, ip: str) -> int:
        return self.asn.lookup(ip) if self.asn is not None else 0

    async def aclose(self) -> None:
        await self.doh_client.aclose()


async def _resolve(req: HelperRequest, context: HelperContext, clock: Clock) -> dict[str, Any]:
    if canonical_ip(req.host) is not None:
        return {"failure": None, "addrs": [req.host]}
    queries = await asyncio.gather(
        *(
            resolvers.lookup(
                context.resolver,
                req.host,
                qtype,
                timeout=context.timeouts.dns,
                clock=clock,
                ssl_context=context.ssl_context,
                doh_client=context.doh_client,
            )
            for qtype in ("A", "AAAA")
        )
    )
    addrs = list(dict.fromkeys(a for q in queries for a in q.addresses))
    if addrs:
        return {"failure": None, "addrs": addrs}
    found = [q.failure for q in queries if q.failure]
    if failures.DNS_NXDOMAIN in found:
        return {"failure": dns_failure(failures.DNS_NXDOMAIN), "addrs": []}
    real = [f for f in found if f != failures.DNS_NO_ANSWER]
    return {"failure": dns_failure(real[0]) if real else None, "addrs": []}


async def _check(
    ep: Endpoint, req: HelperRequest, context: HelperContext, clock: Clock, deadline: float | None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """One endpoint's ``tcp_connect`` entry and, when handshaken, its ``tls_handshake`` entry;
    with a ``deadline`` (loop time), the connect and handshake end by then."""
    if ep.refusal is not None:
        return {"status": False, "failure": ep.refusal}, None
    async with context.connect_slots:
        return await _connect(ep, req, context, clock, deadline)


def _within(timeout: float, deadline: float | None) -> float:
    """``timeout``, or less so as to end by ``deadline`` (loop time; None: no deadline)."""
    if deadline is None:
        return timeout
    return max(0.0, min(timeout, deadline - asyncio.get_running_loop().time()))


async def _connect(
    ep: Endpoint, req: HelperRequest, context: HelperContext, clock: Clock, deadline: float | None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    timeout = _within(context.timeouts.tcp, deadline)
    tcp, conn = await tcp_connect(ep.ip, ep.port, timeout=timeout, clock=clock)
    tcp_entry = {"status": tcp.failure is None, "failure": legacy_failure(tcp.failure)}
    if conn is None:
        return tcp_entry, None
    if not ep.tls:
        conn.close()
        return tcp_entry, None
    handshake = await tls_handshake(
        conn,
        req.host,
        context.ssl_context,
        timeout=_within(context.timeouts.tls, deadline),
        clock=clock,
        ip=ep.ip,
        port=ep.port,
        purpose="validate",
    )
    conn.close()
    return tcp_entry, {
        "server_name": req.host,
        "status": handshake.failure is None,
        "failure": handshake.failure,
    }


async def _fetch(
    req: HelperRequest,
    obs: Observations,
    addresses: list[str],
    context: HelperContext,
    clock: Clock,
    deadline: float,
) -> HTTPRequest | None:
    """The GET, following redirects; the final hop, or None when DNS gave no address
    (whatever the reason: OONI's helper reports any failure while resolving as a DNS one).
    Its connects and handshakes go into ``obs``, also those made before a timeout."""
    try:
        async with asyncio.timeout_at(deadline):
            await context.measurer.fetch(obs, addresses, req.headers, clock)
    except TimeoutError:
        return HTTPRequest(url=req.url, failure=failures.GENERIC_TIMEOUT)
    return obs.http[-1] if obs.http else None


async def _entries(
    ep: Endpoint,
    req: HelperRequest,
    context: HelperContext,
    clock: Clock,
    obs: Observations,
    fetch: asyncio.Task[HTTPRequest | None] | None,
    deadline: float | None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``ep``'s ``tcp_connect`` entry and ``tls_handshake`` entry (None: not handshaken).

    With ``fetch`` (the fetch connects to ``ep``), from its records at redirect depth 0 once
    it is over; the endpoint is checked when there are none (the fetch ran out of time first),
    by ``deadline`` when there is one.
    """
    if fetch is not None:
        await asyncio.wait([fetch])  # (cancelling this wait leaves the fetch to its owner)
        key = (ep.ip, ep.port, 0)
        tcp = next((r for r in obs.tcp if (r.ip, r.port, r.depth) == key), None)
        tls = next((r for r in obs.tls if (r.ip, r.port, r.depth) == key), None)
        if tcp is not None and tcp.failure is not None:
            return {"status": False, "failure": legacy_failure(tcp.failure)}, None
        if not ep.tls and tcp is not None:
            return {"status": True, "failure": None}, None
        # A handshake means the connect succeeded (a :443 validation records failed ones only).
        if ep.tls and tls is not None:
            entry = {"server_name": req.host, "status": tls.failure is None, "failure": tls.failure}
            return {"status": True, "failure": None}, entry
    return await _check(ep, req, context, clock, deadline)


def http_result(hop: HTTPRequest | None) -> dict[str, Any]:
    """The ``http_request`` part of the response from the fetch's final hop."""
    failure = None if hop is None else hop.failure
    if hop is None or failure is not None or hop.status_code is None:
        return {
            "body_length": -1,
            "discovered_h3_endpoint": "",
            "failure": http_failure(failure) or "dns_lookup_error",
            "title": "",
            "headers": {},
            "status_code": -1,
        }
    headers: dict[str, str] = {}
    for name, value in hop.headers:
        headers.setdefault(go_header_name(name), value)
    return {
        "body_length": hop.body_length if hop.body_length is not None else -1,
        "discovered_h3_endpoint": "",
        "failure": None,
        "title": hop.title or "",
        "headers": headers,
        "status_code": hop.status_code,
    }


async def handle_request(request: dict[str, Any], context: HelperContext) -> dict[str, Any]:
    """Measure one control request (decoded JSON) and return the response object.

    Raises :class:`BadRequest` for a malformed request; otherwise never raises (network
    failures are reported in the answer).
    """
    req = parse_request(request, context.max_endpoints)
    clock = Clock()
    # A host whose fetch ran out of time lately gets the shorter deadline, for its checks too.
    slow = context.slow_hosts.is_slow(req.host)
    budget = context.timeouts.slow if slow else context.timeouts.http
    deadline = asyncio.get_running_loop().time() + context.timeouts.dns + budget
    checks_deadline = deadline if slow else None
    dns_result = await _resolve(req, context, clock)
    endpoints = build_endpoints(req, dns_result["addrs"], context.refusal)
    # The fetch connects to the URL's port (with TLS for https) and, for an http URL, to :443
    # with TLS: the endpoints it connects to so are measured by it alone; the others (the
    # probe's addresses the helper's DNS did not return, addresses beyond the fetch's cap,
    # other ports) are checked meanwhile.
    fetched = {
        (ip, port, purpose is not None)
        for ip, port, purpose in connects(req.url, dns_result["addrs"], depth=0)
        if context.refusal(ip, port) is None
    }
    obs = Observations(input=req.url, url=req.url, domain=req.host)
    fetch = asyncio.create_task(_fetch(req, obs, dns_result["addrs"], context, clock, deadline))
    try:
        checks = await asyncio.gather(
            *(
                _entries(
                    ep,
                    req,
                    context,
                    clock,
                    obs,
                    fetch if (ep.ip, ep.port, ep.tls) in fetched else None,
                    checks_deadline,
                )
                for ep in endpoints
            )
        )
        hop = await fetch
    finally:
        if not fetch.done():
            fetch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await fetch
    if hop is not None and hop.failure == failures.GENERIC_TIMEOUT:
        context.slow_hosts.ran_out_of_time(req.host)
    elif hop is not None and hop.status_code is not None:
        context.slow_hosts.answered(req.host)

    tcp_connect_out: dict[str, Any] = {}
    tls_out: dict[str, Any] = {}
    valid_tls: set[str] = set()
    for ep, (tcp_entry, tls_entry) in zip(endpoints, checks, strict=True):
        tcp_connect_out[ep.key] = tcp_entry
        if tls_entry is not None:
            tls_out[ep.key] = tls_entry
            if tls_entry["status"]:
                valid_tls.add(ep.ip)

    flags: dict[str, int] = {}
    for _key, ip, _port in req.endpoints:
        flags[ip] = flags.get(ip, 0) | FLAG_PROBE
    for ip in dns_result["addrs"]:
        ip = canonical_ip(ip) or ip
        flags[ip] = flags.get(ip, 0) | FLAG_HELPER
    ip_info = {}
    for ip, flag in flags.items():
        if is_bogon(ip):
            flag |= FLAG_BOGON
        if ip in valid_tls:
            flag |= FLAG_VALID_TLS
        ip_info[ip] = {"asn": context.asn_of(ip), "flags": flag}

    return {
        "tcp_connect": tcp_connect_out,
        "tls_handshake": tls_out,
        "quic_handshake": {},
        "http_request": http_result(hop),
        "http3_request": None,
        "dns": dns_result,
        "ip_info": ip_info,
    }


def describe(data: dict[str, Any], answer: dict[str, Any]) -> str:
    """What a log line says about a measurement: the URL's scheme and host, and outcomes
    (the log escapes it: the host is the client's text)."""
    parts = urlsplit(str(data.get("http_request", "")))
    http_part = answer["http_request"]
    ok = sum(1 for entry in answer["tcp_connect"].values() if entry["status"])
    outcome = http_part["failure"] or http_part["status_code"]
    return (
        f"{parts.scheme}://{parts.hostname} dns={answer['dns']['failure'] or 'ok'} "
        f"tcp={ok}/{len(answer['tcp_connect'])} http={outcome}"
    )
