"""One HTTP/1.1 exchange over a connection we opened and measured ourselves.

The fetch reuses the very connection whose TCP connect and TLS handshake were measured (as
OONI's E002 does), so the HTTP record tells exactly which address served which page. The
client is deliberately small: GET, ``Connection: close``, Content-Length, chunked and
close-delimited bodies, gzip/deflate. Bodies are read up to a cap and hostile servers are
bounded: header block size, header count and line length are limited.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import zlib
from urllib.parse import urljoin, urlsplit

from ..errors import HTTPProtocolError
from ..model import failures
from ..model.records import HTTPRequest
from .classify import classify
from .connections import Clock, Conn

MAX_BODY = 1 << 19  # 512 KiB, OONI's cap
MAX_HEADER_BYTES = 64 * 1024
MAX_HEADERS = 200
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})

#: What a desktop browser sends, so the censor treats us like one.
DEFAULT_HEADERS = {
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Accept-Language": "en-US,en;q=0.9",
    "User-Agent": (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.4 Safari/605.1.15"
    ),
}

_TITLE = re.compile(rb"<title[^>]*>([^<]{1,512})</title>", re.IGNORECASE)


def title_of(body: bytes) -> str | None:
    """The page's ``<title>``, whitespace collapsed, or None."""
    match = _TITLE.search(body)
    if not match:
        return None
    return " ".join(match.group(1).decode("utf-8", "replace").split()) or None


def request_bytes(url: str, headers: dict[str, str], cookie: str | None = None) -> bytes:
    parts = urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc.rsplit('@', 1)[-1]}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines += ["Accept-Encoding: gzip, deflate", "Connection: close"]
    if cookie:
        lines.append(f"Cookie: {cookie}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii", "strict")


class _Reader:
    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self.buf = b""
        self.eof = False

    async def fill(self) -> bool:
        if self.eof:
            return False
        chunk = await self.conn.recv()
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    async def until(self, sep: bytes, limit: int) -> bytes:
        while True:
            index = self.buf.find(sep)
            if index >= 0:
                data, self.buf = self.buf[:index], self.buf[index + len(sep) :]
                return data
            if len(self.buf) > limit:
                raise HTTPProtocolError("header block too large")
            if not await self.fill():
                raise EOFError("connection closed before the response was complete")

    async def exactly(self, size: int) -> bytes:
        while len(self.buf) < size:
            if not await self.fill():
                raise EOFError("connection closed before the body was complete")
        data, self.buf = self.buf[:size], self.buf[size:]
        return data


class _Body:
    """Collects the (decoded) body up to ``cap`` bytes."""

    def __init__(self, encoding: str | None, cap: int) -> None:
        self.cap = cap
        self.parts: list[bytes] = []
        self.size = 0
        self.truncated = False
        encoding = (encoding or "").lower().strip()
        self.decoder = None
        if encoding == "gzip":
            self.decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self.decoder = zlib.decompressobj()

    def add(self, data: bytes) -> bool:
        """Add raw bytes; False once the cap is reached."""
        if self.decoder is not None:
            data = self.decoder.decompress(data, self.cap - self.size + 1)
        room = self.cap - self.size
        if len(data) > room:
            data = data[:room]
            self.truncated = True
        self.parts.append(data)
        self.size += len(data)
        return not self.truncated

    def bytes(self) -> bytes:
        return b"".join(self.parts)


async def _read_body(reader: _Reader, headers: list[list[str]], body: _Body) -> None:
    names = {k.lower(): v for k, v in headers}
    if "chunked" in names.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.until(b"\r\n", 1024)
            try:
                size = int(size_line.split(b";")[0].strip(), 16)
            except ValueError as exc:
                raise HTTPProtocolError("bad chunk size") from exc
            if size == 0:
                return
            if not body.add(await reader.exactly(size)):
                return
            await reader.exactly(2)
    if "content-length" in names:
        try:
            remaining = int(names["content-length"])
        except ValueError as exc:
            raise HTTPProtocolError("bad Content-Length") from exc
        while remaining > 0:
            if not reader.buf and not await reader.fill():
                raise EOFError("connection closed before the body was complete")
            data, reader.buf = reader.buf[:remaining], reader.buf[remaining:]
            remaining -= len(data)
            if not body.add(data):
                return
        return
    # Delimited by close.
    while True:
        if reader.buf:
            data, reader.buf = reader.buf, b""
            if not body.add(data):
                return
        if not await reader.fill():
            return


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
    """GET ``url`` over ``conn`` and record the response; never raises. Closes ``conn``."""
    record = HTTPRequest(url=url, ip=ip, port=port, depth=depth, t0=clock())
    try:
        async with asyncio.timeout(timeout):
            await conn.send(request_bytes(url, headers or DEFAULT_HEADERS, cookie))
            reader = _Reader(conn)
            head = await reader.until(b"\r\n\r\n", MAX_HEADER_BYTES)
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            version, _, rest = status_line.partition(" ")
            if not version.startswith("HTTP/1."):
                raise HTTPProtocolError("not an HTTP/1.x response")
            record.status_code = int(rest[:3])
            if len(header_lines) > MAX_HEADERS:
                raise HTTPProtocolError("too many headers")
            for line in header_lines:
                name, sep, value = line.partition(":")
                if not sep:
                    raise HTTPProtocolError("malformed header line")
                record.headers.append([name.strip(), value.strip()])
            if record.status_code in REDIRECT_CODES and record.header("location") is not None:
                record.location = urljoin(url, record.header("location"))
            body = _Body(record.header("content-encoding"), max_body)
            if record.status_code not in (204, 304) and record.status_code >= 200:
                await _read_body(reader, record.headers, body)
            data = body.bytes()
            record.body = data
            record.body_length = len(data)
            record.body_truncated = body.truncated
            record.body_sha256 = hashlib.sha256(data).hexdigest()
            record.title = title_of(data)
    except (HTTPProtocolError, ValueError, UnicodeError, zlib.error) as exc:
        record.failure = failures.unknown(f"invalid HTTP response: {exc}")
    except Exception as exc:
        record.failure = classify(exc)
    finally:
        conn.close()
    record.t = clock()
    return record
