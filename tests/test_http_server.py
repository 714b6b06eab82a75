"""probe's one HTTP/1.1 server (probe/net/http_server.py), over real sockets on 127.0.0.1.

The helper and the collector are tested through it in the lab and on PostgreSQL; here it is
tested alone, with small limits: every refusal (400, 408, 411, 413, 415, 431, 503 +
Retry-After), keep-alive, eviction of the idlest connection when full, and log lines that
carry nothing raw from the network. Synchronisation is by events and by the server's own
state; timeouts are safety limits only, never what a test measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from probe.net.http_server import BUSY, IDLE, READING, Limits, Request, Response, Server

LOG = "probe.test.http_server"
SAFETY = 10.0  # seconds: a test that waits longer has failed


@dataclass
class App:
    """A handler that records what it got; ``hold`` keeps requests to /hold until set."""

    requests: list[Request] = field(default_factory=list)
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    hold: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, request: Request) -> Response:
        self.requests.append(request)
        if request.path == "/hold":
            self.entered.set()
            await self.hold.wait()
        if request.path == "/boom":
            raise RuntimeError("a bug")
        if request.path == "/note":
            return Response(200, b"{}", note="\x1b[31mred\n\x00next")
        body = json.dumps({"path": request.path, "size": len(request.body)}).encode()
        return Response(200, body)


@contextlib.asynccontextmanager
async def serving(
    app: Callable[[Request], Awaitable[Response]], **limits: object
) -> AsyncIterator[tuple[Server, int]]:
    defaults: dict[str, object] = {"max_head": 1024, "max_body": 1000, "max_line": 256}
    server = Server(
        app,
        Limits(**(defaults | limits)),  # type: ignore[arg-type]
        name="test/1",
        log=logging.getLogger(LOG),
    )
    _, port = await server.start("127.0.0.1", 0)
    try:
        yield server, port
    finally:
        await server.close(grace=1.0)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        return json.loads(self.body)  # type: ignore[no-any-return]


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    async with asyncio.timeout(SAFETY):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Answer(status, headers, body)


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def exchange(port: int, data: bytes) -> tuple[Answer, bytes]:
    """Send ``data`` on a new connection; the first answer, and when it closes the
    connection, whatever follows it until the server closes."""
    reader, writer = await connect(port)
    try:
        writer.write(data)
        answer = await read_answer(reader)
        if answer.headers.get("connection") != "close":
            return answer, b""
        async with asyncio.timeout(SAFETY):
            rest = await reader.read()
        return answer, rest
    finally:
        writer.close()


async def closed(reader: asyncio.StreamReader) -> bool:
    """True when the server closes the connection (EOF or reset) without another answer."""
    try:
        async with asyncio.timeout(SAFETY):
            return await reader.read(1) == b""
    except ConnectionResetError:
        return True


async def until(condition: Callable[[], bool]) -> None:
    """Wait (yielding to the server) until ``condition`` holds; the server's state, not time."""
    async with asyncio.timeout(SAFETY):
        while not condition():
            await asyncio.sleep(0)


def get(path: str = "/", *extra: str) -> bytes:
    return "\r\n".join([f"GET {path} HTTP/1.1", "Host: t", *extra, "", ""]).encode()


def post(body: bytes, *extra: str, path: str = "/") -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: t", f"Content-Length: {len(body)}", *extra, "", ""]
    return "\r\n".join(head).encode() + body


# ------------------------------------------------------------------ keep-alive and answers


@pytest.mark.asyncio
async def test_keep_alive_serves_pipelined_and_sequential_requests_on_one_connection():
    app = App()
    async with serving(app) as (_, port):
        reader, writer = await connect(port)
        writer.write(get("/a") + post(b'{"x": 1}', path="/b"))  # pipelined
        first, second = await read_answer(reader), await read_answer(reader)
        writer.write(get("/c?q=1"))  # and one more once they are answered
        third = await read_answer(reader)
        writer.close()
    assert [a.status for a in (first, second, third)] == [200, 200, 200]
    assert [a.json()["path"] for a in (first, second, third)] == ["/a", "/b", "/c"]
    assert second.json()["size"] == 8
    assert "close" not in first.headers.get("connection", "")
    assert first.headers["server"] == "test/1" and first.headers["cache-control"] == "no-store"
    assert [(r.method, r.path, r.query) for r in app.requests] == [
        ("GET", "/a", ""),
        ("POST", "/b", ""),
        ("GET", "/c", "q=1"),
    ]
    assert app.requests[0].peer == "127.0.0.1"


@pytest.mark.asyncio
async def test_an_idle_connection_is_closed_quietly():
    async with serving(App(), idle_timeout=0.1) as (_, port):
        reader, writer = await connect(port)
        writer.write(get())
        assert (await read_answer(reader)).status == 200
        async with asyncio.timeout(SAFETY):
            assert await reader.read() == b""  # no 408: nothing was asked
        writer.close()


@pytest.mark.asyncio
async def test_expect_100_continue_is_answered_before_the_body_is_sent():
    async with serving(App()) as (_, port):
        reader, writer = await connect(port)
        head = "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
        writer.write(head.encode())
        interim = await read_answer(reader)
        writer.write(b"{}")
        final = await read_answer(reader)
        writer.close()
    assert (interim.status, final.status, final.json()["size"]) == (100, 200, 2)


@pytest.mark.asyncio
async def test_a_handlers_bug_is_a_500_and_the_connection_is_closed(caplog):
    caplog.set_level(logging.INFO, LOG)
    async with serving(App()) as (_, port):
        answer, rest = await exchange(port, get("/boom"))
        assert (await exchange(port, get()))[0].status == 200  # the server is fine
    assert answer.status == 500 and answer.json() == {"error": "internal error"}
    assert answer.headers["connection"] == "close" and rest == b""
    assert any(r.exc_info for r in caplog.records)


# ------------------------------------------------------------------ the head's limits


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("data", "status", "reason"),
    [
        (b"HELLO\r\n\r\n", 400, "malformed request"),
        (b"GET / HTTP/1.1\r\n\r\n", 400, "Host"),  # HTTP/1.1 without Host (RFC 9112)
        (b"GET / HTTP/1.1\r\nHost: t\r\nbad header\r\n\r\n", 400, "malformed request"),
        (get("/" + "a" * 300), 400, "request line too long"),
        (get("/", "X-Long: " + "a" * 300), 431, "header line too long"),
        (get("/", *[f"X-{i}: 1" for i in range(101)]), 431, "too many header lines"),
        # a head larger than max_head, sent whole (h11 only bounds an incomplete one) ...
        (get("/", *[f"X-{i}: {'a' * 200}" for i in range(6)]), 431, "request head too large"),
        # ... and sent without its end
        (get("/", *[f"X-{i}: {'a' * 200}" for i in range(6)])[:-2], 431, "too long"),
        (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n", 411, "Length"),
        (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n", 400, "malformed"),
    ],
)
async def test_a_head_beyond_the_limits_is_refused_and_the_connection_closed(data, status, reason):
    app = App()
    async with serving(app) as (_, port):
        answer, rest = await exchange(port, data)
    assert answer.status == status, answer
    assert reason in answer.json()["error"]
    assert answer.headers["connection"] == "close" and rest == b""
    assert app.requests == []  # the handler never saw it


@pytest.mark.asyncio
async def test_a_slow_head_is_cut_off_with_408():
    app = App()
    async with serving(app, head_timeout=0.2) as (_, port):
        reader, writer = await connect(port)
        writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n")  # and never the blank line
        answer = await read_answer(reader)
        assert await closed(reader)
        writer.close()
    assert answer.status == 408 and "head" in answer.json()["error"]
    assert app.requests == []


@pytest.mark.asyncio
async def test_a_slow_body_is_cut_off_with_408():
    app = App()
    async with serving(app, stall_timeout=0.2) as (_, port):
        reader, writer = await connect(port)
        writer.write(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 50\r\n\r\n{")
        answer = await read_answer(reader)
        assert await closed(reader)
        writer.close()
    assert answer.status == 408 and "body" in answer.json()["error"]
    assert app.requests == []


# ------------------------------------------------------------------ bodies


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("data", "status", "reason"),
    [
        (post(b"x" * 1001), 413, "larger than 1000"),
        # refused on its Content-Length, before a byte of it is read
        (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999\r\n\r\n", 413, "larger"),
        (post(gzip.compress(b" " * 100_000), "Content-Encoding: gzip"), 413, "decoded body"),
        (post(b"not gzip", "Content-Encoding: gzip"), 400, "not valid gzip"),
        (post(gzip.compress(b"{}")[:-4], "Content-Encoding: gzip"), 400, "truncated"),
        (post(b"{}", "Content-Encoding: br"), 415, "Content-Encoding"),
    ],
)
async def test_a_body_beyond_the_limits_is_refused(data, status, reason):
    app = App()
    async with serving(app) as (_, port):
        answer, _ = await exchange(port, data)
    assert answer.status == status, answer
    assert reason in answer.json()["error"]
    assert app.requests == []


@pytest.mark.asyncio
async def test_a_gzip_body_is_handed_decoded_and_only_where_gzip_is_taken():
    app = App()
    compressed = post(gzip.compress(b"x" * 900), "Content-Encoding: gzip")
    async with serving(app) as (_, port):
        answer, _ = await exchange(port, compressed)
    assert answer.status == 200 and answer.json()["size"] == 900
    assert app.requests[0].body == b"x" * 900
    async with serving(App(), encodings=("identity",)) as (_, port):
        answer, _ = await exchange(port, compressed)
    assert answer.status == 415


# ------------------------------------------------------------------ connections and load


@pytest.mark.asyncio
async def test_when_full_the_idle_connection_is_evicted_first_then_the_slow_sender():
    app = App()
    async with serving(app, max_connections=2) as (server, port):
        idle_reader, idle_writer = await connect(port)
        idle_writer.write(get())
        assert (await read_answer(idle_reader)).status == 200
        slow_reader, slow_writer = await connect(port)
        slow_writer.write(b"GET /slow HTTP/1.1\r\n")  # its head, half sent
        await until(lambda: sorted(c.state for c in server.connections.values()) == [IDLE, READING])
        # A third client: the idle connection makes room, the slow sender stays.
        answer, _ = await exchange(port, get("/new", "Connection: close"))
        assert answer.status == 200
        assert await closed(idle_reader)
        slow_writer.write(b"Host: t\r\n\r\n")
        assert (await read_answer(slow_reader)).json()["path"] == "/slow"
        assert server.evicted == 1
        # Now only the slow one (answered, so idle now) and newcomers: it is evicted next.
        stuck_reader, stuck_writer = await connect(port)
        stuck_writer.write(b"GET /stuck HTTP/1.1\r\n")
        await until(lambda: sorted(c.state for c in server.connections.values()) == [IDLE, READING])
        assert (await exchange(port, get("/other", "Connection: close")))[0].status == 200
        assert await closed(slow_reader)
        assert not stuck_reader.at_eof()
        for writer in (idle_writer, slow_writer, stuck_writer):
            writer.close()


@pytest.mark.asyncio
async def test_a_busy_connection_is_never_evicted_503_with_retry_after_instead():
    app = App()
    async with serving(app, max_connections=1, retry_after=7) as (server, port):
        busy_reader, busy_writer = await connect(port)
        busy_writer.write(get("/hold"))
        async with asyncio.timeout(SAFETY):
            await app.entered.wait()
        assert [c.state for c in server.connections.values()] == [BUSY]
        refused, rest = await exchange(port, get())
        app.hold.set()
        held = await read_answer(busy_reader)
        busy_writer.close()
    assert refused.status == 503 and refused.headers["retry-after"] == "7"
    assert "connections" in refused.json()["error"] and rest == b""
    assert held.status == 200 and server.evicted == 0


@pytest.mark.asyncio
async def test_beyond_max_in_flight_503_with_retry_after_before_the_body_is_read():
    app = App()
    async with serving(app, max_in_flight=1, retry_after=3) as (_, port):
        held_reader, held_writer = await connect(port)
        held_writer.write(get("/hold"))
        async with asyncio.timeout(SAFETY):
            await app.entered.wait()
        shed, _ = await exchange(port, post(b"{}"))
        app.hold.set()
        held = await read_answer(held_reader)
        after, _ = await exchange(port, post(b"{}"))  # capacity is back
        held_writer.close()
    assert shed.status == 503 and shed.headers["retry-after"] == "3"
    assert "in flight" in shed.json()["error"]
    assert held.status == 200 and after.status == 200
    assert [r.path for r in app.requests] == ["/hold", "/"]  # the shed one never reached it


@pytest.mark.asyncio
async def test_a_handlers_own_503_gets_the_servers_retry_after_unless_it_says_one():
    async def busy(request: Request) -> Response:
        headers = [("Retry-After", "9")] if request.path == "/own" else []
        return Response(503, b"{}", headers=headers)

    async with serving(busy, retry_after=2) as (_, port):
        plain, _ = await exchange(port, get("/", "Connection: close"))
        own, _ = await exchange(port, get("/own", "Connection: close"))
    assert plain.headers["retry-after"] == "2"
    assert own.headers["retry-after"] == "9"


# ------------------------------------------------------------------ the log


@pytest.mark.asyncio
async def test_nothing_from_the_network_reaches_the_log_raw(caplog):
    caplog.set_level(logging.INFO, LOG)
    hostile = [
        b"GET /\x1b[2J\x1b[31mx\x00?secret=1\nFAKE-200-line HTTP/1.1\r\nHost: t\r\n\r\n",
        b"\x1b]0;title\x07 /?secret=2 HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /\xe2\x80\xaeexe.jpg HTTP/1.1\r\nHost: t\r\n\r\n",  # U+202E, raw UTF-8
        b"GET /p?secret=3 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        b"GET /note HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    ]
    async with serving(App()) as (_, port):
        statuses = [(await exchange(port, data))[0].status for data in hostile]
    assert statuses == [400, 400, 400, 200, 200]
    lines = [r.getMessage() for r in caplog.records if r.name == LOG]
    assert len(lines) == len(hostile), lines  # one line per request, no injected one
    text = "\n".join(lines)
    assert "GET /\\x1b[2J\\x1b[31mx\\x00 400 " in text  # the refused line, named escaped
    assert "\\x1b]0;title\\x07 / 400 " in text
    assert "GET /\\u202eexe.jpg 400 " in text
    assert "GET /p 200 " in text
    assert "\\x1b[31mred \\x00next" in text  # the handler's note, escaped too
    assert not any(c in text for c in "\x1b\x00\x07\u202e")
    assert "secret" not in text and "FAKE" not in text  # no query string, nothing injected
    assert "127.0.0.1" not in text  # nor the client's address
