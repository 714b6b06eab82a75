"""A small HTTP/1.1 server for a public collector: asyncio streams and h11 (already probe's
HTTP parser), with every limit a public server needs in one place.

Why not an ASGI server: the limits the collector must enforce are about the connection, not
the application: the time to send a request head (slowloris), the time and size of a body
(counted as it arrives, decoded size too: a gzip bomb is stopped as it inflates), requests in
flight (503 with ``Retry-After`` before the body is read), open connections. uvicorn, the
usual choice, has no head timeout and answers its concurrency limit without ``Retry-After``;
each would have to be patched in. Here they are ~250 lines over h11, tested in
tests/test_collector.py.

A volunteer's IP is neither logged nor stored (log lines carry the method, the path, the
status, the time and the size, escaped). The peer's address is handed to the handler only so
that it can be scrubbed from what the volunteer sent (:attr:`Request.peer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import h11

from .. import __version__
from ..model.text import printable

log = logging.getLogger("probe.collector")

SERVER_NAME = f"probe-collector/{__version__}"


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client may take of the server."""

    max_body: int = 8 * 1024 * 1024  # bytes of a request body, as sent and as decoded
    max_head: int = 16 * 1024  # bytes of a request line and headers
    max_in_flight: int = 256  # requests being handled at once; beyond: 503 + Retry-After
    max_connections: int = 2048  # open connections; beyond: 503 and closed
    idle_timeout: float = 30.0  # waiting for the next request on an open connection
    head_timeout: float = 10.0  # from a request's first byte to the end of its head
    stall_timeout: float = 10.0  # a body that stops coming in for this long
    body_timeout: float = 120.0  # receiving one whole request body
    write_timeout: float = 30.0  # a response being read by the client
    retry_after: int = 1  # seconds, in 503 answers


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names; repeated ones joined with ", "
    body: bytes = b""
    #: The connection's peer address: never logged nor stored, only scrubbed from the body
    #: (a server the volunteer measured may have echoed it into the measurement).
    peer: str | None = None


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    note: str = ""  # for the log line


Handler = Callable[[Request], Awaitable[Response]]


def error(status: int, reason: str, **extra: Any) -> Response:
    """A JSON error answer: ``{"error": reason}``."""
    body = json.dumps({"error": reason, **extra}).encode()
    return Response(status, body, note=reason)


class _Refused(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


class Server:
    """Serves ``handler`` on a listening socket until :meth:`close`."""

    def __init__(self, handler: Handler, limits: Limits = Limits()) -> None:
        self.handler = handler
        self.limits = limits
        self.in_flight = 0
        self.connections: set[asyncio.Task[Any]] = set()
        self.server: asyncio.Server | None = None

    async def start(self, sock: socket.socket) -> None:
        self.server = await asyncio.start_server(self._connection, sock=sock, backlog=4096)

    async def close(self, grace: float = 5.0) -> None:
        """Stop accepting; let requests in flight finish (``grace`` seconds); drop the rest."""
        if self.server is not None:
            self.server.close()
        deadline = time.monotonic() + grace
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        tasks = list(self.connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_head)
        try:
            if len(self.connections) > self.limits.max_connections:
                await self._send(conn, writer, self._busy("too many connections"))
                return
            while await self._one(conn, reader, writer):
                conn.start_next_cycle()
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self.connections.discard(task)
            writer.close()

    def _busy(self, reason: str) -> Response:
        response = error(503, reason)
        response.headers.append(("Retry-After", str(self.limits.retry_after)))
        return response

    async def _one(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Serve one request; whether the connection can serve another."""
        started = time.monotonic()
        try:
            head = await self._head(conn, reader)
        except _Refused as refused:
            await self._send(conn, writer, refused.response)
            _log(None, refused.response, started)
            await _linger(reader, writer)
            return False
        if head is None:
            return False
        path, _, query = head.target.decode("ascii", "replace").partition("?")
        headers: dict[str, str] = {}
        for name, value in head.headers:
            key = name.decode("ascii", "replace")
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        peername = writer.get_extra_info("peername")
        peer = str(peername[0]) if isinstance(peername, tuple) and peername else None
        request = Request(head.method.decode("ascii", "replace"), path, query, headers, peer=peer)
        if self.in_flight >= self.limits.max_in_flight:
            response = self._busy("too many requests in flight, retry later")
        else:
            self.in_flight += 1
            try:
                request.body = await self._body(conn, reader, headers)
                response = await self.handler(request)
            except _Refused as refused:
                response = refused.response
            finally:
                self.in_flight -= 1
        await self._send(conn, writer, response)
        _log(request, response, started)
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            return True
        if conn.their_state is not h11.DONE:
            await _linger(reader, writer)
        return False

    async def _events(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        deadline: float,
        stall: float | None = None,
    ) -> Any:
        """The next h11 event, reading as needed until ``deadline`` (monotonic), each read
        within ``stall`` seconds."""
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise _Refused(error(exc.error_status_hint, f"malformed request: {exc}")) from None
            if event is not h11.NEED_DATA:
                return event
            remaining = deadline - time.monotonic()
            if stall is not None:
                remaining = min(remaining, stall)
            if remaining <= 0:
                raise TimeoutError
            async with asyncio.timeout(remaining):
                data = await reader.read(65536)
            conn.receive_data(data)

    async def _head(self, conn: h11.Connection, reader: asyncio.StreamReader) -> h11.Request | None:
        """The next request's head; None when the client closed or stayed idle."""
        limits = self.limits
        if not conn.trailing_data[0]:
            try:
                async with asyncio.timeout(limits.idle_timeout):
                    data = await reader.read(65536)
            except TimeoutError:
                return None
            if not data:
                return None
            conn.receive_data(data)
        try:
            event = await self._events(conn, reader, time.monotonic() + limits.head_timeout)
        except TimeoutError:
            raise _Refused(error(408, "request head not received in time")) from None
        if isinstance(event, h11.ConnectionClosed):
            return None
        assert isinstance(event, h11.Request), event
        return event

    async def _body(
        self, conn: h11.Connection, reader: asyncio.StreamReader, headers: dict[str, str]
    ) -> bytes:
        """The request body, decoded; 413 as soon as it (or its decoding) is too large."""
        limits = self.limits
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limits.max_body:
            raise _Refused(error(413, f"request body larger than {limits.max_body} bytes"))
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip"):
            raise _Refused(error(415, f"Content-Encoding {encoding!r}: send gzip or identity"))
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if encoding == "gzip" else None
        chunks: list[bytes] = []
        received = decoded = 0
        deadline = time.monotonic() + limits.body_timeout
        while True:
            try:
                event = await self._events(conn, reader, deadline, limits.stall_timeout)
            except TimeoutError:
                raise _Refused(error(408, "request body not received in time")) from None
            if isinstance(event, h11.EndOfMessage):
                break
            if isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("closed in the middle of a body")
            assert isinstance(event, h11.Data), event
            received += len(event.data)
            if received > limits.max_body:
                raise _Refused(error(413, f"request body larger than {limits.max_body} bytes"))
            data = event.data
            if inflate is not None:
                try:
                    data = inflate.decompress(data, limits.max_body - decoded + 1)
                except zlib.error:
                    raise _Refused(error(400, "the body is not valid gzip")) from None
                if inflate.unconsumed_tail:
                    raise _Refused(error(413, f"decoded body larger than {limits.max_body} bytes"))
            decoded += len(data)
            if decoded > limits.max_body:
                raise _Refused(error(413, f"decoded body larger than {limits.max_body} bytes"))
            chunks.append(data)
        if inflate is not None and not inflate.eof:
            raise _Refused(error(400, "the gzip body is truncated"))
        return b"".join(chunks)

    async def _send(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, response: Response
    ) -> None:
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        close = conn.their_state is not h11.DONE  # an unread body, a broken head: no reuse
        headers = [
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
            ("Server", SERVER_NAME),
            ("Cache-Control", "no-cache"),
            *response.headers,
        ]
        if close:
            headers.append(("Connection", "close"))
        reason = HTTPStatus(response.status).phrase.encode()
        data = conn.send(h11.Response(status_code=response.status, headers=headers, reason=reason))
        data = (data or b"") + (conn.send(h11.Data(data=response.body)) or b"")
        data += conn.send(h11.EndOfMessage()) or b""
        writer.write(data)
        async with asyncio.timeout(self.limits.write_timeout):
            await writer.drain()


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Half-close, then read and drop what the client still sends (briefly): closing with
    unread data sends a RST that can destroy the answer before the client reads it."""
    with contextlib.suppress(OSError, TimeoutError, RuntimeError):
        if writer.can_write_eof():
            writer.write_eof()
        async with asyncio.timeout(1.0):
            for _ in range(64):
                if not await reader.read(65536):
                    break


def _log(request: Request | None, response: Response, started: float) -> None:
    # Never the client's address (volunteers' privacy); what the client sent is escaped.
    what = f"{request.method} {request.path[:80]}" if request else "-"
    log.info(
        "%s %d %.3fs %dB %s",
        printable(what),
        response.status,
        time.monotonic() - started,
        len(response.body),
        printable(response.note[:200]),
    )
