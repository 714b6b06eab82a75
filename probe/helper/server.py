"""The test helper: OONI's Web Connectivity control, served from outside the censored network.

``probe helper serve`` answers the protocol :mod:`probe.measure.control` speaks (and OONI's probes
speak): ``GET /`` greets, ``POST /`` takes ``{"http_request": URL, "http_request_headers": ...,
"tcp_connect": ["ip:port", ...]}`` and answers what the helper itself saw for that URL:

1. DNS: the URL's host, A and AAAA, at the helper's resolver (4 s); an IP-literal host is its
   own answer. Failures use the protocol's legacy names (``dns_name_error``,
   ``dns_server_failure``, ``unknown_error``; "no answer" is ``null`` with no addresses).
2. Endpoints: the probe's ``tcp_connect`` list plus the helper's own addresses on the URL's port
   (an http URL without an explicit port also gets 443). Each gets a TCP connect (10 s) and, on
   443 (or the explicit port of an https URL), a TLS handshake (10 s) with SNI = host and the
   certificate verified.
3. Meanwhile, a GET of the URL following redirects (:class:`~probe.measure.measurer.Measurer`,
   done 4 s + 15 s after the request came), reported as the final hop's status, headers (first
   value per name), title and body length; ``-1`` for both numbers when the fetch failed. Its
   own connects and handshakes are those of step 2 for the endpoints it fetches from (its
   first hop's, with TLS on 443 for an http URL's addresses): each endpoint is connected to
   once.
4. ``ip_info``: every address seen, with its AS number (``--asn-db``) and flags
   (1 from the probe, 2 from the helper's DNS, 4 bogon, 8 TLS valid for the host).

``GET /whoami`` tells a probe the address it comes from and that address's AS number, country
and AS name (:mod:`probe.helper.whoami`), so it can record its network and scrub its address.

Hardening: the helper runs on someone's server, so it must never become a way into that server's
own network, nor into the server itself. It refuses to connect to bogons (private, loopback,
link-local, CGNAT, ...: :func:`~probe.model.addresses.is_bogon`) and to its own host's addresses
(:mod:`probe.helper.host`: every address of the host's interfaces, re-read every few seconds,
when it listens on a wildcard; else its address and the services listening on every address)
whatever their origin and spelling: the probe's ``tcp_connect`` list (answered ``status: false``
with :data:`~probe.helper.requests.REFUSED_BOGON` or
:data:`~probe.helper.host.REFUSED_OWN_HOST`), its own DNS answers, IP-literal URLs and redirects
(the Measurer's ``address_refusal``). It connects to the
probe's endpoints only on the ports the URL uses (the URL's port and 443; others get
:data:`~probe.helper.requests.REFUSED_PORT`). Requests are bounded: body size (413), JSON shape
(400), at most ``max_endpoints`` entries in ``tcp_connect`` (more is refused with 400, so a
probe learns its request was not measured instead of getting a silently partial answer),
requests in flight (503), shared among clients so that one cannot shut the helper for the
others (:class:`Slots`), and time (504; a URL whose fetch ran out of time is given a shorter
deadline for a while: :class:`~probe.helper.measurement.SlowHosts`). Open connections are
bounded too, without letting idle or slow clients starve active ones: when ``max_connections``
are open, a new connection closes the longest-idle one (else the slowest sender), never one
being measured or answered.
It logs one line per request, escaped (:func:`~probe.model.text.printable`), without the query
string, and never the client's address.

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
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .. import __version__
from ..errors import BadRequest
from ..model.addresses import bracket
from ..model.text import printable
from ..net import resolvers
from ..net.connections import client_context, raise_fd_limit
from ..ooni.helper_protocol import HELLO
from . import whoami
from .asn import AsnDB
from .host import REFRESH, OwnHost
from .measurement import HelperContext, HelperTimeouts, handle_request

log = logging.getLogger("probe.helper")

SERVER_NAME = f"probe-helper/{__version__}"

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
    resolver: resolvers.Resolver | None = None  # None: the system resolver (/etc/resolv.conf)
    ca_file: str | None = None  # trust anchors for TLS checks (else SSL_CERT_FILE, else certifi)
    asn_db: str | None = None  # iptoasn.com TSV (plain or gzip)
    max_in_flight: int = 25  # measurements at once; beyond: 503 (OONI sheds load at 25)
    max_request_bytes: int = 64 * 1024  # larger bodies: 413
    max_endpoints: int = 64  # longer tcp_connect lists: 400
    timeout: float = 30.0  # one whole measurement; beyond: 504
    max_connections: int = 1024  # open client connections; beyond: the idlest is closed
    certfile: str | None = None  # serve HTTPS with this certificate chain (PEM) ...
    keyfile: str | None = None  # ... and key; None: plain HTTP (e.g. behind a TLS proxy)
    idle_timeout: float = 15.0  # waiting for a (next) request on an open connection
    read_timeout: float = 10.0  # receiving one request's head and body
    timeouts: HelperTimeouts = field(default_factory=HelperTimeouts)  # each measurement's steps
    own_addresses: tuple[str, ...] = ()  # this host's, on no interface (a cloud's 1:1 NAT)
    host_refresh: float = REFRESH  # seconds between readings of this host's addresses
    #: Networks measured despite the bogon rule: for tests only (tests/loopback.py), from
    #: Python alone (no CLI option sets it); see probe.measure.settings.Settings.bogons_exempt.
    bogons_exempt: tuple[str, ...] = ()


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


@dataclass
class _Request:
    method: str
    path: str
    version: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes = b""
    keep_alive: bool = True


IDLE, READING, BUSY = "idle", "reading", "busy"


@dataclass(eq=False)
class _Client:
    """One admitted client connection and what it is doing since when."""

    task: asyncio.Task[Any]
    state: str = IDLE  # IDLE: waiting for a request; READING one; BUSY: measuring or answering
    since: float = field(default_factory=time.monotonic)
    peer: str | None = None  # the client's address: for /whoami's answer only, never logged

    def enter(self, state: str) -> None:
        self.state, self.since = state, time.monotonic()


class Slots:
    """The measurement slots, shared among clients so that one cannot take them all.

    A client (:func:`client_of`: its address; an IPv6 client's /64) always gets a slot while
    it holds fewer than half of them (:attr:`share`). Beyond that, it still uses idle capacity,
    but only while a quarter of the slots (:attr:`reserve`) stays free for the others: a slot
    given cannot be taken back before its measurement ends (up to the measurement's deadline),
    so "others first when they come" has to mean slots kept free for them. One busy client, or
    many volunteers behind one NAT address, get three quarters of an idle helper; a client
    coming meanwhile is served at once.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.share = max(1, total // 2)
        self.reserve = max(1, total // 4)
        self.held: dict[str, int] = {}
        self.in_flight = 0

    def take(self, client: str) -> str | None:
        """Take a slot for ``client``; None when taken, else why not (for the 503)."""
        if self.in_flight >= self.total:
            return "too many requests in flight, retry later"
        mine = self.held.get(client, 0)
        if mine >= self.share and self.total - self.in_flight <= self.reserve:
            return "too many requests from your address in flight, retry later"
        self.held[client] = mine + 1
        self.in_flight += 1
        return None

    def give_back(self, client: str) -> None:
        self.in_flight -= 1
        self.held[client] -= 1
        if not self.held[client]:
            del self.held[client]


def client_of(peer: str | None, headers: dict[str, str]) -> str:
    """Whose share a request counts against: the client's address (a local reverse proxy's
    ``X-Forwarded-For``, as for ``/whoami``); for IPv6, its /64, which one subscriber has."""
    address = whoami.client_address(peer, headers) or "unknown"
    if ":" in address:
        return str(ipaddress.IPv6Network(f"{address}/64", strict=False))
    return address


@dataclass
class _Stats:
    served: int = 0
    evicted: int = 0  # connections closed to make room for a new one
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)  # every connection's task
    clients: dict[asyncio.Task[Any], _Client] = field(default_factory=dict)  # admitted ones


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


class HelperServer:
    """A small HTTP/1.1 server (asyncio streams) in front of :func:`handle_request`, which
    runs in a :class:`MeasurementThread`."""

    def __init__(self, config: HelperConfig, context: HelperContext) -> None:
        self.config = config
        self.context = context
        self.stats = _Stats()
        self.slots = Slots(config.max_in_flight)
        self.server: asyncio.Server | None = None
        self.measurements: MeasurementThread | None = None

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
        self.measurements = MeasurementThread()
        sockname = self.server.sockets[0].getsockname()
        return self.config.host, sockname[1]

    async def close(self) -> None:
        """Stop accepting, let measurements finish (a few seconds), then drop connections and
        close the context (in the measurements' thread, where it was used)."""
        if self.server is not None:
            self.server.close()
        deadline = time.monotonic() + SHUTDOWN_GRACE
        while self.slots.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        tasks = list(self.stats.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.measurements is not None:
            await self.measurements.stop(self.context.aclose(), SHUTDOWN_GRACE)
        else:  # never started
            await self.context.aclose()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.stats.tasks.add(task)
        try:
            if len(self.stats.clients) >= self.config.max_connections and not self._evict():
                await self._send(writer, 503, {"error": "too many connections"}, close=True)
                await _linger(reader, writer)
                return
            client = self.stats.clients[task] = _Client(task)
            peer = writer.get_extra_info("peername")
            client.peer = str(peer[0]) if isinstance(peer, tuple) and peer else None
            while True:
                keep = await self._one_request(reader, writer, client)
                if not keep:
                    return
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("internal error on a connection")
        finally:
            self.stats.clients.pop(task, None)
            self.stats.tasks.discard(task)
            writer.close()

    def _evict(self) -> bool:
        """Make room for a new connection: close the longest-idle one, else the one that has
        been sending its request the longest; never one being measured or answered. False
        when every connection is busy.

        So idle keep-alive connections and slow senders cannot hold every slot: a client with
        a request always gets in, and the ones pushed out are the ones doing nothing.
        """
        waiting = [c for c in self.stats.clients.values() if c.state != BUSY]
        if not waiting:
            return False
        victim = min(waiting, key=lambda c: (c.state != IDLE, c.since))
        del self.stats.clients[victim.task]
        victim.task.cancel()
        self.stats.evicted += 1
        return True

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: _Client
    ) -> bool:
        """Serve one request; whether to keep the connection open."""
        client.enter(IDLE)
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
        client.enter(READING)
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.config.read_timeout):
                request = await self._read_request(line, reader, writer)
        except BadRequest as exc:
            await self._send(writer, exc.status, {"error": str(exc)}, close=True)
            _log(None, exc.status, started, f"refused: {exc}")
            await _linger(reader, writer)
            return False
        except TimeoutError:
            await self._send(writer, 408, {"error": "request not received in time"}, close=True)
            return False
        client.enter(BUSY)
        status, payload, note = await self._route(request, client.peer)
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
            raise BadRequest("malformed request line", 400) from None
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            raise BadRequest("only HTTP/1.0 and HTTP/1.1 are spoken here", 400)
        headers: dict[str, str] = {}
        head_bytes = len(line)
        for _ in range(MAX_REQUEST_HEADERS + 1):
            try:
                raw = await reader.readuntil(b"\r\n")
            except asyncio.LimitOverrunError:
                raise BadRequest("header line too long", 431) from None
            head_bytes += len(raw)
            if head_bytes > MAX_HEAD_BYTES:
                raise BadRequest("request head too large", 431)
            if raw == b"\r\n":
                break
            name, sep, value = raw.decode("latin-1").partition(":")
            if not sep or not name or name != name.strip():
                raise BadRequest("malformed header line", 400)
            key = name.lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        else:
            raise BadRequest("too many header lines", 431)
        connection = headers.get("connection", "").lower()
        keep_alive = (
            "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
        )
        request = _Request(method, path, version, headers, keep_alive=keep_alive)
        if "transfer-encoding" in headers:
            raise BadRequest("send the body with a Content-Length", 411)
        length_text = headers.get("content-length", "0")
        if not length_text.isascii() or not length_text.isdigit() or len(length_text) > 12:
            raise BadRequest("bad Content-Length", 400)
        length = int(length_text)
        if length > self.config.max_request_bytes:
            raise BadRequest(f"request body larger than {self.config.max_request_bytes}", 413)
        if length:
            if headers.get("expect", "").lower() == "100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.body = await reader.readexactly(length)
        return request

    async def _route(self, request: _Request, peer: str | None) -> tuple[int, Any, str]:
        path, _, query = request.path.partition("?")
        if path == whoami.PATH:
            return self._whoami(request, query, peer)
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
        client = client_of(peer, request.headers)
        busy = self.slots.take(client)
        if busy is not None:
            return 503, {"error": busy}, "busy"
        assert self.measurements is not None, "start() first"
        try:
            answer = await self.measurements.run(
                handle_request(data, self.context), self.config.timeout
            )
        except BadRequest as exc:
            return 400, {"error": str(exc)}, f"bad request: {exc}"
        except TimeoutError:
            return 504, {"error": "measurement took too long"}, "timeout"
        except Exception:
            log.exception("internal error while measuring")
            return 500, {"error": "internal error"}, "internal error"
        finally:
            self.slots.give_back(client)
            self.stats.served += 1
        return 200, answer, _describe(data, answer)

    def _whoami(self, request: _Request, query: str, peer: str | None) -> tuple[int, Any, str]:
        # The note stays empty: the log line must not say who asked, nor from which network.
        if request.method != "GET":
            return 405, {"error": "use GET"}, ""
        client = whoami.client_address(peer, request.headers)
        try:
            return 200, whoami.answer(client, query, self.context.asn), ""
        except BadRequest as exc:
            return exc.status, {"error": str(exc)}, ""

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
    # Never the client's address: volunteers' privacy. What the client sent is escaped: one
    # request is one log line, with no terminal escape sequences in it.
    path = request.path.split("?", 1)[0] if request else ""
    what = f"{request.method} {path[:64]}" if request else "-"
    if path == whoami.PATH:
        size = 0  # its length depends on the client's network (the AS name): not even that
    log.info(
        "%s %d %.3fs %dB %s",
        printable(what),
        status,
        time.monotonic() - started,
        size,
        printable(note),
    )


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


def context_for(config: HelperConfig) -> HelperContext:
    """Load everything the config names; raises :class:`~probe.errors.InputError` or
    ``OSError`` naming the file."""
    return HelperContext(
        resolver=config.resolver or resolvers.system_resolver(),
        ssl_context=client_context(config.ca_file),
        asn=AsnDB.load(config.asn_db) if config.asn_db else None,
        timeouts=config.timeouts,
        max_endpoints=config.max_endpoints,
        own_host=OwnHost(config.host, named=config.own_addresses, refresh=config.host_refresh),
        bogons_exempt=config.bogons_exempt,
    )


async def _serve(config: HelperConfig) -> None:
    raise_fd_limit()
    context = context_for(config)
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
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
