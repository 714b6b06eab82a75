"""Measure one target: DNS, TCP, TLS and HTTP at the vantage, and the control.

For a URL, all independent steps run concurrently:

1. DNS (A and AAAA) at the network's own resolver and at every control resolver;
2. as soon as the network's resolver answers, a TCP connect to every address on the URL's
   port, with a TLS handshake (SNI = host, certificate verified) for https URLs, and for
   http URLs a validation handshake on :443 (a valid certificate proves an address serves
   the domain);
3. the GET goes over the first connection that succeeded (so the page is tied to an address),
   following up to 10 redirects, each hop measured the same way with the network's resolver;
4. once every resolver has answered, the test helper is asked to do the same from outside.

Everything the network sends is hostile until checked (see the issue "nothing freezes,
nothing leaks"):

* the probe never connects to a bogon address (private, loopback, link-local, CGNAT, ...:
  :func:`probe.model.addresses.is_bogon`), whether a DNS answer or a redirect names it, unless
  the user listed that very address as the target's host; the refusal is recorded as a
  :class:`TCPConnect` failing with ``REFUSED_BOGON``;
* nor to the vantage's own addresses (``Settings.own_address``: behind a NAT the home
  router's admin page), with the same exception; recorded as failing with
  ``REFUSED_OWN_ADDRESS`` (the scrubber then hides the address itself);
* redirects are followed to http and https URLs only, never to a port browsers refuse
  (:mod:`probe.measure.redirects`); a Location that is not a valid URL is a failure for that
  hop;
* at most :data:`MAX_ADDRESSES_PER_FAMILY` addresses per family are tried for a host (a DNS
  answer with thousands of addresses would otherwise open thousands of sockets); the DNS
  records keep every address, so the cap shows as more addresses than connects.

A timeout is evidence only if the probe was listening: a step that timed out while the
probe's own event loop stalled for :data:`STALL_SHARE` of its timeout or more
(:class:`~probe.net.connections.LoopLag`: a blocking call, a CPU hog, a machine too loaded to
run the probe) is measured again, once, with a fresh deadline, and the stalled attempt's records
are dropped; a lookup alone, a connection with its handshake and GET together. Should the
retry stall too, its failure is :data:`~probe.model.failures.LOOP_STALLED`, which the
analysis never takes for blocking.

Nothing here decides anything: :mod:`probe.analysis` does, from the records.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from ..model import failures
from ..model.addresses import canonical_ip, is_bogon, is_ip_literal
from ..model.http import REDIRECT_CODES
from ..model.records import (
    Control,
    DNSQuery,
    HTTPRequest,
    Observations,
    Target,
    TCPConnect,
    TLSHandshake,
    hop_failure,
    measurement_time,
)
from ..net import http11, resolvers
from ..net.connections import (
    Clock,
    Conn,
    LoopLag,
    presented_certificate,
    tls_handshake,
)
from ..ooni.helper_protocol import control_request, endpoints_for
from .control import HelperClient
from .politeness import Pacing, Politeness, RateLimit
from .redirects import redirect_target, remember_cookies
from .settings import Settings

#: Addresses tried per host and hop, per address family (IPv4, IPv6).
MAX_ADDRESSES_PER_FAMILY = 8
#: A step that timed out while the loop stalled for this share of its timeout is measured again.
STALL_SHARE = 0.1

CERTIFICATE_FAILURES = frozenset(
    {
        failures.SSL_INVALID_HOSTNAME,
        failures.SSL_UNKNOWN_AUTHORITY,
        failures.SSL_INVALID_CERTIFICATE,
    }
)


class _Step(Protocol):
    """A step's record (DNSQuery, TCPConnect, TLSHandshake, HTTPRequest): its failure and times."""

    failure: str | None
    t0: float
    t: float


_T = TypeVar("_T")


@dataclass
class _Measurement:
    """One target's measurement in progress: its records, clock and policy."""

    obs: Observations
    clock: Clock
    #: The bogon addresses this target may connect to: its own host, when the user listed
    #: a bogon IP literal; else none.
    bogons_allowed: frozenset[str]
    late: resolvers.LateReplies
    lag: LoopLag
    pace: Pacing | None = None


class Measurer:
    """Measures targets; shared by all targets of a run (limits are run-wide)."""

    def __init__(
        self,
        settings: Settings,
        *,
        doh_client: resolvers.DoHClient | None,
        helpers: HelperClient | None,
        throttle: RateLimit | None = None,
    ) -> None:
        self.settings = settings
        self.doh_client = doh_client
        self.helpers = helpers
        self.politeness = Politeness(settings, throttle)

    async def _lookup(
        self, m: _Measurement, resolver: resolvers.Resolver, host: str, qtype: str, depth: int
    ) -> DNSQuery:
        for retry in (False, True):  # once more when the loop stalled (see the module docstring)
            await self.politeness.throttled()
            query = await resolvers.lookup(
                resolver,
                host,
                qtype,
                timeout=self.settings.timeouts.dns,
                clock=m.clock,
                depth=depth,
                ssl_context=self.settings.ssl_context,
                doh_client=self.doh_client,
                late=m.late,
            )
            if not self._stalled(m, query, self.settings.timeouts.dns) or retry:
                break
        return query

    def _stalled(self, m: _Measurement, record: _Step, timeout: float) -> bool:
        """Whether ``record`` timed out while the loop stalled for STALL_SHARE of ``timeout``
        or more; if so its failure becomes failures.LOOP_STALLED."""
        if record.failure != failures.GENERIC_TIMEOUT:
            return False
        start = m.clock.start
        if m.lag.stalled(start + record.t0, start + record.t) < STALL_SHARE * timeout:
            return False
        record.failure = failures.LOOP_STALLED
        return True

    async def _unless_stalled(
        self, m: _Measurement, attempt: Callable[[list[_Step]], Awaitable[_T]]
    ) -> _T:
        """``attempt(made)``, which lists in ``made`` the records it makes; once more when one
        of them stalled, the stalled attempt's records being dropped from the observations."""
        made: list[_Step] = []
        result = await attempt(made)
        if not any(record.failure == failures.LOOP_STALLED for record in made):
            return result
        stalled = {id(record) for record in made}
        m.obs.tcp[:] = [r for r in m.obs.tcp if id(r) not in stalled]
        m.obs.tls[:] = [r for r in m.obs.tls if id(r) not in stalled]
        return await attempt([])

    async def _resolve(
        self, m: _Measurement, resolver: resolvers.Resolver, host: str, depth: int
    ) -> list[str]:
        queries = await asyncio.gather(
            self._lookup(m, resolver, host, "A", depth),
            self._lookup(m, resolver, host, "AAAA", depth),
        )
        m.obs.dns.extend(queries)
        return _unique(a for q in queries for a in q.addresses)

    async def measure(
        self,
        target: Target,
        *,
        headers: dict[str, str] | None = None,
        pace: Pacing | None = None,
    ) -> Observations:
        r"""Measure one target; failures are recorded, only ``pace.turn`` may raise.

        ``headers`` replaces the settings' request headers for this target (the helper
        forwards the probe's). ``pace``, when given, is how a runner keeps a limit on the
        targets keeping the vantage busy: its ``turn`` is awaited with the system resolver's
        addresses (the host itself for an IP literal) before anything else is sent; the target
        goes ``idle`` once every connection and query is over and only the listening for late
        DNS replies remains (up to ``dns_duplicate_window`` seconds), or as soon as one of its
        connects waits on a silent address (a blackhole: it may wait out the whole TCP
        timeout, sending nothing more), and ``resume``\ s should that connect succeed.
        """
        with LoopLag.watching() as lag:
            return await self._measure(target, headers, pace, lag)

    async def _measure(
        self, target: Target, headers: dict[str, str] | None, pace: Pacing | None, lag: LoopLag
    ) -> Observations:
        obs = Observations(
            input=target.input,
            url=target.url,
            domain=target.domain,
            category=target.category,
            start_time=measurement_time(),
        )
        host = target.domain
        m = _Measurement(
            obs=obs,
            clock=Clock(),
            bogons_allowed=frozenset({canonical_ip(host) or host} if is_bogon(host) else ()),
            late=resolvers.LateReplies(self.settings.dns_duplicate_window),
            lag=lag,
            pace=pace,
        )
        try:
            if pace is not None:  # outside the task group, so what it raises stays as is
                system_addresses = await self._system_addresses(m, host)
                await pace.turn(system_addresses)
            async with asyncio.TaskGroup() as tasks:
                # Without a pace, the control resolvers are asked at once, in parallel.
                system = None if pace else tasks.create_task(self._system_addresses(m, host))
                controls = [
                    tasks.create_task(self._resolve(m, resolver, host, 0))
                    for resolver in self.settings.control_resolvers
                ]
                if system is not None:
                    system_addresses = await system
                tasks.create_task(
                    self._fetch(m, target.url, system_addresses, headers or self.settings.headers)
                )
                control_addresses = [a for task in await asyncio.gather(*controls) for a in task]
                if self.helpers is not None:
                    asked = _unique([*_capped(system_addresses), *_capped(control_addresses)])
                    obs.control = await self._control(target.url, asked, m.clock)
            if pace is not None:
                pace.idle()
            await m.late.wait()
        finally:
            m.late.cancel()
        obs.runtime = m.clock()
        _sort(obs)
        return obs

    async def _system_addresses(self, m: _Measurement, host: str) -> list[str]:
        if is_ip_literal(host):
            return [host]
        return await self._resolve(m, self.settings.system_resolver, host, 0)

    async def fetch(
        self, obs: Observations, addresses: list[str], headers: dict[str, str], clock: Clock
    ) -> None:
        """The connects, handshakes and GET of ``obs.url`` with its redirects, its host having
        resolved to ``addresses`` (the test helper resolves it itself): recorded into ``obs``
        as they happen, so a caller that stops it (a deadline) keeps the records made so far.
        No bogon is connected to; no late DNS reply is listened for."""
        with LoopLag.watching() as lag:
            late = resolvers.LateReplies(0)
            m = _Measurement(obs, clock, bogons_allowed=frozenset(), late=late, lag=lag)
            await self._fetch(m, obs.url, addresses, headers)

    async def _control(self, url: str, addresses: list[str], clock: Clock) -> Control:
        assert self.helpers is not None
        own = self.settings.own_address  # the helper is not sent to the volunteer's router
        addresses = [a for a in addresses if own is None or not own(a)]
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        endpoints = endpoints_for(addresses, port, parts.scheme, parts.port is not None)
        request = control_request(url, endpoints, self.settings.headers)
        return await self.helpers.control(request, clock)

    async def _fetch(
        self, m: _Measurement, url: str, addresses: list[str], headers: dict[str, str]
    ) -> None:
        """The connectivity steps and the GET, hop after hop."""
        known = {urlsplit(url).hostname: addresses}
        cookies: dict[str, dict[str, str]] = {}
        for depth in range(self.settings.max_redirects + 1):
            parts = urlsplit(url)
            host = parts.hostname or ""
            if host not in known:
                known[host] = (
                    [host]
                    if is_ip_literal(host)
                    else await self._resolve(m, self.settings.system_resolver, host, depth)
                )
            if not known[host]:
                return  # the DNS records say why
            hop = await self._hop(m, url, known[host], depth, headers, cookies.get(host))
            m.obs.http.append(hop)
            remember_cookies(cookies, host, hop)
            if hop.failure or hop.status_code not in REDIRECT_CODES:
                return
            if hop.location is None:
                return
            if depth == self.settings.max_redirects:
                hop.failure = failures.TOO_MANY_REDIRECTS
                return
            next_url, problem = redirect_target(hop.location)
            if next_url is None:
                hop.failure = problem
                return
            url = next_url

    async def _hop(
        self,
        m: _Measurement,
        url: str,
        addresses: list[str],
        depth: int,
        headers: dict[str, str],
        cookie_jar: dict[str, str] | None,
    ) -> HTTPRequest:
        obs, clock = m.obs, m.clock
        addresses = _capped(addresses)
        parts = urlsplit(url)
        secure = parts.scheme == "https"
        port = parts.port or (443 if secure else 80)
        host = parts.hostname or ""
        chosen: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        cookie = "; ".join(f"{k}={v}" for k, v in (cookie_jar or {}).items()) or None
        timeouts = self.settings.timeouts

        async def connect_and_get(ip: str, made: list[_Step]) -> HTTPRequest | None:
            async with self.politeness.connection(ip, port, clock, depth, m.pace) as (tcp, conn):
                self._stalled(m, tcp, timeouts.tcp)
                obs.tcp.append(tcp)
                made.append(tcp)
                if conn is None:
                    return None
                if secure:
                    handshake = await self._tls(conn, host, ip, port, clock, depth, "fetch")
                    self._stalled(m, handshake, timeouts.tls)
                    obs.tls.append(handshake)
                    made.append(handshake)
                    if handshake.failure:
                        return None
                if chosen.done() and chosen.result() != ip:  # a retry keeps its address
                    conn.close()
                    return None
                if not chosen.done():
                    chosen.set_result(ip)
                hop = await http11.get(
                    conn,
                    url,
                    timeout=timeouts.http,
                    clock=clock,
                    ip=ip,
                    port=port,
                    depth=depth,
                    headers=headers,
                    cookie=cookie,
                    max_body=self.settings.max_body,
                )
                self._stalled(m, hop, timeouts.http)
                made.append(hop)
                return hop

        async def endpoint(ip: str) -> HTTPRequest | None:
            if not self._allowed(m, ip, port, depth):
                return None
            return await self._unless_stalled(m, lambda made: connect_and_get(ip, made))

        async def connect_and_validate(ip: str, made: list[_Step]) -> None:
            async with self.politeness.connection(ip, 443, clock, depth, m.pace) as (tcp, conn):
                self._stalled(m, tcp, timeouts.tcp)
                made.append(tcp)
                if conn is None:
                    obs.tcp.append(tcp)
                    return
                handshake = await self._tls(conn, host, ip, 443, clock, depth, "validate")
                self._stalled(m, handshake, timeouts.tls)
                obs.tls.append(handshake)
                made.append(handshake)
                conn.close()

        async def validate(ip: str) -> None:
            if not self._allowed(m, ip, 443, depth):
                return
            await self._unless_stalled(m, lambda made: connect_and_validate(ip, made))

        jobs = [
            validate(ip) if purpose == "validate" else endpoint(ip)
            for ip, _port, purpose in connects(url, addresses, depth)
        ]
        results = await asyncio.gather(*jobs)
        for result in results:
            if isinstance(result, HTTPRequest):
                return result
        failure = hop_failure(obs, depth, port, addresses) or failures.unknown("no connection")
        return HTTPRequest(url=url, depth=depth, failure=failure)

    def _allowed(self, m: _Measurement, ip: str, port: int, depth: int) -> bool:
        """Whether ``ip`` may be connected to; a refusal is recorded as a TCP connect."""
        listed = canonical_ip(ip) in m.bogons_allowed
        own, policy = self.settings.own_address, self.settings.address_refusal
        failure: str | None = None
        if is_bogon(ip) and not listed and not self.settings.exempt(ip):
            failure = failures.REFUSED_BOGON
        elif own is not None and own(ip) and not listed:
            failure = failures.REFUSED_OWN_ADDRESS
        elif policy is not None:
            failure = policy(ip, port)
        if failure is None:
            return True
        now = m.clock()
        m.obs.tcp.append(TCPConnect(ip, port, failure, depth, now, now))
        return False

    async def _tls(
        self, conn: Conn, host: str, ip: str, port: int, clock: Clock, depth: int, purpose: str
    ) -> TLSHandshake:
        record = await tls_handshake(
            conn,
            host,
            self.settings.ssl_context,
            timeout=self.settings.timeouts.tls,
            clock=clock,
            ip=ip,
            port=port,
            depth=depth,
            purpose=purpose,
        )
        if record.failure in CERTIFICATE_FAILURES:
            await self.politeness.throttled()
            record.cert_sha256 = await presented_certificate(
                ip, port, host, self.settings.timeouts.tls
            )
        return record


def connects(url: str, addresses: list[str], depth: int) -> list[tuple[str, int, str | None]]:
    """The connects a hop to ``url`` at redirect ``depth`` makes, its host having resolved to
    ``addresses``: ``(ip, port, purpose)``, purpose being the TLS handshake's ("fetch",
    "validate") or None for none. At most MAX_ADDRESSES_PER_FAMILY addresses per family, each
    on the URL's port (TLS for https); an http URL's also on :443 at depth 0 (validation),
    unless its port is explicit or its host an IP address. Bogons among them are refused."""
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    capped = _capped(addresses)
    made: list[tuple[str, int, str | None]] = [
        (ip, port, "fetch" if secure else None) for ip in capped
    ]
    if not secure and parts.port is None and depth == 0 and not is_ip_literal(parts.hostname or ""):
        made += [(ip, 443, "validate") for ip in capped]
    return made


def _capped(addresses: list[str]) -> list[str]:
    """The first MAX_ADDRESSES_PER_FAMILY IPv4 and IPv6 addresses, in their order."""
    v4 = [a for a in addresses if ":" not in a][:MAX_ADDRESSES_PER_FAMILY]
    v6 = [a for a in addresses if ":" in a][:MAX_ADDRESSES_PER_FAMILY]
    kept = set(v4) | set(v6)
    return [a for a in addresses if a in kept]


def _sort(obs: Observations) -> None:
    for records in (obs.dns, obs.tcp, obs.tls):
        records.sort(key=lambda r: (r.depth, r.t0))


def _unique(items: Any) -> list[str]:
    return list(dict.fromkeys(items))
