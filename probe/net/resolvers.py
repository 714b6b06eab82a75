"""DNS lookups, measured: the network's own resolver and the control resolvers.

A resolver is written as a URL:

- ``udp://IP[:PORT]``: plain DNS over UDP (falls back to TCP when the reply is truncated);
- ``tcp://IP[:PORT]``: plain DNS over TCP;
- ``tls://HOST[:PORT]``: DNS over TLS (RFC 7858), certificate verified for HOST;
- ``https://HOST[:PORT]/PATH``: DNS over HTTPS (RFC 8484, POST), over :class:`DoHClient`.

Plain DNS can be forged by anyone on the path; DoT and DoH cannot without a certificate the
probe trusts, which is why the control relies on them. Raw answers, rcodes and the resolver
asked are all recorded: they are the evidence.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import ssl
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from ..errors import DNSWrongQueryID, DoHError, NetworkError, ResolverError
from ..model import failures
from ..model.addresses import bracket
from ..model.records import DNSQuery
from . import guard
from .classify import classify
from .connections import Clock, open_tcp
from .kept import KeptClient

DEFAULT_PORTS = {"udp": 53, "tcp": 53, "tls": 853, "https": 443}
#: A DNS message is at most 64 KiB; a larger DoH answer is not DNS.
MAX_DOH_ANSWER = 65535
UDP_READ = 65535
#: How long replies are still collected after a UDP lookup got its answer (OONI: 500 ms).
DUPLICATE_WINDOW = 0.5
#: Extra replies recorded per query (a flood is evidence enough after that), and the addresses
#: kept of each.
MAX_DUPLICATES = 16
MAX_DUPLICATE_ADDRESSES = 16
#: Addresses kept of one answer, beside their total: a resolver answering thousands for one
#: name (6,433: 110 KB a measurement) must not fill the volunteer's disk.
MAX_ADDRESSES = 64
#: CNAMEs followed from the question towards its addresses; a loop stops at once.
MAX_CNAME_CHAIN = 16
#: What a lookup can raise: dnspython (bad names, malformed replies), the network, ours.
LOOKUP_ERRORS = (
    dns.exception.DNSException,
    OSError,
    EOFError,
    NetworkError,
    ValueError,
    UnicodeError,
)


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
    conn = await open_tcp(await _address(resolver), resolver.port, timeout)
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


async def _address(resolver: Resolver) -> str:
    """Where to send to a plain DNS or DoT resolver: its address, or its name's first address
    the bogon rule allows (:mod:`.guard`: the network's resolver must not point a control
    resolver's name at the volunteer's LAN)."""
    return (await guard.addresses(resolver.host, resolver.port))[0]


class DoHClient:
    """DNS over HTTPS (POST) on HTTP/1.1 connections kept alive (:class:`~.kept.KeptClient`),
    at most ``connections`` per server. Answers are capped at :data:`MAX_DOH_ANSWER` bytes;
    any other status than 200 is a :class:`DoHError`."""

    def __init__(self, ssl_context: ssl.SSLContext, connections: int = 16) -> None:
        self.http = KeptClient(ssl_context, connections)

    async def post(self, resolver: Resolver, wire: bytes) -> bytes:
        """The DNS answer ``resolver`` gives to the query ``wire``; raises on failure."""
        answer = await self.http.request(
            "POST",
            resolver.url,
            headers=[
                ("content-type", "application/dns-message"),
                ("accept", "application/dns-message"),
            ],
            body=wire,
            cap=MAX_DOH_ANSWER,
            error=_doh_error,
        )
        if answer.status != 200:
            raise DoHError(f"DoH server answered HTTP {answer.status}")
        return answer.body

    async def aclose(self) -> None:
        await self.http.aclose()


def _doh_error(reason: str) -> DoHError:
    return DoHError(f"DoH answer unusable: {reason}")


async def exchange(
    resolver: Resolver,
    query: dns.message.Message,
    *,
    timeout: float,
    ssl_context: ssl.SSLContext | None = None,
    doh_client: DoHClient | None = None,
) -> dns.message.Message:
    """Send ``query`` to ``resolver`` over TCP, DoT or DoH and return its reply; raises on
    failure. A ``udp://`` resolver is asked over TCP (after a truncated UDP reply): over UDP,
    :func:`lookup` listens for every reply itself."""
    scheme = urlsplit(resolver.url).scheme
    wire = query.to_wire()
    async with asyncio.timeout(timeout):
        if scheme in ("udp", "tcp"):
            raw = await _tcp_exchange(resolver, wire, timeout, None)
        elif scheme == "tls":
            if ssl_context is None:
                raise ValueError("DNS over TLS needs an ssl_context")
            raw = await _tcp_exchange(resolver, wire, timeout, ssl_context)
        else:
            if doh_client is None:
                raise ValueError("DNS over HTTPS needs a DoHClient")
            raw = await doh_client.post(resolver, wire)
    reply = dns.message.from_wire(raw)
    if reply.id != query.id:
        raise DNSWrongQueryID()
    if not query.is_response(reply):
        raise dns.exception.FormError("the reply answers another question")  # type: ignore[no-untyped-call]
    return reply


class LateReplies:
    """Keeps listening, for ``window`` seconds after a UDP lookup returned, for more replies.

    An injector on the path answers before the real resolver; the real answer comes later and
    is evidence (OONI's ``x_dns_duplicate_responses``, collected for 500 ms). :func:`lookup`
    hands its socket over; the replies are added to the record's ``duplicate_replies``, so
    :meth:`wait` must return before the records are used. :meth:`cancel` stops everything.
    """

    def __init__(self, window: float = DUPLICATE_WINDOW) -> None:
        self.window = window
        self._tasks: set[asyncio.Task[None]] = set()

    def listen(
        self, sock: socket.socket, query: dns.message.Message, record: DNSQuery, clock: Clock
    ) -> None:
        """Take over ``sock`` (it is closed when the window ends)."""
        task = asyncio.create_task(self._listen(sock, query, record, clock))
        self._tasks.add(task)

    async def _listen(
        self, sock: socket.socket, query: dns.message.Message, record: DNSQuery, clock: Clock
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.window):
                while len(record.duplicate_replies) < MAX_DUPLICATES:
                    data = await loop.sock_recv(sock, UDP_READ)
                    _reply, described = _judge(query, data, clock())
                    record.duplicate_replies.append(described)
        except (TimeoutError, OSError):
            pass  # the window ended, or an ICMP error: nothing more will come
        finally:
            sock.close()

    async def wait(self) -> None:
        """Return once every window has ended."""
        while self._tasks:
            await asyncio.gather(*self._tasks)
            self._tasks = {task for task in self._tasks if not task.done()}

    def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()


def _judge(
    query: dns.message.Message, data: bytes, t: float
) -> tuple[dns.message.Message | None, dict[str, Any]]:
    """``(reply, description)``: the reply when it is the valid answer to ``query``, else None;
    the description is what ``duplicate_replies`` records of it."""
    described: dict[str, Any] = {"rcode": None, "addresses": [], "wrong_id": False, "t": t}
    if len(data) >= 2 and int.from_bytes(data[:2], "big") != query.id:
        described["wrong_id"] = True
    try:
        reply = dns.message.from_wire(data)
    except (dns.exception.DNSException, ValueError, UnicodeError, struct.error):
        return None, described  # not DNS
    described["rcode"] = dns.rcode.to_text(reply.rcode())
    described["addresses"] = [
        rdata.address
        for rrset in reply.answer
        if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)
        for rdata in rrset
    ][:MAX_DUPLICATE_ADDRESSES]
    if described["wrong_id"] or not query.is_response(reply):
        return None, described
    return reply, described


async def _udp_exchange(
    resolver: Resolver,
    query: dns.message.Message,
    timeout: float,
    record: DNSQuery,
    clock: Clock,
    late: LateReplies | None,
) -> dns.message.Message:
    """Ask over UDP and wait for the first valid reply with the query's ID.

    Every other datagram (a wrong ID, garbage, a reply to another question) is recorded in
    ``record.duplicate_replies`` and the wait goes on: the first bad datagram must not hide
    the genuine reply that follows. Runs until cancelled (the caller's timeout) when no valid
    reply comes. A truncated reply is asked again over TCP.
    """
    address = await _address(resolver)
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    handed_over = False
    try:
        sock.setblocking(False)
        sock.connect((address, resolver.port))  # only its replies reach the socket
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(sock, query.to_wire())
        while True:
            data = await loop.sock_recv(sock, UDP_READ)
            reply, described = _judge(query, data, clock())
            if reply is not None:
                break
            if len(record.duplicate_replies) < MAX_DUPLICATES:
                record.duplicate_replies.append(described)
        if reply.flags & dns.flags.TC:
            return await exchange(resolver, query, timeout=timeout)  # plain DNS over TCP
        if late is not None and late.window > 0:
            late.listen(sock, query, record, clock)
            handed_over = True
        return reply
    finally:
        if not handed_over:
            sock.close()


def _silence(record: DNSQuery) -> str:
    """The failure of a lookup that got no valid reply in time."""
    if any(reply["wrong_id"] for reply in record.duplicate_replies):
        return failures.DNS_WRONG_ID
    if record.duplicate_replies:
        return failures.DNS_MISBEHAVING
    return failures.GENERIC_TIMEOUT


class ChainAnswer(NamedTuple):
    """What an answer says of its question: the first :data:`MAX_ADDRESSES` addresses of
    the question's type, their ``total``, the CNAMEs on the way, the addresses' TTL."""

    addresses: list[str]
    total: int
    cnames: list[str]
    ttl: int | None


def chain_answer(reply: dns.message.Message, query_type: str) -> ChainAnswer:
    """The answer to ``reply``'s question: from its name along CNAMEs (at most
    :data:`MAX_CNAME_CHAIN`) to the rrset of ``query_type`` owned by the name reached. Records
    owned by any other name answer nothing that was asked: they are ignored, whatever they say.
    """
    name: dns.name.Name = reply.question[0].name
    rdtype = dns.rdatatype.from_text(query_type)
    seen = {name}
    cnames: list[str] = []
    while (alias := _owned(reply, name, dns.rdatatype.CNAME)) is not None:
        if len(cnames) == MAX_CNAME_CHAIN:
            return ChainAnswer([], 0, cnames, None)
        name = alias[0].target
        cnames.append(name.to_text(omit_final_dot=True))
        if name in seen:  # a loop
            return ChainAnswer([], 0, cnames, None)
        seen.add(name)
    records = _owned(reply, name, rdtype)
    if records is None:
        return ChainAnswer([], 0, cnames, None)
    addresses = [rdata.address for rdata in itertools.islice(records, MAX_ADDRESSES)]
    return ChainAnswer(addresses, len(records), cnames, records.ttl)


def _owned(
    reply: dns.message.Message, name: dns.name.Name, rdtype: dns.rdatatype.RdataType
) -> dns.rrset.RRset | None:
    return reply.get_rrset(reply.answer, name, dns.rdataclass.IN, rdtype)


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
    doh_client: DoHClient | None = None,
    late: LateReplies | None = None,
) -> DNSQuery:
    """Ask ``resolver`` for ``hostname``'s A or AAAA records; never raises.

    Over UDP every reply is recorded: the first valid one with the query's ID is the answer,
    the others go to ``duplicate_replies`` (with ``late``, also those arriving within its
    window after the answer). When only bad replies came before the timeout, the failure
    says what they were: ``dns_reply_with_wrong_query_id`` when any had a wrong ID.
    """
    record = DNSQuery(
        hostname=hostname,
        query_type=query_type,
        engine=resolver.engine,
        resolver=resolver.url,
        depth=depth,
        t0=clock(),
    )
    try:
        query = _make_query(hostname, query_type)
        async with asyncio.timeout(timeout):
            if urlsplit(resolver.url).scheme == "udp":
                reply = await _udp_exchange(resolver, query, timeout, record, clock, late)
            else:
                reply = await exchange(
                    resolver, query, timeout=timeout, ssl_context=ssl_context, doh_client=doh_client
                )
    except TimeoutError:
        record.failure = _silence(record)
        record.t = clock()
        return record
    except LOOKUP_ERRORS as exc:
        record.failure = classify(exc)
        record.t = clock()
        return record
    record.t = clock()
    rcode = reply.rcode()
    record.rcode = dns.rcode.to_text(rcode)
    answer = chain_answer(reply, query_type)
    record.addresses, record.cnames, record.ttl = answer.addresses, answer.cnames, answer.ttl
    record.addresses_total = answer.total
    if rcode in _RCODE_FAILURES:
        record.failure = _RCODE_FAILURES[rcode]
    elif rcode != dns.rcode.NOERROR:
        record.failure = failures.DNS_MISBEHAVING
    elif not record.addresses:
        record.failure = failures.DNS_NO_ANSWER
    return record
