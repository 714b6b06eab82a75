"""The measured HTTP/1.1 client (h11 over our own Conn), content decoding, charsets.

Every exchange runs over a socketpair or a loopback socket inside this test process: real
bytes through the kernel, no mocks, no traffic leaving the machine.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import brotli
import pytest
import trustme

from probe.model import failures
from probe.model.charset import charset_of, codec_for, decode_text
from probe.net import http11
from probe.net.connections import READ_SIZE, Clock, Conn, open_tcp

PAGE = b"<html><head><title>Hello</title></head><body>hi</body></html>"


class CountingConn(Conn):
    """A Conn that counts what the network gave it (instrumentation, not a mock)."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self.received = 0
        self.reads = 0

    async def recv(self) -> bytes:
        data = await super().recv()
        self.received += len(data)
        self.reads += bool(data)
        return data


async def read_request(sock: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await loop.sock_recv(sock, 65536)
        if not chunk:
            break
        data += chunk
    return data


async def exchange(
    reply: bytes | list[bytes], url: str = "http://example.com/", **kwargs
) -> tuple[bytes, http11.HTTPRequest]:
    """Serve ``reply`` (in parts) on a socketpair, then close; the request and the record."""
    client, server = socket.socketpair()
    client.setblocking(False)
    server.setblocking(False)
    loop = asyncio.get_running_loop()
    parts = [reply] if isinstance(reply, bytes) else reply

    async def serve() -> bytes:
        try:
            request = await read_request(server)
            for part in parts:
                await loop.sock_sendall(server, part)
                await asyncio.sleep(0)
            return request
        except (BrokenPipeError, ConnectionResetError):
            return b""  # the client stopped reading: fine
        finally:
            server.close()

    task = asyncio.create_task(serve())
    kwargs.setdefault("timeout", 5)
    record = await http11.get(Conn(client), url, clock=Clock(), ip="192.88.99.1", port=80, **kwargs)
    return await task, record


def response(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    head = [f"HTTP/1.1 {status}", *headers]
    if not any(h.lower().startswith(("content-length", "transfer-encoding")) for h in headers):
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


# ------------------------------------------------------------------ the request


@pytest.mark.asyncio
async def test_request_is_percent_encoded_with_idna_host_and_usual_headers():
    request, record = await exchange(
        response(PAGE), url="http://faß.de/новости?q=бишкек&x=%2F", cookie="a=b"
    )
    lines = request.decode("ascii").split("\r\n")
    path = "/%D0%BD%D0%BE%D0%B2%D0%BE%D1%81%D1%82%D0%B8"  # /новости
    query = "q=%D0%B1%D0%B8%D1%88%D0%BA%D0%B5%D0%BA&x=%2F"  # the escape kept as written
    assert lines[0] == f"GET {path}?{query} HTTP/1.1"
    assert lines[1] == "Host: xn--fa-hia.de"  # IDNA 2008, not fass.de
    names = [line.split(":", 1)[0] for line in lines[2:] if line]
    assert names == [*http11.DEFAULT_HEADERS, "Accept-Encoding", "Connection", "Cookie"]
    assert "Connection: close" in lines and "Cookie: a=b" in lines
    assert "Accept-Encoding: gzip, deflate, br" in lines  # brotli is importable here
    assert record.failure is None and record.title == "Hello"


@pytest.mark.asyncio
async def test_host_header_keeps_a_non_default_port_and_brackets_ipv6():
    request, _ = await exchange(response(PAGE), url="http://[2001:DB8::1]:8080/")
    assert b"\r\nHost: [2001:db8::1]:8080\r\n" in request


@pytest.mark.asyncio
async def test_programming_error_propagates_and_the_connection_is_closed():
    client, server = socket.socketpair()
    client.setblocking(False)
    conn = Conn(client)
    with pytest.raises(AttributeError):
        await http11.get(
            conn,
            "http://a.kg/",
            timeout=1,
            clock=Clock(),
            ip="192.88.99.1",
            port=80,
            headers={"X-Number": 1},  # type: ignore[dict-item]
        )
    assert client.fileno() == -1
    server.close()


# ------------------------------------------------------------------ framing (h11)


@pytest.mark.asyncio
async def test_informational_responses_are_recorded_and_skipped():
    _, record = await exchange(
        [
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n",
            response(PAGE),
        ]
    )
    assert record.failure is None
    assert record.informational == [100, 103]
    assert record.status_code == 200
    assert record.body == PAGE
    assert ["Link", "</s.css>; rel=preload"] not in record.headers  # the 1xx's, not the final


@pytest.mark.asyncio
async def test_endless_informational_responses_are_refused():
    _, record = await exchange([b"HTTP/1.1 100 Continue\r\n\r\n"] * 100)
    assert record.failure == "unknown_failure: invalid HTTP response: too many 1xx responses"
    assert len(record.informational) == http11.MAX_INFORMATIONAL + 1


@pytest.mark.asyncio
async def test_folded_header_and_bare_lf():
    _, record = await exchange(
        b"HTTP/1.1 200 OK\nX-Folded: one\n  two\nContent-Length: 5\nServer: nginx\n\nhello"
    )
    assert record.failure is None
    assert record.headers == [["X-Folded", "one two"], ["Content-Length", "5"], ["Server", "nginx"]]
    assert record.body == b"hello"


@pytest.mark.asyncio
async def test_chunked_body_split_across_reads_with_extensions_and_trailer():
    wire = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n"
    parts = [response(b"", "Transfer-Encoding: chunked")] + [
        wire[i : i + 3] for i in range(0, len(wire), 3)
    ]
    _, record = await exchange(parts)
    assert record.failure is None
    assert record.body == b"hello, world"
    assert record.body_length == 12 and not record.body_truncated


@pytest.mark.asyncio
@pytest.mark.parametrize("version", ["1.0", "1.1"])
async def test_close_delimited_body(version):
    _, record = await exchange(
        [f"HTTP/{version} 200 OK\r\nServer: x\r\n\r\n".encode(), b"part one, ", b"part two"]
    )
    assert record.failure is None
    assert record.body == b"part one, part two"


@pytest.mark.asyncio
async def test_no_body_for_204_and_304():
    _, record = await exchange(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert record.failure is None and record.status_code == 204 and record.body == b""


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "reply",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 -12 Negative\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
        b"HTTP/2 200\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"<html>blocked</html>",  # no status line at all, then close
    ],
)
async def test_unparsable_answer_is_a_failure_with_the_raw_bytes(reply):
    _, record = await exchange(reply)
    assert record.failure is not None
    assert record.failure.startswith("unknown_failure: invalid HTTP response: ")
    if record.status_code is None:
        assert record.raw == reply  # the evidence of what answered


@pytest.mark.asyncio
async def test_raw_evidence_is_capped():
    reply = b"x" * 10_000 + b"\r\n\r\n"
    _, record = await exchange(reply)
    assert record.failure.startswith("unknown_failure: invalid HTTP response: ")
    assert record.raw == reply[: http11.MAX_RAW]


@pytest.mark.asyncio
async def test_header_block_is_capped():
    _, record = await exchange(b"HTTP/1.1 200 OK\r\n" + b"X-Long: " + b"a" * 200_000)
    assert record.failure.startswith("unknown_failure: invalid HTTP response: ")
    assert len(record.raw) == http11.MAX_RAW


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "reply, raw",
    [
        (b"", None),  # closed without a byte
        (b"HTTP/1.1 200 OK\r\nContent-", b"HTTP/1.1 200 OK\r\nContent-"),  # in the header
        (b"HTT", b"HTT"),
        (response(b"abc", "Content-Length: 10"), None),  # in the body
        (response(b"", "Transfer-Encoding: chunked") + b"a\r\nabc", None),
    ],
)
async def test_close_before_the_end_is_eof(reply, raw):
    _, record = await exchange(reply)
    assert record.failure == failures.EOF_ERROR
    assert record.raw == raw


@pytest.mark.asyncio
async def test_reset_is_connection_reset():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    loop = asyncio.get_running_loop()

    async def serve() -> None:
        sock, _ = await loop.sock_accept(listener)
        await read_request(sock)
        await loop.sock_sendall(sock, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
        await asyncio.sleep(0.05)  # let the client read the head first
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # linger 0: RST

    try:
        task = asyncio.create_task(serve())
        conn = await open_tcp("127.0.0.1", listener.getsockname()[1], 5)
        record = await http11.get(
            conn, "http://a.kg/", timeout=5, clock=Clock(), ip="192.88.99.1", port=80
        )
        await task
    finally:
        listener.close()
    assert record.failure == failures.CONNECTION_RESET
    assert record.status_code == 200


# ------------------------------------------------------------------ bodies: cap, streaming


@pytest.mark.asyncio
async def test_body_at_the_cap_is_whole_one_byte_more_is_truncated():
    _, whole = await exchange(response(b"a" * 1000), max_body=1000)
    _, cut = await exchange(response(b"a" * 1001), max_body=1000)
    assert (whole.body_length, whole.body_truncated) == (1000, False)
    assert (cut.body_length, cut.body_truncated) == (1000, True)
    assert cut.failure is None and cut.body == b"a" * 1000


@contextmanager
def endless_server(
    head: bytes, tls: ssl.SSLContext | None = None, block: int = 1 << 20, pause: float = 0
) -> Iterator[socket.socket]:
    """A thread that sends ``head``, then ``block`` bytes every ``pause`` s until stopped.

    Yields the client's socket. With no pause, blocking sends from a thread keep the kernel
    buffer full: the client always finds data waiting, the case where asyncio's sock_recv
    never suspends. The thread stops after 30 s whatever happens, so a regression fails
    instead of hanging.
    """
    client, server = socket.socketpair()
    stop = threading.Event()

    def run() -> None:
        sock: socket.socket = server
        try:
            if tls is not None:
                sock = tls.wrap_socket(server, server_side=True)
            sock.sendall(head)
            data = b"x" * block
            deadline = time.monotonic() + 30
            while not stop.wait(pause) and time.monotonic() < deadline:
                sock.sendall(data)
        except OSError:
            pass  # the client closed
        finally:
            sock.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        client.setblocking(False)
        yield client
    finally:
        stop.set()
        client.close()
        thread.join(40)
        assert not thread.is_alive()


class Ticker:
    """Another task of the process: counts how often the event loop lets it run."""

    def __init__(self) -> None:
        self.count = 0
        self.task = asyncio.create_task(self.run())

    async def run(self) -> None:
        while True:
            self.count += 1
            await asyncio.sleep(0)

    async def stop(self) -> int:
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task
        return self.count


def tls_pair() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("a.kg").configure_cert(server)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client)
    return server, client


async def connect(sock: socket.socket, tls: ssl.SSLContext | None) -> CountingConn:
    conn = CountingConn(sock)
    if tls is not None:
        await conn.start_tls(tls, "a.kg")
    return conn


@pytest.mark.asyncio
@pytest.mark.parametrize("secure", [False, True], ids=["tcp", "tls"])
async def test_endless_body_is_cut_at_the_cap_while_other_tasks_run(secure):
    server_tls, client_tls = tls_pair() if secure else (None, None)
    cap = 4 << 20
    with endless_server(b"HTTP/1.1 200 OK\r\n\r\n", server_tls) as sock:
        conn = await connect(sock, client_tls)
        ticker = Ticker()
        record = await http11.get(
            conn,
            "http://a.kg/",
            timeout=60,
            clock=Clock(),
            ip="192.88.99.1",
            port=80,
            max_body=cap,
        )
        ticks = await ticker.stop()
    assert record.failure is None
    assert record.body_truncated and record.body_length == cap
    # Each socket read that returned data let the other task run once; a read is at most
    # READ_SIZE bytes, so reading past the cap took at least cap / READ_SIZE turns.
    assert ticks >= cap // READ_SIZE - 1
    assert conn.received <= cap + 2 * READ_SIZE


@pytest.mark.asyncio
async def test_stream_faster_than_we_read_ends_at_the_deadline_or_the_cap():
    with endless_server(b"HTTP/1.1 200 OK\r\n\r\n") as sock:
        conn = CountingConn(sock)
        ticker = Ticker()
        record = await http11.get(
            conn,
            "http://a.kg/",
            timeout=0.3,
            clock=Clock(),
            ip="192.88.99.1",
            port=80,
            max_body=64 << 20,
        )
        ticks = await ticker.stop()
    if record.failure is not None:
        assert record.failure == failures.GENERIC_TIMEOUT
    else:
        assert record.body_truncated and record.body_length == 64 << 20
    assert conn.reads > 0 and ticks >= conn.reads - 1


@pytest.mark.asyncio
async def test_timeout_is_a_deadline_over_the_whole_exchange():
    # Every read succeeds, the body never ends and the cap is far: only a deadline over the
    # whole exchange (not one per read) ends it.
    with endless_server(b"HTTP/1.1 200 OK\r\n\r\n", block=100, pause=0.01) as sock:
        conn = CountingConn(sock)
        record = await http11.get(
            conn,
            "http://a.kg/",
            timeout=0.3,
            clock=Clock(),
            ip="192.88.99.1",
            port=80,
            max_body=1 << 40,
        )
    assert record.failure == failures.GENERIC_TIMEOUT
    assert conn.reads > 0
    assert record.status_code == 200 and record.body is None


@pytest.mark.asyncio
async def test_chunk_announced_larger_than_the_cap_is_not_read_past_it():
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7fffffffffff\r\n"
    cap = 100_000
    with endless_server(head) as sock:
        conn = CountingConn(sock)
        record = await http11.get(
            conn,
            "http://a.kg/",
            timeout=60,
            clock=Clock(),
            ip="192.88.99.1",
            port=80,
            max_body=cap,
        )
    assert record.failure is None
    assert record.body_truncated and record.body_length == cap
    assert conn.received <= cap + 2 * READ_SIZE


@pytest.mark.asyncio
async def test_every_read_with_data_lets_other_tasks_run():
    # Fill the kernel buffer before reading: every recv finds data without waiting.
    client, server = socket.socketpair()
    client.setblocking(False)
    server.setblocking(False)
    sent = 0
    try:
        while True:
            sent += server.send(b"x" * 65536)
    except BlockingIOError:
        pass
    server.close()
    conn = CountingConn(client)
    ticker = Ticker()
    while await conn.recv():
        pass
    ticks = await ticker.stop()
    conn.close()
    assert conn.received == sent
    assert conn.reads >= 2
    assert ticks >= conn.reads - 1


# ------------------------------------------------------------------ content encodings


TEXT = b"<title>Coded</title>" + b"censorship measurement " * 2000


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "coding, coded",
    [
        ("gzip", gzip.compress(TEXT)),
        ("x-gzip", gzip.compress(TEXT)),
        ("deflate", zlib.compress(TEXT)),  # zlib-wrapped, as the standard says
        ("deflate", raw_deflate(TEXT)),  # raw, as many servers send it
        ("br", brotli.compress(TEXT)),
        ("gzip, br", brotli.compress(gzip.compress(TEXT))),  # applied in this order
        ("deflate, gzip", gzip.compress(zlib.compress(TEXT))),
        ("identity", TEXT),
    ],
)
async def test_content_encodings_are_decoded(coding, coded):
    _, record = await exchange(response(coded, f"Content-Encoding: {coding}"))
    assert record.failure is None
    assert record.body == TEXT and record.body_length == len(TEXT)
    assert record.title == "Coded"


@pytest.mark.asyncio
async def test_chunked_gzip_split_anywhere():
    coded = gzip.compress(TEXT)
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(coded[i : i + 7]), coded[i : i + 7]) for i in range(0, len(coded), 7)
    )
    parts = [response(b"", "Transfer-Encoding: chunked", "Content-Encoding: gzip")]
    parts += [chunks[i : i + 5] for i in range(0, len(chunks), 5)] + [b"0\r\n\r\n"]
    _, record = await exchange(parts)
    assert record.failure is None and record.body == TEXT


@pytest.mark.asyncio
@pytest.mark.parametrize("coding", ["compress", "zstd", "gzip, snappy"])
async def test_unknown_encoding_keeps_the_body_as_sent(coding):
    _, record = await exchange(response(b"\x1f\x9dopaque", f"Content-Encoding: {coding}"))
    assert record.failure is None
    assert record.body == b"\x1f\x9dopaque"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "coding, coded",
    [
        ("gzip", gzip.compress(TEXT)[:10] + b"\xff" * 20),  # a reserved deflate block type
        ("deflate", b"\x78\x9c" + b"\xff" * 20),
        ("br", b"\xff" * 20),
    ],
)
async def test_corrupt_coding_is_a_failure(coding, coded):
    _, record = await exchange(response(coded, f"Content-Encoding: {coding}"))
    assert record.failure.startswith(
        f"unknown_failure: invalid HTTP response: cannot decode the {coding} body"
    )
    assert record.status_code == 200


BOMB = b"\0" * (200 << 20)


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    gz = gzip.compress(BOMB, compresslevel=9)
    return {"gzip": gz, "br": brotli.compress(BOMB, quality=1), "gzip, br": brotli.compress(gz)}


@pytest.mark.asyncio
@pytest.mark.parametrize("coding", ["gzip", "br", "gzip, br"])
async def test_compression_bomb_is_decoded_only_up_to_the_cap(bombs, coding):
    cap = 1 << 20
    tracemalloc.start()
    try:
        _, record = await exchange(
            response(bombs[coding], f"Content-Encoding: {coding}"), max_body=cap
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert record.failure is None
    assert record.body_truncated and record.body_length == cap
    assert peak < 16 * cap  # 200 MiB inflated whole would show here


# ------------------------------------------------------------------ redirects


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "location, expected",
    [
        (b"/next", "http://example.com/next"),
        (
            b"https://\xd1\x8f\xd0\xbd\xd0\xb4\xd0\xb5\xd0\xba\xd1\x81.\xd1\x80\xd1\x84/\xd0\xbf",
            "https://xn--d1acpjx3f.xn--p1ai/%D0%BF",
        ),  # UTF-8 bytes
        (b"/caf\xe9?q=\xe9", "http://example.com/caf%C3%A9?q=%C3%A9"),  # Latin-1 bytes
        (b"http://fa\xc3\x9f.de/a b", "http://xn--fa-hia.de/a%20b"),
        (b"http://[2001:DB8::1]:8080/x", "http://[2001:db8::1]:8080/x"),
        (b"HTTPS://Example.COM:443/%7e", "https://example.com/%7e"),
    ],
)
async def test_location_is_canonical_ascii(location, expected):
    _, record = await exchange(
        b"HTTP/1.1 302 Found\r\nLocation: " + location + b"\r\nContent-Length: 0\r\n\r\n"
    )
    assert record.failure is None
    assert record.location == expected
    assert record.location.isascii()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "location, failure",
    [
        (b"http://a.kg:99999/", "unknown_failure: invalid redirect location: bad port"),
        (b"http://a.kg:0/", "unknown_failure: invalid redirect location: bad port"),
        (b"http://a.kg:x/", "unknown_failure: invalid redirect location: bad port"),
        (b"http:///nohost", failures.HTTP_INVALID_REDIRECT),
        (
            b"ftp://a.kg/",
            "unknown_failure: invalid redirect location: only http:// and https://"
            " URLs can be fetched",
        ),
        (
            b"http://bad_host!/",
            "unknown_failure: invalid redirect location: 'bad_host!' is not a valid domain name",
        ),
    ],
)
async def test_bad_location_is_the_hops_failure(location, failure):
    _, record = await exchange(
        b"HTTP/1.1 301 Moved\r\nLocation: " + location + b"\r\nContent-Length: 2\r\n\r\nok"
    )
    assert record.failure == failure
    assert record.location is None
    assert record.status_code == 301 and record.body == b"ok"


# ------------------------------------------------------------------ charsets and titles


TITLE = "Новости Кыргызстана"


def html(title_bytes: bytes, meta: bytes = b"") -> bytes:
    return b"<html><head>" + meta + b"<title>" + title_bytes + b"</title></head></html>"


@pytest.mark.asyncio
async def test_title_in_windows_1251_from_the_header_only():
    body = html(TITLE.encode("cp1251"))
    _, record = await exchange(response(body, "Content-Type: text/html; charset=windows-1251"))
    assert record.title == TITLE


@pytest.mark.asyncio
async def test_title_in_koi8_r_from_a_meta_tag_only():
    meta = b'<meta http-equiv="Content-Type" content="text/html; charset=KOI8-R">'
    _, record = await exchange(
        response(html(TITLE.encode("koi8-r"), meta), "Content-Type: text/html")
    )
    assert record.title == TITLE


@pytest.mark.asyncio
async def test_header_charset_overrides_a_wrong_meta_tag():
    body = html(TITLE.encode("utf-8"), b'<meta charset="windows-1251">')
    _, record = await exchange(response(body, "Content-Type: text/html; charset=UTF-8"))
    assert record.title == TITLE


@pytest.mark.asyncio
async def test_undeclared_charset_is_utf8_with_replacement():
    _, record = await exchange(response(html(b"caf\xe9 " + TITLE.encode())))
    assert record.title == "caf\ufffd " + TITLE


@pytest.mark.parametrize(
    "content_type, body, expected",
    [
        ("text/html; charset=windows-1251", b"", "cp1251"),
        ('text/html; charset="koi8-r"', b"", "koi8-r"),
        ("text/html;charset=ISO-8859-1", b"", "cp1252"),  # as browsers read it
        ("text/html; charset=bogus", b'<meta charset="koi8-r">', "koi8-r"),
        ("text/html; charset=base64", b"", None),  # not a text encoding
        (None, b"<META CHARSET=windows-1251>", "cp1251"),
        (None, b"<meta http-equiv='content-type' content='text/html;charset=koi8-r'>", "koi8-r"),
        (None, b'<meta charset="utf-16">', "utf-8"),  # read as ASCII: cannot be UTF-16
        (None, b'<meta charset="utf-7">', None),
        ("text/html; charset=koi8-r", b"\xef\xbb\xbf<p>", "utf-8"),  # the BOM wins
        (None, b"<p>no declaration</p>", None),
        (None, b" " * 5000 + b'<meta charset="koi8-r">', None),  # past the prescan
    ],
)
def test_charset_of(content_type, body, expected):
    assert charset_of(content_type, body) == expected


def test_decode_text():
    assert decode_text(TITLE.encode("cp1251"), "windows-1251") == TITLE
    assert decode_text(b"\xef\xbb\xbfabc", "utf-8") == "abc"
    assert decode_text(b"ab\xff", None) == "ab\ufffd"
    assert decode_text(b"ab\xff", "no-such-charset") == "ab\ufffd"
    assert codec_for("x-mac-cyrillic") == "mac-cyrillic"
