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
from typing import Any
from urllib.parse import urlsplit

import h11

from ..errors import HTTPProtocolError
from ..model import failures, urls
from ..model.charset import title_of
from ..model.http import REDIRECT_CODES
from ..model.records import HTTPRequest
from .classify import classify
from .connections import NETWORK_ERRORS, Clock, Conn
from .decoders import ACCEPT_ENCODING, Body

MAX_BODY = 1 << 19  # 512 KiB, OONI's cap
#: The most bytes a response head may take (status line and headers), for every HTTP reader.
MAX_HEADER_BYTES = 64 * 1024
MAX_HEADERS = 200
MAX_INFORMATIONAL = 16  # 1xx responses before the final one
MAX_RAW = 4096  # bytes of an unparsable answer kept as evidence

#: What a desktop browser sends, so the censor treats us like one.
DEFAULT_HEADERS = {
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Accept-Language": "en-US,en;q=0.9",
    "User-Agent": (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.4 Safari/605.1.15"
    ),
}


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
        body: Body | None = None
        while True:
            event = await self._next_event()
            if isinstance(event, h11.InformationalResponse):
                self.record.informational.append(event.status_code)
                if len(self.record.informational) > MAX_INFORMATIONAL:
                    raise HTTPProtocolError("invalid HTTP response: too many 1xx responses")
            elif isinstance(event, h11.Response):
                self._response(event)
                codings = [v for k, v in self.record.headers if k.lower() == "content-encoding"]
                body = Body(", ".join(codings), self.max_body)
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
