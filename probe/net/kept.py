"""HTTP/1.1 requests to the control's servers (DoH resolvers, test helpers), connections kept.

The probe asks the same few servers thousands of times a run. httpx does this at a cost that
grows with its pool: it scans every connection for every request, and every waiting request
whenever a connection frees up (with 64 connections, a third of the probe's CPU). Here a
request takes an idle connection or opens one, at most ``connections`` per server, and gives
it back once the exchange is over; h11 frames the messages.

A kept connection the server closed meanwhile fails before any byte of an answer: the request
is then sent again, once, on a new connection (what browsers do; a DoH query or a helper's
control request may be asked twice without harm). Answers come from servers we do not trust:
the body is read with a cap on its *decoded* size (gzip and deflate are inflated a bounded
step at a time), and the header block is capped too.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11

from ..errors import HTTPProtocolError, NetworkError
from ..model.addresses import bracket
from . import decoders, guard
from .http11 import MAX_HEADER_BYTES

#: A kept connection that fails with one of these before any byte of an answer was closed
#: by the server meanwhile.
STALE_ERRORS = (OSError, EOFError, asyncio.IncompleteReadError)


@dataclass
class Answer:
    """A server's answer: status, headers (names lower-cased) and decoded body."""

    status: int
    headers: dict[str, str]
    body: bytes


class KeptClient:
    """Requests over HTTP/1.1 connections kept alive, one exchange at a time each, at most
    ``connections`` per server (scheme, host, port); the requests beyond wait for one."""

    def __init__(self, ssl_context: ssl.SSLContext, connections: int = 16) -> None:
        self.ssl_context = ssl_context
        self.connections = connections
        self._slots: dict[tuple[str, str, int], asyncio.Semaphore] = {}
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: list[tuple[str, str]],
        body: bytes = b"",
        cap: int,
        error: Callable[[str], NetworkError],
    ) -> Answer:
        """Send the request and read the answer, its body at most ``cap`` bytes decoded.

        Raises ``error(reason)`` for an answer past the cap, in an encoding other than gzip
        or deflate, or not HTTP; the network's errors (``OSError``, ``EOFError``, TLS errors)
        propagate.
        """
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = parts.hostname or ""
        default_port = 443 if scheme == "https" else 80
        port = parts.port or default_port
        key = (scheme, host, port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        authority = bracket(host) + ("" if port == default_port else f":{port}")
        fields = [("host", authority), *headers]
        if body or method == "POST":
            fields.append(("content-length", str(len(body))))
        message = h11.Request(method=method, target=target, headers=fields)
        slots = self._slots.setdefault(key, asyncio.Semaphore(self.connections))
        async with slots:
            idle = self._idle.setdefault(key, [])
            while idle:
                conn = idle.pop()
                try:
                    return await self._exchange(key, conn, message, body, cap, error)
                except STALE_ERRORS:
                    if conn.answered:
                        raise
                    # closed while idle: ask again on another connection
            context = self.ssl_context if scheme == "https" else None
            conn = await _Connection.open(host, port, context)
            return await self._exchange(key, conn, message, body, cap, error)

    async def _exchange(
        self,
        key: tuple[str, str, int],
        conn: _Connection,
        message: h11.Request,
        body: bytes,
        cap: int,
        error: Callable[[str], NetworkError],
    ) -> Answer:
        try:
            answer = await conn.exchange(message, body, cap, error)
        except BaseException:
            conn.close()
            raise
        if conn.reusable:
            self._idle.setdefault(key, []).append(conn)
        else:
            conn.close()
        return answer

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


class _Connection:
    """One HTTP/1.1 connection (asyncio's transport, TLS or not; h11's parser)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.http = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEADER_BYTES)
        self.answered = False  # whether this exchange got any byte of an answer
        self.reusable = False

    @classmethod
    async def open(cls, host: str, port: int, context: ssl.SSLContext | None) -> _Connection:
        """A connection to ``host`` at an address the bogon rule allows (:mod:`.guard`),
        trying each in turn; TLS verifies ``host``."""
        failure: OSError | None = None
        for ip in await guard.addresses(host, port):
            try:
                reader, writer = await asyncio.open_connection(
                    ip, port, ssl=context, server_hostname=host if context is not None else None
                )
            except OSError as exc:
                failure = exc
            else:
                return cls(reader, writer)
        assert failure is not None  # guard.addresses gives at least one address
        raise failure

    async def exchange(
        self, message: h11.Request, body: bytes, cap: int, error: Callable[[str], NetworkError]
    ) -> Answer:
        self.answered = self.reusable = False
        data = self.http.send(message) or b""
        if body:
            data += self.http.send(h11.Data(data=body)) or b""
        self.writer.write(data + (self.http.send(h11.EndOfMessage()) or b""))
        await self.writer.drain()
        answer: Answer | None = None
        decoded: _Decoded | None = None
        try:
            while True:
                event = self.http.next_event()
                if event is h11.NEED_DATA:
                    chunk = await self.reader.read(65536)
                    if chunk:
                        self.answered = True
                    self.http.receive_data(chunk)
                elif isinstance(event, h11.Response):
                    headers = {
                        name.decode("ascii").lower(): value.decode("latin-1")
                        for name, value in event.headers.raw_items()
                    }
                    answer = Answer(event.status_code, headers, b"")
                    decoded = _Decoded(headers.get("content-encoding", ""), cap, error)
                elif isinstance(event, h11.Data):
                    assert decoded is not None  # h11 sends Data only after a Response
                    decoded.add(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise EOFError("the server closed the connection")
        except h11.RemoteProtocolError as exc:
            if not self.answered:
                raise EOFError("the server closed the connection") from None
            raise error(f"answer is not HTTP: {exc}") from None
        assert answer is not None and decoded is not None
        answer.body = decoded.body()
        if self.http.our_state is h11.DONE and self.http.their_state is h11.DONE:
            self.http.start_next_cycle()
            self.reusable = True
        return answer

    def close(self) -> None:
        self.writer.close()


class _Decoded:
    """An answer's body decoded as it arrives (:mod:`probe.net.decoders`), at most ``cap``
    bytes: more, or a coding we cannot undo, makes the answer unusable."""

    def __init__(self, encoding: str, cap: int, error: Callable[[str], NetworkError]) -> None:
        if not decoders.supported(encoding):
            raise error(f"unsupported content-encoding {encoding.strip()[:40]!r}")
        self.body_so_far = decoders.Body(encoding, cap)
        self.cap = cap
        self.error = error

    def add(self, chunk: bytes) -> None:
        try:
            within = self.body_so_far.add(chunk)
        except HTTPProtocolError as exc:
            raise self.error(str(exc)) from None
        if not within:
            raise self.error(f"answer larger than {self.cap} bytes")

    def body(self) -> bytes:
        return self.body_so_far.bytes()
