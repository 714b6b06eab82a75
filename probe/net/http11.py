"""One HTTP/1.1 exchange over a connection we opened and measured ourselves.

The fetch reuses the very connection whose TCP connect and TLS handshake were measured (as
OONI's E002 does), so the HTTP record tells exactly which address served which page. We
write and parse with h11 (the sans-IO HTTP/1.1 state machine under httpx), driven over our
own :class:`~probe.net.connections.Conn`, so the standard decides framing: 1xx responses,
folded headers, bare LF, chunked, Content-Length and close-delimited bodies.

Hostile servers are bounded. The header block is capped, and so are the number of headers and
of 1xx responses. Bodies are streamed: each read is decoded (gzip, deflate, br, stacked) with
its output bounded, and reading stops once the *decoded* body passes the cap, so neither a
chunk announced larger than the cap nor a compression bomb is ever held whole. The timeout is
one deadline over the whole exchange (reads yield to the event loop, so it fires).

What the network does wrong becomes the hop's failure string: an answer h11 refuses is
``unknown_failure: invalid HTTP response: ...`` with its first bytes kept in ``raw``.
"""

from __future__ import annotations

import asyncio
import hashlib
import zlib
from typing import Any, Protocol
from urllib.parse import urlsplit

import h11

from ..errors import HTTPProtocolError
from ..model import failures, urls
from ..model.charset import title_of
from ..model.http import REDIRECT_CODES
from ..model.records import HTTPRequest
from .classify import classify
from .connections import NETWORK_ERRORS, Clock, Conn

MAX_BODY = 1 << 19  # 512 KiB, OONI's cap
MAX_HEADER_BYTES = 64 * 1024
MAX_HEADERS = 200
MAX_INFORMATIONAL = 16  # 1xx responses before the final one
MAX_CODINGS = 4  # stacked Content-Encodings decoded; more are kept as sent
MAX_RAW = 4096  # bytes of an unparsable answer kept as evidence
DECODE_STEP = 65536  # coded bytes handed to a decoder at a time

#: What a desktop browser sends, so the censor treats us like one.
DEFAULT_HEADERS = {
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Accept-Language": "en-US,en;q=0.9",
    "User-Agent": (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.4 Safari/605.1.15"
    ),
}


def _load_brotli() -> Any:
    """The ``brotli`` module if it can bound its output (1.2 and later), else None."""
    try:
        import brotli
    except ImportError:
        return None
    return brotli if hasattr(brotli.Decompressor, "can_accept_more_data") else None


_brotli = _load_brotli()
#: ``br`` is only advertised when we can decode it.
ACCEPT_ENCODING = "gzip, deflate, br" if _brotli is not None else "gzip, deflate"


def header_text(value: bytes) -> str:
    """A header value as text: UTF-8 when it is valid UTF-8, else Latin-1 (any byte goes)."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def request(url: str, headers: dict[str, str], cookie: str | None = None) -> h11.Request:
    """The GET for ``url`` (canonicalised: percent-encoded path, IDNA host)."""
    url = urls.canonical(url)
    fields = [("Host", urlsplit(url).netloc), *headers.items()]
    fields += [("Accept-Encoding", ACCEPT_ENCODING), ("Connection", "close")]
    if cookie:
        fields.append(("Cookie", cookie))
    return h11.Request(
        method="GET",
        target=urls.request_target(url),
        headers=[(name.encode("ascii"), value.encode("utf-8")) for name, value in fields],
    )


# ------------------------------------------------------------------ content decoding


class _Stage(Protocol):
    def read(self, size: int) -> bytes:
        """At most ``size`` decoded bytes; b"" when nothing more can be had for now."""


class _Pending:
    """Body bytes as received, not yet decoded."""

    def __init__(self) -> None:
        self.data = b""

    def read(self, size: int) -> bytes:
        data, self.data = self.data[:size], self.data[size:]
        return data


def _zlib_wrapped(head: bytes) -> bool:
    """True when ``head`` starts a zlib stream (RFC 1950), False for raw deflate."""
    return head[0] & 0x0F == 8 and head[0] >> 4 <= 7 and (head[0] << 8 | head[1]) % 31 == 0


class _Zlib:
    """gzip, or deflate zlib-wrapped (the standard) or raw (what many servers send)."""

    def __init__(self, source: _Stage, coding: str) -> None:
        self.source = source
        self.coding = coding
        self.tail = b""  # coded bytes the decoder has not consumed yet
        self.decoder = None if coding == "deflate" else zlib.decompressobj(16 + zlib.MAX_WBITS)

    def read(self, size: int) -> bytes:
        while True:
            if self.decoder is None:  # deflate: the first two bytes say which
                self.tail += self.source.read(2 - len(self.tail))
                if len(self.tail) < 2:
                    return b""
                wbits = zlib.MAX_WBITS if _zlib_wrapped(self.tail) else -zlib.MAX_WBITS
                self.decoder = zlib.decompressobj(wbits)
            if self.decoder.eof:
                return b""  # what follows the coded stream is ignored
            try:
                out = self.decoder.decompress(self.tail, size)
            except zlib.error as exc:
                raise HTTPProtocolError(
                    f"invalid HTTP response: cannot decode the {self.coding} body: {exc}"
                ) from exc
            self.tail = self.decoder.unconsumed_tail
            if out:
                return out
            if not self.tail:
                self.tail = self.source.read(DECODE_STEP)
                if not self.tail:
                    return b""


class _Brotli:
    """br, with the decoder's output bounded (brotli >= 1.2)."""

    def __init__(self, source: _Stage) -> None:
        self.source = source
        self.decoder = _brotli.Decompressor()
        self.extra = b""  # decoded beyond what was asked: the limit is not exact

    def read(self, size: int) -> bytes:
        while not self.extra:
            if self.decoder.is_finished():
                return b""
            data = self.source.read(DECODE_STEP) if self.decoder.can_accept_more_data() else b""
            if not data and self.decoder.can_accept_more_data():
                return b""
            try:
                self.extra = self.decoder.process(data, output_buffer_limit=size)
            except _brotli.error as exc:
                raise HTTPProtocolError(
                    f"invalid HTTP response: cannot decode the br body: {exc}"
                ) from exc
            if not data and not self.extra:
                return b""
        out, self.extra = self.extra[:size], self.extra[size:]
        return out


def _decoder(content_encoding: str, source: _Pending) -> _Stage:
    """The decoding chain for ``content_encoding``; ``source`` itself when we cannot decode.

    Codings are listed in the order they were applied, so they are undone in reverse. An
    unknown coding (or too many) leaves the body as sent: still evidence, never a failure.
    """
    codings = [c.strip().lower() for c in content_encoding.split(",")]
    codings = [c for c in codings if c and c != "identity"]
    known = {"gzip", "x-gzip", "deflate"} | ({"br"} if _brotli is not None else set())
    if len(codings) > MAX_CODINGS or not set(codings) <= known:
        return source
    stage: _Stage = source
    for coding in reversed(codings):
        stage = _Brotli(stage) if coding == "br" else _Zlib(stage, coding)
    return stage


class _Body:
    """The decoded body, decoded as it arrives and capped at ``cap`` decoded bytes."""

    def __init__(self, content_encoding: str, cap: int) -> None:
        self.cap = cap
        self.parts: list[bytes] = []
        self.size = 0
        self.truncated = False
        self.pending = _Pending()
        self.decoded = _decoder(content_encoding, self.pending)

    def add(self, data: bytes) -> bool:
        """Add body bytes as received; False once more than ``cap`` decoded bytes were seen."""
        self.pending.data += data
        while not self.truncated:
            room = self.cap - self.size
            out = self.decoded.read(room + 1)
            if not out:
                break
            if len(out) > room:
                out = out[:room]
                self.truncated = True
            self.parts.append(out)
            self.size += len(out)
        # Left over only past the end of a coded stream: trailing bytes, ignored.
        self.pending.data = b""
        return not self.truncated

    def bytes(self) -> bytes:
        return b"".join(self.parts)


# ------------------------------------------------------------------ the exchange


def _could_be_http(data: bytes | bytearray) -> bool:
    """True when ``data`` is empty or starts like an HTTP response (``HTTP/``)."""
    return b"HTTP/".startswith(bytes(data[:5]))


def _reason(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:200] + "..."


class _Exchange:
    """One request/response over ``conn``, filling ``record`` as events arrive."""

    def __init__(self, conn: Conn, record: HTTPRequest, max_body: int) -> None:
        self.conn = conn
        self.record = record
        self.max_body = max_body
        self.parser = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEADER_BYTES)
        self.received = bytearray()  # the first MAX_RAW bytes, the evidence if unparsable
        self.eof = False
        self.redirect_failure: str | None = None

    async def run(self, req: h11.Request) -> None:
        head = self.parser.send(req) or b""
        await self.conn.send(head + (self.parser.send(h11.EndOfMessage()) or b""))
        body: _Body | None = None
        while True:
            event = await self._next_event()
            if isinstance(event, h11.InformationalResponse):
                self.record.informational.append(event.status_code)
                if len(self.record.informational) > MAX_INFORMATIONAL:
                    raise HTTPProtocolError("invalid HTTP response: too many 1xx responses")
            elif isinstance(event, h11.Response):
                self._response(event)
                codings = [v for k, v in self.record.headers if k.lower() == "content-encoding"]
                body = _Body(", ".join(codings), self.max_body)
            elif isinstance(event, h11.Data):
                assert body is not None  # h11 sends Data only after a Response
                if not body.add(bytes(event.data)):
                    break  # past the cap: stop reading
            else:
                break  # EndOfMessage (or ConnectionClosed, PAUSED, which follow it)
        data = body.bytes() if body is not None else b""
        self.record.body = data
        self.record.body_length = len(data)
        self.record.body_truncated = body is not None and body.truncated
        self.record.body_sha256 = hashlib.sha256(data).hexdigest()
        self.record.title = title_of(data, self.record.header("content-type"))

    async def _next_event(self) -> Any:
        while True:
            try:
                event = self.parser.next_event()
            except h11.RemoteProtocolError as exc:
                received = self.record.status_code is not None or _could_be_http(self.received)
                if self.eof and received:
                    raise EOFError("connection closed before the response was complete") from exc
                raise HTTPProtocolError(f"invalid HTTP response: {_reason(exc)}") from exc
            if event is not h11.NEED_DATA:
                return event
            data = await self.conn.recv()
            self.received += data[: MAX_RAW - len(self.received)]
            self.eof = not data
            self.parser.receive_data(data)

    def _response(self, event: h11.Response) -> None:
        record = self.record
        record.status_code = event.status_code
        for name, value in event.headers.raw_items():
            record.headers.append([name.decode("ascii"), header_text(value)])
        if len(record.headers) > MAX_HEADERS:
            raise HTTPProtocolError("invalid HTTP response: too many headers")
        location = record.header("location")
        if record.status_code in REDIRECT_CODES and location is not None:
            self._redirect(location)

    def _redirect(self, location: str) -> None:
        """Resolve and canonicalise ``Location``; a bad one is this hop's failure."""
        try:
            absolute = urls.resolve(self.record.url, location)
            if not urlsplit(absolute).hostname:
                self.redirect_failure = failures.HTTP_INVALID_REDIRECT
                return
            self.record.location = urls.canonical(absolute)
        except ValueError as exc:
            self.redirect_failure = failures.unknown(f"invalid redirect location: {exc}")


async def get(
    conn: Conn,
    url: str,
    *,
    timeout: float,
    clock: Clock,
    ip: str,
    port: int,
    depth: int = 0,
    headers: dict[str, str] | None = None,
    cookie: str | None = None,
    max_body: int = MAX_BODY,
) -> HTTPRequest:
    """GET ``url`` over ``conn`` and record the response; closes ``conn``.

    The network's faults (resets, EOF, timeouts, TLS errors, answers that are not HTTP) become
    ``record.failure``; ``timeout`` bounds the whole exchange. Anything else is a bug and
    propagates.
    """
    record = HTTPRequest(url=url, ip=ip, port=port, depth=depth, t0=clock())
    exchange = _Exchange(conn, record, max_body)
    try:
        req = request(url, headers or DEFAULT_HEADERS, cookie)
        async with asyncio.timeout(timeout):
            await exchange.run(req)
    except (*NETWORK_ERRORS, HTTPProtocolError) as exc:
        record.failure = classify(exc)
    finally:
        conn.close()
    if record.failure is None:
        record.failure = exchange.redirect_failure
    if record.status_code is None and exchange.received:
        record.raw = bytes(exchange.received)
    record.t = clock()
    return record
