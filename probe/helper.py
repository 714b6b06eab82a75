"""The test helper: OONI's Web Connectivity control, served from outside the censored network.

``probe helper serve`` answers the protocol :mod:`probe.control` speaks (and OONI's probes
speak): ``GET /`` greets, ``POST /`` takes ``{"http_request": URL, "http_request_headers": ...,
"tcp_connect": ["ip:port", ...]}`` and answers what the helper itself saw for that URL:

1. DNS: the URL's host, A and AAAA, at the helper's resolver (4 s); an IP-literal host is its
   own answer. Failures use the protocol's legacy names (``dns_name_error``,
   ``dns_server_failure``, ``unknown_error``; "no answer" is ``null`` with no addresses).
2. Endpoints: the probe's ``tcp_connect`` list plus the helper's own addresses on the URL's port
   (an http URL without an explicit port also gets 443). Each gets a TCP connect and, on 443 (or
   the explicit port of an https URL), a TLS handshake with SNI = host and the certificate
   verified; 15 s per endpoint.
3. In parallel, a GET of the URL following redirects (:class:`probe.measure.Measurer`, 4 s DNS +
   15 s), reported as the final hop's status, headers (first value per name), title and body
   length; ``-1`` for both numbers when the fetch failed.
4. ``ip_info``: every address seen, with its AS number (``--asn-db``) and flags
   (1 from the probe, 2 from the helper's DNS, 4 bogon, 8 TLS valid for the host).

Hardening: the helper runs on someone's server, so it must never become a way into that
server's own network. It refuses to connect to bogons (private, loopback, link-local, CGNAT,
...: :func:`probe.addresses.is_bogon`) whatever their origin: the probe's ``tcp_connect`` list
(answered ``status: false`` with :data:`REFUSED_BOGON`), its own DNS answers, IP-literal URLs
and redirects (the Measurer's ``address_allowed``). It connects to the probe's endpoints only on
the ports the URL uses (the URL's port and 443; others get :data:`REFUSED_PORT`). Requests are
bounded: body size (413), JSON shape (400), at most ``max_endpoints`` entries in ``tcp_connect``
(more is refused with 400, so a probe learns its request was not measured instead of getting a
silently partial answer), requests in flight (503), and time (504). It logs one line per
request and never the client's address.

Differences from OONI's oohelperd, on purpose: bogons the probe lists are answered (refused)
rather than silently left out; TCP and HTTP failures keep our more precise strings where the
protocol has no legacy name (``host_unreachable`` rather than ``connect_error``); OONI probes
only compare those on failed-versus-succeeded. QUIC is not measured (``quic_handshake: {}``,
``http3_request: null``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import signal
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from . import __version__, dns, failures, http
from .addresses import bracket, endpoint, is_bogon
from .asn import AsnDB
from .measure import REFUSED_ADDRESS, Measurer, Settings, Timeouts
from .netio import Clock, client_context, tcp_connect, tls_handshake
from .records import HTTPRequest, Observations
from .targets import Target, normalise

log = logging.getLogger("probe.helper")

SERVER_NAME = f"probe-helper/{__version__}"
HELLO = {"message": "Hello OONItarian!"}

FLAG_PROBE = 1  # the probe resolved this address (it came in tcp_connect)
FLAG_HELPER = 2  # the helper resolved it
FLAG_BOGON = 4
FLAG_VALID_TLS = 8  # a TLS handshake with SNI = host validated on it

#: ``tcp_connect`` failure for an address the helper will not connect to.
REFUSED_BOGON = REFUSED_ADDRESS
#: ``tcp_connect`` failure for a port the URL does not use.
REFUSED_PORT = failures.unknown("refused to connect to a port the URL does not use")

#: Request headers forwarded to the site (as OONI's helper does); others are ignored.
FORWARDED_HEADERS = ("User-Agent", "Accept", "Accept-Language")
MAX_URL_LENGTH = 8192
MAX_HEADER_VALUE = 1024
#: At most this many of the helper's own resolved addresses are measured.
MAX_OWN_ADDRESSES = 16
#: Endpoint checks at once, over all requests (each holds a socket).
MAX_CONNECTS = 512

# The HTTP server's own limits.
MAX_REQUEST_LINE = 8192
MAX_HEAD_BYTES = 32 * 1024
MAX_REQUEST_HEADERS = 100
WRITE_TIMEOUT = 10.0
SHUTDOWN_GRACE = 5.0


@dataclass
class HelperConfig:
    """How to run the helper; see :func:`serve`."""

    host: str
    port: int
    resolver: dns.Resolver | None = None  # None: the system resolver (/etc/resolv.conf)
    ca_file: str | None = None  # trust anchors for TLS checks (else SSL_CERT_FILE, else certifi)
    asn_db: str | None = None  # iptoasn.com TSV (plain or gzip)
    max_in_flight: int = 25  # measurements at once; beyond: 503 (OONI sheds load at 25)
    max_request_bytes: int = 64 * 1024  # larger bodies: 413
    max_endpoints: int = 64  # longer tcp_connect lists: 400
    timeout: float = 30.0  # one whole measurement; beyond: 504
    max_connections: int = 1024  # open client connections; beyond: 503 and close
    certfile: str | None = None  # serve HTTPS with this certificate chain (PEM) ...
    keyfile: str | None = None  # ... and key; None: plain HTTP (e.g. behind a TLS proxy)
    idle_timeout: float = 15.0  # waiting for a (next) request on an open connection
    read_timeout: float = 10.0  # receiving one request's head and body


@dataclass
class HelperTimeouts:
    """Per-step timeouts, OONI's test helper's."""

    dns: float = 4.0
    connect: float = 15.0  # TCP connect + TLS handshake, per endpoint
    http: float = 15.0  # the whole fetch, redirects included (after its DNS)


class BadRequest(ValueError):
    """The client's request is malformed; ``str()`` says why (sent back with a 400)."""


# ---------------------------------------------------------------- the measurement


class HelperContext:
    """What every measurement shares: resolver, trust anchors, ASN data, DoH client, policy."""

    def __init__(
        self,
        *,
        resolver: dns.Resolver,
        ssl_context: ssl.SSLContext,
        asn: AsnDB | None = None,
        timeouts: HelperTimeouts | None = None,
        max_endpoints: int = 64,
        forbidden: frozenset[str] = frozenset(),
        doh_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.resolver = resolver
        self.ssl_context = ssl_context
        self.asn = asn
        self.timeouts = timeouts or HelperTimeouts()
        self.max_endpoints = max_endpoints
        self.forbidden = forbidden
        self.connect_slots = asyncio.Semaphore(MAX_CONNECTS)
        self.doh_client = doh_client or httpx.AsyncClient(
            verify=ssl_context, timeout=self.timeouts.dns, follow_redirects=False
        )

    @classmethod
    def from_config(cls, config: HelperConfig) -> HelperContext:
        """Load everything the config names; raises ``ValueError``/``OSError`` naming the file."""
        resolver = config.resolver or dns.system_resolver()
        asn = AsnDB.load(config.asn_db) if config.asn_db else None
        own = _canonical(config.host)
        forbidden = frozenset({own} if own and own not in ("0.0.0.0", "::") else ())
        return cls(
            resolver=resolver,
            ssl_context=client_context(config.ca_file),
            asn=asn,
            max_endpoints=config.max_endpoints,
            forbidden=forbidden,
        )

    def allowed(self, ip: str) -> bool:
        """Whether the helper may connect to ``ip`` (never to a bogon, nor to itself)."""
        return address_allowed(ip) and _canonical(ip) not in self.forbidden

    def asn_of(self, ip: str) -> int:
        return self.asn.lookup(ip) if self.asn is not None else 0

    async def aclose(self) -> None:
        await self.doh_client.aclose()


def address_allowed(ip: str) -> bool:
    """True for a public IP address; False for bogons, scoped (``%zone``) addresses and names."""
    if "%" in ip:
        return False
    if _canonical(ip) is None:
        return False
    return not is_bogon(ip)


def _canonical(ip: str) -> str | None:
    text = ip.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


@dataclass
class HelperRequest:
    """A validated control request."""

    url: str  # normalised (punycode host, default port dropped)
    scheme: str
    host: str  # punycode, or an IP address
    port: int
    explicit_port: bool
    headers: dict[str, str]
    endpoints: list[tuple[str, str, int]]  # (key as the probe wrote it, canonical ip, port)


def parse_endpoint(text: Any) -> tuple[str, int] | None:
    """``"ip:port"`` or ``"[v6]:port"`` as (canonical ip, port); None when malformed.

    Host names, zone ids and ports outside 1..65535 are malformed: the helper only ever
    connects to addresses.
    """
    if not isinstance(text, str) or len(text) > 64:
        return None
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep or ":" not in host:
            return None
    else:
        host, sep, port = text.rpartition(":")
        if not sep or ":" in host:
            return None
    if "%" in host or not port.isascii() or not port.isdigit() or len(port) > 5:
        return None
    ip = _canonical(host)
    number = int(port)
    if ip is None or not 0 < number < 65536:
        return None
    return ip, number


def parse_request(data: Any, max_endpoints: int = 64) -> HelperRequest:
    """Validate a decoded control request; raises :class:`BadRequest`."""
    if not isinstance(data, dict):
        raise BadRequest("the request must be a JSON object")
    raw_url = data.get("http_request")
    if not isinstance(raw_url, str) or not raw_url:
        raise BadRequest("http_request must be a URL")
    if len(raw_url) > MAX_URL_LENGTH:
        raise BadRequest("http_request is too long")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in raw_url):
        raise BadRequest("http_request contains white space or control characters")
    try:
        url, host = normalise(raw_url)
        parts = urlsplit(raw_url)
        explicit = parts.port
    except ValueError as exc:
        raise BadRequest(f"bad http_request: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or "://" not in raw_url:
        raise BadRequest("http_request must be an http:// or https:// URL")
    port = explicit or (443 if scheme == "https" else 80)

    headers = dict(http.DEFAULT_HEADERS)
    given = data.get("http_request_headers")
    given = {} if given is None else given
    if not isinstance(given, dict):
        raise BadRequest("http_request_headers must be an object of lists")
    wanted = {name.lower(): name for name in FORWARDED_HEADERS}
    for name, values in given.items():
        canonical = wanted.get(str(name).lower())
        if canonical is None:
            continue
        value = values[0] if isinstance(values, list) and values else values
        if not isinstance(value, str):
            raise BadRequest(f"http_request_headers[{name!r}] must be a list of strings")
        value = value.strip()
        if len(value) > MAX_HEADER_VALUE or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise BadRequest(f"http_request_headers[{name!r}] has a bad value")
        headers[canonical] = value

    given_endpoints = data.get("tcp_connect")
    given_endpoints = [] if given_endpoints is None else given_endpoints
    if not isinstance(given_endpoints, list):
        raise BadRequest("tcp_connect must be a list of 'ip:port' strings")
    endpoints: list[tuple[str, str, int]] = []
    seen: set[tuple[str, int]] = set()
    for text in given_endpoints:
        parsed = parse_endpoint(text)
        if parsed is None or parsed in seen:
            continue  # as OONI's helper does: what is not an address is not measured
        seen.add(parsed)
        endpoints.append((text, *parsed))
    if len(endpoints) > max_endpoints:
        raise BadRequest(f"tcp_connect lists more than {max_endpoints} endpoints")
    return HelperRequest(
        url=url,
        scheme=scheme,
        host=host,
        port=port,
        explicit_port=explicit is not None,
        headers=headers,
        endpoints=endpoints,
    )


@dataclass
class Endpoint:
    """One ``ip:port`` to check, and whether (and why not) to connect."""

    key: str  # the response's key: the probe's own spelling, or ours
    ip: str  # canonical
    port: int
    tls: bool  # also TLS-handshake (SNI = URL host)
    refusal: str | None = None  # why the helper will not connect; None: it will


def url_ports(req: HelperRequest) -> list[int]:
    """Ports the helper connects to for its own addresses (OONI: 80 and 443 for plain http)."""
    if req.explicit_port:
        return [req.port]
    return [80, 443] if req.scheme == "http" else [443]


def wants_tls(req: HelperRequest, port: int) -> bool:
    return port == 443 or (req.scheme == "https" and req.explicit_port and port == req.port)


def build_endpoints(
    req: HelperRequest, own_addresses: list[str], allowed: Callable[[str], bool]
) -> list[Endpoint]:
    """The probe's endpoints, then the helper's own; bogons and foreign ports refused.

    The probe's bogons and ports the URL does not use are listed with a refusal (the probe
    asked about them and gets an answer); the helper's own bogon answers are left out (they
    show in ``dns`` and ``ip_info``).
    """
    ports = {req.port, 443}
    out: list[Endpoint] = []
    seen: set[tuple[str, int]] = set()
    for key, ip, port in req.endpoints:
        seen.add((ip, port))
        refusal = None
        if not allowed(ip):
            refusal = REFUSED_BOGON
        elif port not in ports:
            refusal = REFUSED_PORT
        out.append(Endpoint(key, ip, port, wants_tls(req, port), refusal))
    for ip in own_addresses[:MAX_OWN_ADDRESSES]:
        if not allowed(ip):
            continue
        for port in url_ports(req):
            if (ip, port) not in seen:
                seen.add((ip, port))
                out.append(Endpoint(endpoint(ip, port), ip, port, wants_tls(req, port)))
    return out


# Failure strings as the protocol spells them.


def dns_failure(failure: str | None) -> str | None:
    """OONI's helper's DNS mapping: NXDOMAIN, server failures, no-answer as success."""
    if failure is None or failure == failures.DNS_NO_ANSWER:
        return None
    if failure == failures.DNS_NXDOMAIN:
        return "dns_name_error"
    if failure in (failures.DNS_SERVFAIL, failures.DNS_REFUSED, failures.DNS_MISBEHAVING):
        return "dns_server_failure"
    return "unknown_error"


def http_failure(failure: str | None) -> str | None:
    """The fetch's failure: any DNS trouble is ``dns_lookup_error``; else the legacy names."""
    if failure is not None and failure.startswith("dns_"):
        return "dns_lookup_error"
    return failures.for_helper(failure)


def go_header_name(name: str) -> str:
    """A header name as Go canonicalises it (``content-type`` -> ``Content-Type``)."""
    if not name or any(not (c.isalnum() or c in "!#$%&'*+-.^_`|~") for c in name):
        return name
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


async def _resolve(req: HelperRequest, context: HelperContext, clock: Clock) -> dict[str, Any]:
    if _canonical(req.host) is not None:
        return {"failure": None, "addrs": [req.host]}
    queries = await asyncio.gather(
        *(
            dns.lookup(
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
        return {"failure": "dns_name_error", "addrs": []}
    real = [f for f in found if f != failures.DNS_NO_ANSWER]
    return {"failure": dns_failure(real[0]) if real else None, "addrs": []}


async def _check(
    ep: Endpoint, req: HelperRequest, context: HelperContext, clock: Clock
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """One endpoint's ``tcp_connect`` entry and, when handshaken, its ``tls_handshake`` entry."""
    if ep.refusal is not None:
        return {"status": False, "failure": ep.refusal}, None
    async with context.connect_slots:
        return await _connect(ep, req, context, clock)


async def _connect(
    ep: Endpoint, req: HelperRequest, context: HelperContext, clock: Clock
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + context.timeouts.connect
    tcp, conn = await tcp_connect(ep.ip, ep.port, timeout=context.timeouts.connect, clock=clock)
    tcp_entry = {"status": tcp.failure is None, "failure": failures.for_helper(tcp.failure)}
    if conn is None:
        return tcp_entry, None
    if not ep.tls:
        conn.close()
        return tcp_entry, None
    handshake = await tls_handshake(
        conn,
        req.host,
        context.ssl_context,
        timeout=max(deadline - loop.time(), 0.1),
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


async def _fetch(req: HelperRequest, context: HelperContext) -> HTTPRequest | None:
    """The GET, following redirects; the final hop, or None when DNS gave no address
    (whatever the reason: OONI's helper reports any failure while resolving as a DNS one)."""
    settings = Settings(
        system_resolver=context.resolver,
        control_resolvers=[],
        ssl_context=context.ssl_context,
        timeouts=Timeouts(dns=context.timeouts.dns, tcp=10.0, tls=10.0, http=context.timeouts.http),
        headers=req.headers,
        address_allowed=context.allowed,
    )
    measurer = Measurer(settings, doh_client=context.doh_client, helpers=None)
    target = Target(input=req.url, url=req.url, domain=req.host)
    try:
        async with asyncio.timeout(context.timeouts.dns + context.timeouts.http):
            obs: Observations = await measurer.measure(target)
    except TimeoutError:
        return HTTPRequest(url=req.url, failure=failures.GENERIC_TIMEOUT)
    return obs.http[-1] if obs.http else None


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
    fetch = asyncio.create_task(_fetch(req, context))
    try:
        dns_result = await _resolve(req, context, clock)
        endpoints = build_endpoints(req, dns_result["addrs"], context.allowed)
        checks = await asyncio.gather(*(_check(ep, req, context, clock) for ep in endpoints))
        hop = await fetch
    finally:
        if not fetch.done():
            fetch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await fetch

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
        ip = _canonical(ip) or ip
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


# ---------------------------------------------------------------- the HTTP server

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Payload Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class _ClientError(Exception):
    """A request the server answers with ``status`` and then closes the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class _Request:
    method: str
    path: str
    version: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes = b""
    keep_alive: bool = True


@dataclass
class _Stats:
    in_flight: int = 0
    connections: int = 0
    served: int = 0
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)


class HelperServer:
    """A small HTTP/1.1 server (asyncio streams) in front of :func:`handle_request`."""

    def __init__(self, config: HelperConfig, context: HelperContext) -> None:
        self.config = config
        self.context = context
        self.stats = _Stats()
        self.server: asyncio.Server | None = None

    async def start(self) -> tuple[str, int]:
        """Bind and listen; returns the bound (host, port)."""
        ssl_ctx = None
        if self.config.certfile:
            ssl_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ssl_ctx.load_cert_chain(self.config.certfile, self.config.keyfile)
            ssl_ctx.set_alpn_protocols(["http/1.1"])
        self.server = await asyncio.start_server(
            self._connection,
            self.config.host,
            self.config.port,
            backlog=4096,
            reuse_address=True,
            limit=MAX_REQUEST_LINE,
            ssl=ssl_ctx,
            ssl_handshake_timeout=self.config.read_timeout if ssl_ctx else None,
        )
        sockname = self.server.sockets[0].getsockname()
        return self.config.host, sockname[1]

    async def close(self) -> None:
        """Stop accepting, let measurements finish (a few seconds), then drop connections."""
        if self.server is not None:
            self.server.close()
        deadline = time.monotonic() + SHUTDOWN_GRACE
        while self.stats.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        tasks = list(self.stats.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.stats.tasks.add(task)
        self.stats.connections += 1
        try:
            if self.stats.connections > self.config.max_connections:
                await self._send(writer, 503, {"error": "too many connections"}, close=True)
                await _linger(reader, writer)
                return
            while True:
                keep = await self._one_request(reader, writer)
                if not keep:
                    return
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("internal error on a connection")
        finally:
            self.stats.connections -= 1
            self.stats.tasks.discard(task)
            writer.close()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Serve one request; whether to keep the connection open."""
        try:
            async with asyncio.timeout(self.config.idle_timeout):
                line = await reader.readuntil(b"\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                await self._send(writer, 400, {"error": "incomplete request"}, close=True)
            return False
        except TimeoutError:
            return False  # idle: close quietly
        except asyncio.LimitOverrunError:
            await self._send(writer, 400, {"error": "request line too long"}, close=True)
            return False
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.config.read_timeout):
                request = await self._read_request(line, reader, writer)
        except _ClientError as exc:
            await self._send(writer, exc.status, {"error": str(exc)}, close=True)
            _log(None, exc.status, started, f"refused: {exc}")
            await _linger(reader, writer)
            return False
        except TimeoutError:
            await self._send(writer, 408, {"error": "request not received in time"}, close=True)
            return False
        status, payload, note = await self._route(request)
        keep = request.keep_alive and status not in (500, 504)
        size = await self._send(writer, status, payload, close=not keep)
        _log(request, status, started, note, size)
        return keep

    async def _read_request(
        self, line: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> _Request:
        try:
            method, path, version = line.decode("ascii").rstrip("\r\n").split(" ")
        except (UnicodeDecodeError, ValueError):
            raise _ClientError(400, "malformed request line") from None
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            raise _ClientError(400, "only HTTP/1.0 and HTTP/1.1 are spoken here")
        headers: dict[str, str] = {}
        head_bytes = len(line)
        for _ in range(MAX_REQUEST_HEADERS + 1):
            try:
                raw = await reader.readuntil(b"\r\n")
            except asyncio.LimitOverrunError:
                raise _ClientError(431, "header line too long") from None
            head_bytes += len(raw)
            if head_bytes > MAX_HEAD_BYTES:
                raise _ClientError(431, "request head too large")
            if raw == b"\r\n":
                break
            name, sep, value = raw.decode("latin-1").partition(":")
            if not sep or not name or name != name.strip():
                raise _ClientError(400, "malformed header line")
            key = name.lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        else:
            raise _ClientError(431, "too many header lines")
        connection = headers.get("connection", "").lower()
        keep_alive = (
            "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
        )
        request = _Request(method, path, version, headers, keep_alive=keep_alive)
        if "transfer-encoding" in headers:
            raise _ClientError(411, "send the body with a Content-Length")
        length_text = headers.get("content-length", "0")
        if not length_text.isascii() or not length_text.isdigit() or len(length_text) > 12:
            raise _ClientError(400, "bad Content-Length")
        length = int(length_text)
        if length > self.config.max_request_bytes:
            raise _ClientError(413, f"request body larger than {self.config.max_request_bytes}")
        if length:
            if headers.get("expect", "").lower() == "100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.body = await reader.readexactly(length)
        return request

    async def _route(self, request: _Request) -> tuple[int, Any, str]:
        path = request.path.split("?", 1)[0]
        if path not in ("/", ""):
            return 404, {"error": "not found"}, ""
        if request.method == "GET":
            return 200, HELLO, ""
        if request.method != "POST":
            return 405, {"error": "use GET or POST"}, ""
        try:
            data = json.loads(request.body)
        except (ValueError, RecursionError):
            return 400, {"error": "the body is not JSON"}, "bad JSON"
        if self.stats.in_flight >= self.config.max_in_flight:
            return 503, {"error": "too many requests in flight, retry later"}, "busy"
        self.stats.in_flight += 1
        try:
            async with asyncio.timeout(self.config.timeout):
                answer = await handle_request(data, self.context)
        except BadRequest as exc:
            return 400, {"error": str(exc)}, f"bad request: {exc}"
        except TimeoutError:
            return 504, {"error": "measurement took too long"}, "timeout"
        except Exception:
            log.exception("internal error while measuring")
            return 500, {"error": "internal error"}, "internal error"
        finally:
            self.stats.in_flight -= 1
            self.stats.served += 1
        return 200, answer, _describe(data, answer)

    async def _send(
        self, writer: asyncio.StreamWriter, status: int, payload: Any, *, close: bool
    ) -> int:
        body = json.dumps(payload, separators=(",", ":")).encode()
        head = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            f"Server: {SERVER_NAME}",
            "Cache-Control: no-store",
            f"Connection: {'close' if close else 'keep-alive'}",
        ]
        if status == 503:
            head.append("Retry-After: 1")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        async with asyncio.timeout(WRITE_TIMEOUT):
            await writer.drain()
        return len(body)


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Half-close, then read and drop what the client still sends (briefly, boundedly).

    Closing a socket with unread data makes the kernel send a RST, which can destroy our
    answer (a 413, say) before the client has read it.
    """
    with contextlib.suppress(Exception):
        if writer.can_write_eof():
            writer.write_eof()
        async with asyncio.timeout(1.0):
            for _ in range(64):
                if not await reader.read(65536):
                    break


def _describe(data: dict[str, Any], answer: dict[str, Any]) -> str:
    """What a log line says about a measurement: the URL's scheme and host, and outcomes."""
    parts = urlsplit(str(data.get("http_request", "")))
    http_part = answer["http_request"]
    ok = sum(1 for entry in answer["tcp_connect"].values() if entry["status"])
    outcome = http_part["failure"] or http_part["status_code"]
    return (
        f"{parts.scheme}://{parts.hostname} dns={answer['dns']['failure'] or 'ok'} "
        f"tcp={ok}/{len(answer['tcp_connect'])} http={outcome}"
    )


def _log(request: _Request | None, status: int, started: float, note: str, size: int = 0) -> None:
    # Never the client's address: volunteers' privacy.
    what = f"{request.method} {request.path[:64]}" if request else "-"
    log.info("%s %d %.3fs %dB %s", what, status, time.monotonic() - started, size, note)


# ---------------------------------------------------------------- entry point


def serve(config: HelperConfig) -> None:
    """Run the helper until SIGINT or SIGTERM; prints ``listening on HOST:PORT`` to stderr."""
    if not logging.getLogger().handlers and not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    asyncio.run(_serve(config))


def _raise_fd_limit() -> None:
    """Many sockets at once (25 requests x dozens of endpoints): lift the soft fd limit."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = hard if hard != resource.RLIM_INFINITY else 65536
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ImportError, ValueError, OSError):
        pass


async def _serve(config: HelperConfig) -> None:
    _raise_fd_limit()
    context = HelperContext.from_config(config)
    server = HelperServer(config, context)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        host, port = await server.start()
        print(f"listening on {bracket(host)}:{port}", file=sys.stderr, flush=True)
        await stop.wait()
        log.info("stopping")
    finally:
        await server.close()
        await context.aclose()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
