"""probe's one HTTP/1.1 server, for the services it runs in public: the test helper
(:mod:`probe.helper`) and the collector (:mod:`probe.collector`). asyncio streams and h11
(already probe's HTTP parser), with every limit a public server needs in one place.

Why not an ASGI server: the limits that matter are about the connection, not the
application: the time to send a request head (slowloris), the time and size of a body
(counted as it arrives, decoded size too: a gzip bomb is stopped as it inflates), requests in
flight (503 with ``Retry-After`` before the body is read), open connections (the idlest
closed for a new one). uvicorn, the usual choice, has no head timeout and answers its
concurrency limit without ``Retry-After``; each would have to be patched in.

What a server gets from here (:class:`Server`): a :class:`Request` with its head and its
decoded body, read under :class:`Limits`; it answers a :class:`Response`. The rest is done
here for both: keep-alive, ``100 Continue``, errors answered with their status and
``{"error": reason}`` (400 for a malformed head, 408 for a slow one, 411 for a chunked body,
413, 415, 431), closing politely (:func:`_linger`), and one log line per request with
everything the client sent escaped (:func:`~probe.model.text.printable`) and never the
client's address (volunteers' privacy), nor a query string. The peer's address is handed to
the handler only (:attr:`Request.peer`): the helper's ``/whoami`` and per-client shares, the
collector's scrubbing of what a volunteer sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import h11

from ..errors import BadRequest, HTTPProtocolError
from ..model.text import one_line, printable
from . import decoders

#: Bytes read from a socket at a time.
READ_SIZE = 65536
#: How much of a request's first bytes is kept to name a refused request in the log.
_FIRST_BYTES = 256


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client may take of the server."""

    max_body: int = 8 * 1024 * 1024  # bytes of a request body, as sent and as decoded
    max_head: int = 16 * 1024  # bytes of a request line and headers; beyond: 431
    max_line: int = 8192  # bytes of the request line (beyond: 400) or a header line (431)
    max_headers: int = 100  # header lines; beyond: 431
    encodings: tuple[str, ...] = ("identity", "gzip")  # Content-Encodings taken; else 415
    max_in_flight: int = 256  # requests read or handled at once; beyond: 503 + Retry-After
    max_connections: int = 2048  # open connections; beyond: the idlest (else 503) is closed
    idle_timeout: float = 30.0  # waiting for the next request on an open connection
    head_timeout: float = 10.0  # from a request's first byte to the end of its head
    stall_timeout: float = 10.0  # a body that stops coming in for this long
    request_timeout: float = 120.0  # from a request's first byte to the end of its body
    write_timeout: float = 30.0  # a response being read by the client
    retry_after: int = 1  # seconds, in 503 answers that do not say otherwise


@dataclass(slots=True)
class Request:
    method: str
    path: str  # without the query string
    query: str
    headers: dict[str, str]  # lower-case names; repeated ones joined with ", "
    body: bytes = b""  # decoded (Content-Encoding)
    #: The connection's peer address: never logged; for the handler only.
    peer: str | None = None


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    note: str = ""  # for the log line (escaped there)
    close: bool = False  # close the connection after this answer
    #: False: the log line says 0B, for an answer whose size tells something about the client.
    log_size: bool = True


Handler = Callable[[Request], Awaitable[Response]]


def log_to_stderr(log: logging.Logger) -> None:
    """A server's log lines on stderr with their times, unless the program set up logging."""
    if logging.getLogger().handlers or log.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def error(status: int, reason: str, **extra: Any) -> Response:
    """A JSON error answer: ``{"error": reason}``."""
    body = json.dumps({"error": reason, **extra}).encode()
    return Response(status, body, note=reason)


# What a connection is doing, for eviction: waiting for a request, receiving one, or being
# answered (its request handled, its answer sent).
IDLE, READING, BUSY = "idle", "reading", "busy"


@dataclass(eq=False, slots=True)
class _Connection:
    """One admitted connection and what it is doing since when."""

    task: asyncio.Task[Any]
    state: str = IDLE
    since: float = field(default_factory=time.monotonic)

    def enter(self, state: str) -> None:
        self.state, self.since = state, time.monotonic()


class Server:
    """Serves ``handler`` until :meth:`close`; ``name`` is its ``Server`` header, ``log``
    gets one line per request."""

    def __init__(self, handler: Handler, limits: Limits, *, name: str, log: logging.Logger) -> None:
        self.handler = handler
        self.limits = limits
        self.name = name
        self.log = log
        self.in_flight = 0
        self.evicted = 0  # connections closed to make room for a new one
        self.tasks: set[asyncio.Task[Any]] = set()  # every connection's
        self.connections: dict[asyncio.Task[Any], _Connection] = {}  # the admitted ones
        self.server: asyncio.Server | None = None

    async def start(
        self,
        host: str | None = None,
        port: int = 0,
        *,
        sock: socket.socket | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> tuple[str, int]:
        """Listen on ``sock``, else bind ``host``:``port``; serve HTTPS with ``tls``.
        Returns the bound (host, port)."""
        listen: dict[str, Any] = (
            {"sock": sock} if sock is not None else {"host": host, "port": port}
        )
        self.server = await asyncio.start_server(
            self._connection,
            **listen,
            backlog=4096,
            reuse_address=None if sock is not None else True,
            ssl=tls,
            ssl_handshake_timeout=self.limits.head_timeout if tls else None,
        )
        bound = self.server.sockets[0].getsockname()
        return str(bound[0]), int(bound[1])

    async def close(self, grace: float = 5.0) -> None:
        """Stop accepting; let requests in flight finish (``grace`` seconds); drop the rest."""
        if self.server is not None:
            self.server.close()
        deadline = time.monotonic() + grace
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -------------------------------------------------------------- connections

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_head)
        try:
            if len(self.connections) >= self.limits.max_connections and not self._evict():
                await self._send(conn, writer, self._busy("too many connections"))
                await _linger(reader, writer)
                return
            client = self.connections[task] = _Connection(task)
            peername = writer.get_extra_info("peername")
            peer = str(peername[0]) if isinstance(peername, tuple) and peername else None
            while await self._one(conn, reader, writer, client, peer):
                conn.start_next_cycle()
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # the client went away, or was too slow to read its answer
        except asyncio.CancelledError:
            pass  # evicted, or the server is closing: the connection just ends
        finally:
            self.connections.pop(task, None)
            self.tasks.discard(task)
            writer.close()

    def _evict(self) -> bool:
        """Make room for a new connection: close the longest-idle one, else the one that has
        been sending its request the longest; never one being answered. False when every
        connection is busy.

        So idle keep-alive connections and slow senders cannot hold every place: a client
        with a request always gets in, and the ones pushed out are the ones doing nothing.
        """
        waiting = [c for c in self.connections.values() if c.state != BUSY]
        if not waiting:
            return False
        victim = min(waiting, key=lambda c: (c.state != IDLE, c.since))
        del self.connections[victim.task]
        victim.task.cancel()
        self.evicted += 1
        return True

    def _busy(self, reason: str) -> Response:
        response = error(503, reason)
        response.headers.append(("Retry-After", str(self.limits.retry_after)))
        return response

    # -------------------------------------------------------------- one request

    async def _one(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client: _Connection,
        peer: str | None,
    ) -> bool:
        """Serve one request; whether the connection can serve another."""
        limits = self.limits
        client.enter(IDLE)
        first = conn.trailing_data[0][:_FIRST_BYTES]  # a pipelined request's, already read
        if not first:
            try:
                async with asyncio.timeout(limits.idle_timeout):
                    first = await reader.read(READ_SIZE)
            except TimeoutError:
                return False  # idle: close quietly
            if not first:
                return False
            conn.receive_data(first)
        client.enter(READING)
        started = time.monotonic()
        try:
            request = await self._head(conn, reader, started, peer)
        except BadRequest as exc:
            await self._refuse(conn, reader, writer, exc, _named(first), started)
            return False
        if request is None:
            return False
        if self.in_flight >= limits.max_in_flight:  # before the body is read
            response = self._busy("too many requests in flight, retry later")
        else:
            self.in_flight += 1
            try:
                request.body = await self._body(conn, reader, writer, request, started)
                client.enter(BUSY)
                response = await self._handle(request)
            except BadRequest as exc:
                response = error(exc.status, str(exc))
            finally:
                self.in_flight -= 1
        client.enter(BUSY)  # answering: never evicted
        await self._send(conn, writer, response)
        self._log(f"{request.method} {request.path}", response, started)
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            return True
        if conn.their_state is not h11.DONE:  # a body left unread: drop it, then close
            await _linger(reader, writer)
        return False

    async def _refuse(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        exc: BadRequest,
        what: str,
        started: float,
    ) -> None:
        response = error(exc.status, str(exc))
        response.note = f"refused: {exc}"
        await self._send(conn, writer, response)
        self._log(what, response, started)
        await _linger(reader, writer)

    async def _handle(self, request: Request) -> Response:
        try:
            return await self.handler(request)
        except BadRequest:
            raise
        except Exception:  # a bug in a handler: this request's 500, not the server's end
            self.log.exception("internal error")
            return Response(500, b'{"error": "internal error"}', note="internal error", close=True)

    async def _next(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        deadline: float,
        stall: float | None = None,
    ) -> Any:
        """The next h11 event, reading as needed until ``deadline`` (monotonic), each read
        within ``stall`` seconds; ``TimeoutError`` past either."""
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise BadRequest(f"malformed request: {_why(exc)}", exc.error_status_hint) from None
            if event is not h11.NEED_DATA:
                return event
            remaining = deadline - time.monotonic()
            if stall is not None:
                remaining = min(remaining, stall)
            if remaining <= 0:
                raise TimeoutError
            async with asyncio.timeout(remaining):
                data = await reader.read(READ_SIZE)
            conn.receive_data(data)

    async def _head(
        self, conn: h11.Connection, reader: asyncio.StreamReader, started: float, peer: str | None
    ) -> Request | None:
        """The request's head, within the limits; None when the client closed."""
        limits = self.limits
        try:
            event = await self._next(conn, reader, started + limits.head_timeout)
        except TimeoutError:
            raise BadRequest("request head not received in time", 408) from None
        if isinstance(event, h11.ConnectionClosed):
            return None
        assert isinstance(event, h11.Request), event
        # h11 bounds a head only while it is incomplete; one that came whole is measured here.
        line = len(event.method) + len(event.target) + 10
        if line > limits.max_line:
            raise BadRequest("request line too long", 400)
        if len(event.headers) > limits.max_headers:
            raise BadRequest("too many header lines", 431)
        size = line
        headers: dict[str, str] = {}
        for raw_name, raw_value in event.headers:
            length = len(raw_name) + len(raw_value) + 4
            size += length
            if length > limits.max_line:
                raise BadRequest("header line too long", 431)
            name = raw_name.decode("ascii", "replace")  # h11: a token, lower-cased
            value = raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        if size > limits.max_head:
            raise BadRequest("request head too large", 431)
        if "transfer-encoding" in headers:  # a body's size is known before it is read
            raise BadRequest("send the body with a Content-Length", 411)
        path, _, query = event.target.decode("ascii", "replace").partition("?")
        method = event.method.decode("ascii", "replace")
        return Request(method, path, query, headers, peer=peer)

    async def _body(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: Request,
        started: float,
    ) -> bytes:
        """The request body, decoded; 413 as soon as it (or its decoding) is too large."""
        limits = self.limits
        length = request.headers.get("content-length")  # h11 checked it is digits
        if length is not None and int(length) > limits.max_body:
            raise BadRequest(f"request body larger than {limits.max_body} bytes", 413)
        decode = decoder(request.headers.get("content-encoding", ""), limits)
        if conn.they_are_waiting_for_100_continue:
            writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b"")
        chunks: list[bytes] = []
        received = 0
        deadline = started + limits.request_timeout
        while True:
            try:
                event = await self._next(conn, reader, deadline, limits.stall_timeout)
            except TimeoutError:
                raise BadRequest("request body not received in time", 408) from None
            if isinstance(event, h11.EndOfMessage):
                break
            if isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("closed in the middle of a body")
            assert isinstance(event, h11.Data), event
            received += len(event.data)
            if received > limits.max_body:
                raise BadRequest(f"request body larger than {limits.max_body} bytes", 413)
            chunks.append(decode(event.data))
        chunks.append(decode(b""))  # the end: a truncated encoding is refused
        return b"".join(chunks)

    async def _send(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, response: Response
    ) -> None:
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        headers = [
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
            ("Server", self.name),
            ("Cache-Control", "no-store"),
            *response.headers,
        ]
        if response.status == 503 and not any(n.lower() == "retry-after" for n, _ in headers):
            headers.append(("Retry-After", str(self.limits.retry_after)))
        # An unread body, a broken head, or the handler's wish: no reuse (h11 then closes).
        if response.close or conn.their_state is not h11.DONE:
            headers.append(("Connection", "close"))
        reason = HTTPStatus(response.status).phrase.encode()
        data = conn.send(h11.Response(status_code=response.status, headers=headers, reason=reason))
        data = (data or b"") + (conn.send(h11.Data(data=response.body)) or b"")
        data += conn.send(h11.EndOfMessage()) or b""
        writer.write(data)
        async with asyncio.timeout(self.limits.write_timeout):
            await writer.drain()

    def _log(self, what: str, response: Response, started: float) -> None:
        # Never the client's address (volunteers' privacy), nor a query string; what the
        # client sent is escaped: one request is one log line, with no escape sequence in it.
        method, _, path = what.partition(" ")
        self.log.info(
            "%s %d %.3fs %dB %s",
            printable(f"{method[:16]} {path[:64]}" if path else method[:16] or "-"),
            response.status,
            time.monotonic() - started,
            len(response.body) if response.log_size else 0,
            one_line(response.note, 200),
        )


def decoder(encoding: str, limits: Limits) -> Callable[[bytes], bytes]:
    """A request body's decoding (``Content-Encoding``), as it arrives: a function of each
    piece to its decoded bytes, ``b""`` at the end; raises :class:`BadRequest` (415 for an
    encoding not in ``limits.encodings``, 413 past ``limits.max_body`` decoded, 400 for a
    broken or truncated encoding); the decoding is :mod:`probe.net.decoders`', as for every
    HTTP reader."""
    encoding = encoding.strip().lower() or "identity"
    if encoding not in limits.encodings or encoding not in ("identity", "gzip"):
        taken = " or ".join(limits.encodings)
        raise BadRequest(f"Content-Encoding {encoding!r}: send {taken}", 415)
    if encoding == "identity":
        return lambda data: data
    body = decoders.Body(encoding, limits.max_body)

    def gunzip(data: bytes) -> bytes:
        if not data:
            if not body.finished():
                raise BadRequest("the gzip body is truncated", 400)
            return b""
        try:
            within = body.add(data)
        except HTTPProtocolError:
            raise BadRequest("the body is not valid gzip", 400) from None
        if not within:
            raise BadRequest(f"decoded body larger than {limits.max_body} bytes", 413)
        return body.take()

    return gunzip


_QUOTED = re.compile(r": (?:bytearray\()?b['\"]")


def _why(exc: h11.RemoteProtocolError) -> str:
    """h11's reason, without the bytes it may quote (a query string: not for the log)."""
    return _QUOTED.split(str(exc), maxsplit=1)[0]


def _named(first: bytes) -> str:
    """A refused request, named for the log by its first line's method and path."""
    line = first.split(b"\n", 1)[0].decode("utf-8", "replace").rstrip("\r")
    method, _, rest = line.partition(" ")
    return f"{method} {rest.split(' ', 1)[0].split('?', 1)[0]}".rstrip()


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Half-close, then read and drop what the client still sends (briefly, boundedly):
    closing a socket with unread data makes the kernel send a RST, which can destroy our
    answer (a 413, say) before the client has read it."""
    with contextlib.suppress(OSError, TimeoutError, RuntimeError):
        if writer.can_write_eof():
            writer.write_eof()
        async with asyncio.timeout(1.0):
            for _ in range(64):
                if not await reader.read(READ_SIZE):
                    break
