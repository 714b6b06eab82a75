"""A site, a resolver and a test helper whose every text would act on a terminal or a page.

    python -m tests.lab.hostile_text serve LOGDIR        (in net, at TEXT_IP)

At TEXT_IP (192.88.99.252), for every name under ``evil.test``:

* DNS (UDP and TCP 53): the name -> TEXT_IP;
* HTTP 80: ``/`` a page whose title and body carry :data:`PAYLOAD`, with headers (``Server``,
  ``Set-Cookie``, ``X-Note``) carrying what a header can (:data:`HEADER_PAYLOAD`: C1 controls
  and bidi overrides, in UTF-8 and as raw bytes; a header cannot carry ESC or NUL);
  ``/block`` a block page of the same kind (the helper says the real page is another);
  ``/redirect`` a 302 whose Location carries :data:`HEADER_PAYLOAD`; ``/escheader`` a header
  with ESC and BEL in it (HTTP forbids them; h11, and so the probe, takes them);
* a test helper (HTTP 8080, OONI's protocol): for ``/`` it saw the same page (its title and
  headers carry :data:`PAYLOAD`); for ``/block`` another page; for ``/fail`` its fetch, its
  DNS and its connects failed with :data:`PAYLOAD` as the failure strings; ``/whoami`` names
  the network :data:`PAYLOAD`;
* a collector (HTTP 8081, OONI's collector protocol) that opens reports and refuses every
  measurement (400) with :data:`PAYLOAD` as the reason; on 8082 one that refuses every token
  (401) so.

Everything here is what a hostile network can send; the probe must store it as sent and show
it escaped (:func:`probe.model.text.printable`).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import dns.exception
import dns.message

from .hostile import _answer, read_request, simple

TEXT_IP = "192.88.99.252"
ZONE = "evil.test"
#: A terminal's title (OSC 0), its screen cleared, its clipboard written (OSC 52), a C1 CSI,
#: a right-to-left override, a bidi isolate, a right-to-left mark, a NUL.
PAYLOAD = (
    "\x1b]0;pwned\x07 \x1b[2J \x1b]52;c;cHduZWQ=\x07 \x9b31m red \u202egpj.exe\u202c "
    "\u2066iso\u2069 \u200fmark nul\x00end"
)
#: What an HTTP header value can carry (h11 refuses ESC and NUL there, not obs-text).
HEADER_PAYLOAD = "\x9b31m \u202egpj.exe \u2066iso\u2069 \x85next"


class Servers:
    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir

    def http(self, handler):
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                request = await read_request(reader)
                await handler(writer.get_extra_info("peername")[0], *request, writer)
            except (ConnectionError, OSError, ValueError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        return handle

    async def web(self, peer, method, target, headers, body, writer) -> None:
        path = urllib.parse.urlsplit(target).path
        # Header values as bytes: UTF-8 (C1 and bidi as multi-byte characters) and one raw
        # C1 byte (read as Latin-1).
        head = [
            b"HTTP/1.1 %s X" % (b"302" if path == "/redirect" else b"200"),
            b"Connection: close",
            b"Content-Type: text/html; charset=utf-8",
            b"Server: " + HEADER_PAYLOAD.encode(),
            b"X-Note: raw \x9b byte",
            b"Set-Cookie: \xe2\x80\xaeevil=" + HEADER_PAYLOAD.encode() + b"; Path=/",
        ]
        if path == "/redirect":
            head.append(b"Location: /landing/" + HEADER_PAYLOAD.encode())
        if path == "/escheader":
            head.append(b"X-Evil: \x1b]0;pwned\x07")
        page = (
            f"<html><head><title>{PAYLOAD}</title></head>"
            f"<body><h1>{PAYLOAD}</h1><p>Access to this site is restricted. {PAYLOAD}</p>"
            "</body></html>"
        ).encode()
        if path == "/redirect":
            page = b""
        head.append(b"Content-Length: %d" % len(page))
        writer.write(b"\r\n".join(head) + b"\r\n\r\n" + page)
        await writer.drain()

    async def helper(self, peer, method, target, headers, body, writer) -> None:
        path = urllib.parse.urlsplit(target).path
        json_type = {"Content-Type": "application/json"}
        if path == "/whoami":
            answer = {
                "probe_ip": peer,
                "probe_asn": "AS64512",
                "probe_cc": "KG",
                "probe_network_name": PAYLOAD,
            }
            writer.write(simple(200, json_type, json.dumps(answer).encode()))
            await writer.drain()
            return
        request = json.loads(body)
        url = urllib.parse.urlsplit(request.get("http_request") or "")
        endpoints = request.get("tcp_connect") or []
        failed = url.path == "/fail"
        answer = {
            "tcp_connect": {
                e: {"status": not failed, "failure": PAYLOAD if failed else None} for e in endpoints
            },
            "tls_handshake": {},
            "quic_handshake": {},
            "http_request": {
                "body_length": 20000 if url.path == "/block" else 400,
                "discovered_h3_endpoint": "",
                "failure": PAYLOAD if failed else None,
                "title": "The real news site" if url.path == "/block" else PAYLOAD,
                "headers": {"Server": PAYLOAD, "X-" + "\u202e": PAYLOAD},
                "status_code": 0 if failed else 200,
            },
            "http3_request": None,
            "dns": {"failure": PAYLOAD, "addrs": []}
            if failed
            else {"failure": None, "addrs": [TEXT_IP]},
            "ip_info": {TEXT_IP: {"asn": 64500, "flags": 11}},
        }
        writer.write(simple(200, json_type, json.dumps(answer).encode()))
        await writer.drain()

    def collector(self, status: int):
        async def answer(peer, method, target, headers, body, writer) -> None:
            path = urllib.parse.urlsplit(target).path
            if path == "/report":
                reply = (200, {"report_id": "20261201T000000Z_webconnectivity_KG_1_n1_x"})
            elif path.endswith("/close"):
                reply = (200, {"status": "success"})
            else:
                reply = (status, {"error": PAYLOAD})
            if status == 401:
                reply = (401, {"error": PAYLOAD})
            code, payload = reply
            data = json.dumps(payload).encode()
            writer.write(simple(code, {"Content-Type": "application/json"}, data))
            await writer.drain()

        return answer

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(Resolver, local_addr=(TEXT_IP, 53))
        await asyncio.start_server(dns_tcp_here, TEXT_IP, 53, reuse_address=True)
        await asyncio.start_server(self.http(self.web), TEXT_IP, 80, reuse_address=True)
        await asyncio.start_server(self.http(self.helper), TEXT_IP, 8080, reuse_address=True)
        for port, status in ((8081, 400), (8082, 401)):
            handler = self.http(self.collector(status))
            await asyncio.start_server(handler, TEXT_IP, port, reuse_address=True)
        (self.logdir / "serve.ready").write_text(str(os.getpid()))
        await asyncio.Event().wait()


def _ips(name: str) -> list[str] | None:
    return [TEXT_IP] if name == ZONE or name.endswith("." + ZONE) else None


class Resolver(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        try:
            query = dns.message.from_wire(data)
            name = query.question[0].name.to_text(omit_final_dot=True).lower()
        except (dns.exception.DNSException, IndexError):  # not a query: no answer
            return
        self.transport.sendto(_answer(query, _ips(name)).to_wire(), addr)


async def dns_tcp_here(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # hostile.dns_tcp answers for its own zone; this one for evil.test.
    try:
        while True:
            size = int.from_bytes(await reader.readexactly(2), "big")
            query = dns.message.from_wire(await reader.readexactly(size))
            name = query.question[0].name.to_text(omit_final_dot=True).lower()
            wire = _answer(query, _ips(name)).to_wire(max_size=65535)
            writer.write(len(wire).to_bytes(2, "big") + wire)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, OSError):
        pass
    finally:
        writer.close()


class HostileText:
    """The servers above in a started lab; ``with HostileText(lab) as h: ...``."""

    def __init__(self, lab) -> None:
        self.lab = lab
        self.logdir: Path = lab.workdir / "hostile_text"
        self.proc: subprocess.Popen | None = None
        self.added = False

    def __enter__(self) -> HostileText:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        self.logdir.mkdir(exist_ok=True)
        ready = self.logdir / "serve.ready"
        ready.unlink(missing_ok=True)
        subprocess.run(
            ["ip", "-n", self.lab.net, "addr", "add", f"{TEXT_IP}/32", "dev", "lo"], check=True
        )
        self.added = True
        log = open(self.logdir / "serve.log", "wb")  # noqa: SIM115
        env = {"PYTHONPATH": str(Path(__file__).resolve().parents[2]), "PYTHONUNBUFFERED": "1"}
        self.proc = self.lab.spawn(
            self.lab.net, [sys.executable, "-m", "tests.lab.hostile_text", "serve",
                           str(self.logdir)], env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 20
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                text = (self.logdir / "serve.log").read_text(errors="replace")
                raise RuntimeError(f"hostile_text did not start:\n{text[-3000:]}")
            time.sleep(0.05)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait(10)
        self.proc = None
        if self.added:
            subprocess.run(
                ["ip", "-n", self.lab.net, "addr", "del", f"{TEXT_IP}/32", "dev", "lo"],
                capture_output=True,
            )
            self.added = False


def main(argv: list[str]) -> None:
    role, logdir = argv
    if role != "serve":
        raise SystemExit(f"unknown role {role!r}")
    asyncio.run(Servers(Path(logdir)).run())


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except KeyboardInterrupt:
        pass
