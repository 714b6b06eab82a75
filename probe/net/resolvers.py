"""DNS lookups, measured: the network's own resolver and the control resolvers.

A resolver is written as a URL:

- ``udp://IP[:PORT]``: plain DNS over UDP (falls back to TCP when the reply is truncated);
- ``tcp://IP[:PORT]``: plain DNS over TCP;
- ``tls://HOST[:PORT]``: DNS over TLS (RFC 7858), certificate verified for HOST;
- ``https://HOST[:PORT]/PATH``: DNS over HTTPS (RFC 8484, POST), done over httpx.

Plain DNS can be forged by anyone on the path; DoT and DoH cannot without a certificate the
probe trusts, which is why the control relies on them. Raw answers, rcodes and the resolver
asked are all recorded: they are the evidence.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import httpx

from ..errors import DNSWrongQueryID, DoHError, ResolverError
from ..model import failures
from ..model.addresses import bracket
from ..model.records import DNSQuery
from .classify import classify
from .connections import Clock, open_tcp

DEFAULT_PORTS = {"udp": 53, "tcp": 53, "tls": 853, "https": 443}


@dataclass(frozen=True, slots=True)
class Resolver:
    """Where and how to ask. ``engine`` is "system" for the network's own resolver."""

    engine: str
    host: str
    port: int
    url: str  # canonical URL, recorded with every query


def parse_resolver(url: str, *, engine: str | None = None) -> Resolver:
    """Parse a resolver URL (see the module docstring); raises :class:`ResolverError`."""
    parts = urlsplit(url if "://" in url else f"udp://{url}")
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ResolverError(f"{url!r}: resolver must be udp://, tcp://, tls:// or https://")
    if not parts.hostname:
        raise ResolverError(f"{url!r}: resolver URL has no host")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError as exc:
        raise ResolverError(f"{url!r}: bad port") from exc
    host = parts.hostname
    shown = bracket(host)
    if scheme == "https":
        canonical = f"https://{shown}{'' if port == 443 else f':{port}'}{parts.path or '/'}"
        if parts.query:
            canonical += f"?{parts.query}"
    else:
        canonical = f"{scheme}://{shown}:{port}"
    return Resolver(engine=engine or scheme, host=host, port=port, url=canonical)


def system_resolver(resolv_conf: str | Path = "/etc/resolv.conf") -> Resolver:
    """The network's own resolver: the first ``nameserver`` in resolv.conf, asked over UDP.

    Raises :class:`ResolverError` naming the file when it has no usable nameserver.
    """
    path = Path(resolv_conf)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ResolverError(f"{path}: cannot read the system resolver: {exc.strerror}") from exc
    for line in lines:
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            address = words[1].split("%")[0]
            return parse_resolver(f"udp://{bracket(address)}", engine="system")
    raise ResolverError(f"{path}: no nameserver line")


def _make_query(hostname: str, qtype: str) -> dns.message.Message:
    query = dns.message.make_query(hostname, qtype, want_dnssec=False)
    query.flags |= dns.flags.RD
    return query


async def _tcp_exchange(
    resolver: Resolver, wire: bytes, timeout: float, ssl_context: ssl.SSLContext | None
) -> bytes:
    conn = await open_tcp(resolver.host, resolver.port, timeout)
    try:
        if ssl_context is not None:
            await conn.start_tls(ssl_context, resolver.host)
        await conn.send(struct.pack("!H", len(wire)) + wire)
        buf = b""
        while len(buf) < 2 or len(buf) < 2 + struct.unpack("!H", buf[:2])[0]:
            chunk = await conn.recv()
            if not chunk:
                raise EOFError("DNS server closed the connection")
            buf += chunk
        size = struct.unpack("!H", buf[:2])[0]
        return buf[2 : 2 + size]
    finally:
        conn.close()


async def _doh_exchange(resolver: Resolver, wire: bytes, client: httpx.AsyncClient) -> bytes:
    response = await client.post(
        resolver.url,
        content=wire,
        headers={"content-type": "application/dns-message", "accept": "application/dns-message"},
    )
    if response.status_code != 200:
        raise DoHError(f"DoH server answered HTTP {response.status_code}")
    return response.content


async def exchange(
    resolver: Resolver,
    query: dns.message.Message,
    *,
    timeout: float,
    ssl_context: ssl.SSLContext | None = None,
    doh_client: httpx.AsyncClient | None = None,
) -> dns.message.Message:
    """Send ``query`` to ``resolver`` and return the reply; raises on failure."""
    scheme = urlsplit(resolver.url).scheme
    async with asyncio.timeout(timeout):
        if scheme == "udp":
            reply, _ = await dns.asyncquery.udp_with_fallback(
                query, resolver.host, timeout=timeout, port=resolver.port
            )
            return reply
        wire = query.to_wire()
        if scheme == "tcp":
            raw = await _tcp_exchange(resolver, wire, timeout, None)
        elif scheme == "tls":
            if ssl_context is None:
                raise ValueError("DNS over TLS needs an ssl_context")
            raw = await _tcp_exchange(resolver, wire, timeout, ssl_context)
        else:
            if doh_client is None:
                raise ValueError("DNS over HTTPS needs an httpx client")
            raw = await _doh_exchange(resolver, wire, doh_client)
    reply = dns.message.from_wire(raw)
    if reply.id != query.id:
        raise DNSWrongQueryID()
    return reply


_RCODE_FAILURES = {
    dns.rcode.NXDOMAIN: failures.DNS_NXDOMAIN,
    dns.rcode.SERVFAIL: failures.DNS_SERVFAIL,
    dns.rcode.REFUSED: failures.DNS_REFUSED,
}


async def lookup(
    resolver: Resolver,
    hostname: str,
    query_type: str,
    *,
    timeout: float,
    clock: Clock,
    depth: int = 0,
    ssl_context: ssl.SSLContext | None = None,
    doh_client: httpx.AsyncClient | None = None,
) -> DNSQuery:
    """Ask ``resolver`` for ``hostname``'s A or AAAA records; never raises."""
    record = DNSQuery(
        hostname=hostname,
        query_type=query_type,
        engine=resolver.engine,
        resolver=resolver.url,
        depth=depth,
        t0=clock(),
    )
    rdtype = dns.rdatatype.from_text(query_type)
    try:
        reply = await exchange(
            resolver,
            _make_query(hostname, query_type),
            timeout=timeout,
            ssl_context=ssl_context,
            doh_client=doh_client,
        )
    except Exception as exc:
        record.failure = classify(exc)
        record.t = clock()
        return record
    record.t = clock()
    rcode = reply.rcode()
    record.rcode = dns.rcode.to_text(rcode)
    for rrset in reply.answer:
        if rrset.rdtype == rdtype:
            record.addresses.extend(rdata.address for rdata in rrset)
            record.ttl = rrset.ttl if record.ttl is None else min(record.ttl, rrset.ttl)
        elif rrset.rdtype == dns.rdatatype.CNAME:
            record.cnames.extend(rdata.target.to_text(omit_final_dot=True) for rdata in rrset)
    if rcode in _RCODE_FAILURES:
        record.failure = _RCODE_FAILURES[rcode]
    elif rcode != dns.rcode.NOERROR:
        record.failure = failures.DNS_MISBEHAVING
    elif not record.addresses:
        record.failure = failures.DNS_NO_ANSWER
    return record
