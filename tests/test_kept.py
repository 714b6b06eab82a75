"""probe's kept-alive HTTP/1.1 client for the control's servers (probe.net.kept), against
loopback servers that answer as told."""

from __future__ import annotations

import asyncio
import gzip
import ssl

import pytest

from probe.errors import HelperAnswerError
from probe.net.kept import KeptClient


class Server:
    """A loopback HTTP/1.1 server: answers every request on a connection with ``answer``
    (bytes, a full response), counts the connections it accepted and the requests read."""

    def __init__(self, answer: bytes, close_after: int | None = None) -> None:
        self.answer = answer
        self.close_after = close_after
        self.connections = self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                self.requests += 1
                writer.write(self.answer)
                await writer.drain()
                served += 1
                if self.close_after is not None and served >= self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


async def asking(server: Server, n: int, **request) -> list:
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    client = KeptClient(ssl.create_default_context(), connections=2)
    try:
        answers = []
        for _ in range(n):
            answers.append(
                await client.request(
                    "POST", f"http://127.0.0.1:{port}/x", headers=[], body=b"{}",
                    cap=request.get("cap", 1024), error=HelperAnswerError,
                )
            )  # fmt: skip
            await asyncio.sleep(0.01)  # lets a closing server's FIN arrive first
        return answers
    finally:
        await client.aclose()
        listener.close()


def response(body: bytes, *headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return f"HTTP/1.1 200 OK\r\ncontent-length: {len(body)}\r\n{head}\r\n".encode() + body


@pytest.mark.asyncio
async def test_one_connection_serves_every_request_in_turn():
    server = Server(response(b"hello"))
    answers = await asking(server, 5)
    assert [(a.status, a.body) for a in answers] == [(200, b"hello")] * 5
    assert (server.connections, server.requests) == (1, 5)


@pytest.mark.asyncio
async def test_a_connection_the_server_closes_is_replaced_and_the_request_asked_again():
    # The server closes after each answer without saying so: the next request finds the kept
    # connection dead before any byte of an answer and is sent again on a new one.
    server = Server(response(b"hi"), close_after=1)
    answers = await asking(server, 4)
    assert [a.body for a in answers] == [b"hi"] * 4
    assert server.connections == 4 and server.requests == 4


@pytest.mark.asyncio
async def test_connection_close_is_honoured():
    server = Server(response(b"bye", "connection: close"), close_after=1)
    answers = await asking(server, 3)
    assert [a.body for a in answers] == [b"bye"] * 3
    assert server.connections == 3


@pytest.mark.asyncio
async def test_gzip_is_decoded_and_a_bomb_stopped_at_the_cap():
    small = gzip.compress(b'{"ok": true}')
    answers = await asking(Server(response(small, "content-encoding: gzip")), 1)
    assert answers[0].body == b'{"ok": true}'
    bomb = gzip.compress(b"\0" * (20 << 20))
    with pytest.raises(HelperAnswerError, match="larger than 1024"):
        await asking(Server(response(bomb, "content-encoding: gzip")), 1)


@pytest.mark.asyncio
async def test_an_answer_that_is_not_http_is_an_error_for_the_caller():
    with pytest.raises(HelperAnswerError, match="not HTTP"):
        await asking(Server(b"SSH-2.0-OpenSSH_9.2\r\n" * 10, close_after=1), 1)
    with pytest.raises(HelperAnswerError, match="unsupported content-encoding"):
        await asking(Server(response(b"x", "content-encoding: zstd")), 1)
