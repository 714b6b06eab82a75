"""Hostile servers and canaries for the lab: what an attacker on the probe's side would run.

    python -m tests.lab.hostile serve CONFIG_JSON          (in net, at HOSTILE_IP)
    python -m tests.lab.hostile canary LOG READY ADDR:PORT...  (in the vantage)

:class:`Hostile` (a context manager over a started :class:`tests.lab.Lab`) adds HOSTILE_IP to
the ``net`` namespace, issues its certificates from the lab CA, starts the servers, and puts
canary listeners in the vantage on loopback and private addresses (which it adds to the
vantage's ``lo``). A canary logs every connection it accepts: the probe must never connect to
one. ``close()`` undoes it all.

At HOSTILE_IP (192.88.99.251, outside the outlet range the lab allocates from):

* DNS (UDP and TCP 53), zone ``hostile.test``: ``web``/``echo`` -> HOSTILE_IP; ``private`` ->
  10.0.0.1; ``huge`` -> 256 A and 2,000 AAAA records (TC over UDP, whole over TCP);
  ``wrongid`` -> a reply with a wrong ID, then the right one; ``onlywrongid`` -> two replies
  with wrong IDs; ``garbage`` -> a datagram that is not DNS, then the right reply; ``raced``
  -> an injector's forged reply (right ID, A = the block-page address) at once, then the
  genuine one 20 ms later; ``stray`` -> HOSTILE_IP, after an A rrset owned by another name
  (the block-page address); ``chain`` -> CNAME ``web``, beside an unrelated CNAME chain to the
  block-page address (AAAA: only another name's record). Other names: NXDOMAIN.
* HTTP (80, and HTTPS 443): ``/redirect?to=URL`` answers 302 to URL (verbatim); ``/echo``
  says the client's address in the title, the body and an ``X-Your-IP`` header; else a page.
* A test helper (HTTP 8080, HTTPS 8443), by path: ``/echo`` a valid answer that echoes the
  client's address (and refuses more than 64 endpoints, as helpers do); ``/endless`` an
  endless body (bytes sent are logged to ``endless.log`` when the client gives up);
  ``/gzipbomb`` 256 MiB of zeros gzipped; ``/drip`` one byte every 200 ms; ``/notjson``;
  ``/types/CASE`` an answer with wrong types (see :data:`WRONG_TYPES`).
* DoH (HTTPS): 9441 with a certificate for another name; 9443 by path ``/endless/``,
  ``/garbage/``, ``/drip/``, ``/big/`` + ``dns-query``.
* DoT: 8531 a certificate for another name; 8532 endless; 8533 garbage; 8534 slow drip.
* Canaries (in net) on HOSTILE_IP:22 and :25: a redirect must never reach them.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.parse
import zlib
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset

HOSTILE_IP = "192.88.99.251"
BLOCKPAGE_IP = "192.88.99.11"
ZONE = "hostile.test"
#: Addresses in the vantage the probe must never connect to (added to its lo).
VANTAGE_PRIVATE = ("10.0.0.1", "192.168.1.1")
VANTAGE_CANARIES = (
    "127.0.0.1:80", "127.0.0.1:443", "127.0.0.1:22", "127.0.0.1:8080",
    "[::1]:80", "[::1]:443",
    "10.0.0.1:80", "10.0.0.1:443",
    "192.168.1.1:80", "192.168.1.1:443", "192.168.1.1:21",
)  # fmt: skip
NET_CANARIES = (f"{HOSTILE_IP}:22", f"{HOSTILE_IP}:25")
ENDLESS_LIMIT = 1 << 30  # the "endless" body stops at 1 GiB, so a broken client cannot hang
HUGE_A = [f"192.88.99.{i}" for i in [*range(100, 256), *range(0, 100)]]
HUGE_AAAA = [f"2a0e:fff0:1::{i:x}" for i in range(1, 2001)]

#: Helper answers with wrong types: case -> the JSON answer.
_VALID = {
    "tcp_connect": {},
    "tls_handshake": {},
    "http_request": {
        "body_length": 10,
        "discovered_h3_endpoint": "",
        "failure": None,
        "title": "t",
        "headers": {"Server": "x"},
        "status_code": 200,
    },
    "dns": {"failure": None, "addrs": [HOSTILE_IP]},
    "ip_info": {HOSTILE_IP: {"asn": 1, "flags": 2}},
}


def _with(path: tuple[str, ...], value: object) -> dict:
    answer = json.loads(json.dumps(_VALID))
    node = answer
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return answer


WRONG_TYPES = {
    "addrs-number": _with(("dns", "addrs"), 5),
    "ipinfo-string": _with(("ip_info", HOSTILE_IP), "AS1"),
    "headers-number": _with(("http_request", "headers"), 5),
    "title-number": _with(("http_request", "title"), 42),
    "status-string": _with(("http_request", "status_code"), "200"),
    "nested-garbage": _with(("tcp_connect",), {"1.2.3.4:80": [[[{"status": [True]}]]]}),
    "not-an-object": [1, 2, 3],
}


# ---------------------------------------------------------------- DNS


def _answer(query: dns.message.Message, ips: list[str] | None) -> dns.message.Message:
    reply = dns.message.make_response(query)
    reply.flags |= dns.flags.RA
    question = query.question[0]
    if ips is None:
        reply.set_rcode(dns.rcode.NXDOMAIN)
        return reply
    kind = "AAAA" if question.rdtype == dns.rdatatype.AAAA else "A"
    wanted = [ip for ip in ips if (":" in ip) == (kind == "AAAA")]
    if wanted:
        reply.answer.append(dns.rrset.from_text_list(question.name, 60, "IN", kind, wanted))
    return reply


def _crafted(query: dns.message.Message, name: str) -> dns.message.Message | None:
    """Answers holding records nobody asked for: ``stray`` puts an rrset owned by another
    name (the block-page address) before its own; ``chain`` is a CNAME to ``web`` beside an
    unrelated CNAME chain ending at the block-page address. Their AAAA answers hold only
    another name's records."""
    if name not in (f"stray.{ZONE}", f"chain.{ZONE}"):
        return None
    reply = dns.message.make_response(query)
    reply.flags |= dns.flags.RA
    question = query.question[0]

    def add(owner: str, kind: str, values: list[str]) -> None:
        rrset = dns.rrset.from_text_list(dns.name.from_text(owner), 60, "IN", kind, values)
        reply.answer.append(rrset)

    if question.rdtype == dns.rdatatype.AAAA:
        add("www.azattyk.org", "AAAA", ["2a0e:fff0:1::99"])
    elif name == f"stray.{ZONE}":
        add("www.azattyk.org", "A", [BLOCKPAGE_IP])
        add(name, "A", [HOSTILE_IP])
    else:
        add(f"trap.{ZONE}", "CNAME", [f"blockpage.{ZONE}."])
        add(f"blockpage.{ZONE}", "A", [BLOCKPAGE_IP])
        add(name, "CNAME", [f"web.{ZONE}."])
        add(f"web.{ZONE}", "A", [HOSTILE_IP])
    return reply


def _honest(name: str) -> list[str] | None:
    if name in (f"web.{ZONE}", f"echo.{ZONE}", f"wrongid.{ZONE}", f"garbage.{ZONE}",
                f"raced.{ZONE}"):  # fmt: skip
        return [HOSTILE_IP]
    if name == f"private.{ZONE}":
        return ["10.0.0.1"]
    if name == f"huge.{ZONE}":
        return HUGE_A + HUGE_AAAA
    if name == f"onlywrongid.{ZONE}":
        return [HOSTILE_IP]
    return None


class HostileDNS(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        try:
            query = dns.message.from_wire(data)
            name = query.question[0].name.to_text(omit_final_dot=True).lower()
        except Exception:
            return
        asyncio.ensure_future(self.answer(query, name, addr))

    def send(self, message: dns.message.Message, addr, *, wrong_id: bool = False) -> None:
        wire = bytearray(message.to_wire(max_size=65535))
        if wrong_id:
            wire[0:2] = ((message.id ^ 0x5A5A) & 0xFFFF).to_bytes(2, "big")
        self.transport.sendto(bytes(wire), addr)

    async def answer(self, query, name, addr):
        if name == f"huge.{ZONE}":
            reply = dns.message.make_response(query)
            reply.flags |= dns.flags.TC
            self.send(reply, addr)
            return
        if name == f"wrongid.{ZONE}":
            self.send(_answer(query, [BLOCKPAGE_IP]), addr, wrong_id=True)
            await asyncio.sleep(0.05)
        elif name == f"onlywrongid.{ZONE}":
            for _ in range(2):
                self.send(_answer(query, [BLOCKPAGE_IP]), addr, wrong_id=True)
                await asyncio.sleep(0.05)
            return
        elif name == f"garbage.{ZONE}":
            self.transport.sendto(query.id.to_bytes(2, "big") + b"\xff" * 9, addr)
            await asyncio.sleep(0.05)
        elif name == f"raced.{ZONE}":
            self.send(_answer(query, [BLOCKPAGE_IP]), addr)  # the injector is on the path
            await asyncio.sleep(0.02)  # well within the probe's 500 ms window
        self.send(_crafted(query, name) or _answer(query, _honest(name)), addr)


async def dns_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            size = int.from_bytes(await reader.readexactly(2), "big")
            query = dns.message.from_wire(await reader.readexactly(size))
            name = query.question[0].name.to_text(omit_final_dot=True).lower()
            wire = (_crafted(query, name) or _answer(query, _honest(name))).to_wire(max_size=65535)
            writer.write(len(wire).to_bytes(2, "big") + wire)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, OSError, ssl.SSLError):
        pass
    finally:
        writer.close()


def dot_handler(kind: str):
    """DoT servers that misbehave after the handshake."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readexactly(2)
            if kind == "endless":
                writer.write(b"\xff\xff")
                for _ in range(ENDLESS_LIMIT // 65536):
                    if writer.is_closing():
                        break
                    writer.write(b"\x00" * 65536)
                    await writer.drain()
                    await asyncio.sleep(0)  # see the helper's /endless
            elif kind == "garbage":
                writer.write(b"\x00\x20" + os.urandom(32))
                await writer.drain()
                await asyncio.sleep(30)
            elif kind == "drip":  # a 256-byte message, one byte every 300 ms
                for byte in b"\x01" + b"\x00" * 999:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.3)
        except (asyncio.IncompleteReadError, ConnectionError, OSError, ssl.SSLError):
            pass
        finally:
            writer.close()

    return handle


# ---------------------------------------------------------------- HTTP


async def read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes]:
    line = await reader.readline()
    method, target, _version = line.decode("latin-1").split()
    headers: dict[str, str] = {}
    while True:
        h = await reader.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    body = b""
    if headers.get("content-length"):
        body = await reader.readexactly(int(headers["content-length"]))
    return method, target, headers, body


def head(status: int, headers: dict[str, str]) -> bytes:
    lines = [
        f"HTTP/1.1 {status} X",
        "Connection: close",
        *[f"{k}: {v}" for k, v in headers.items()],
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def simple(status: int, headers: dict[str, str], body: bytes) -> bytes:
    return head(status, {**headers, "Content-Length": str(len(body))}) + body


class Servers:
    def __init__(self, config: dict):
        self.config = config
        self.logdir = Path(config["logdir"])
        self.bomb = b""

    def log(self, name: str, line: str) -> None:
        with open(self.logdir / name, "a") as f:
            f.write(line + "\n")

    def tls(self, cert: list[str]) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*cert)
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def http(self, handler):
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            peer = writer.get_extra_info("peername")[0]
            try:
                request = await read_request(reader)
                await handler(peer, *request, writer)
            except (ConnectionError, OSError, ssl.SSLError, ValueError):
                pass
            except asyncio.IncompleteReadError:
                pass
            finally:
                writer.close()

        return handle

    async def web(self, peer, method, target, headers, body, writer) -> None:
        url = urllib.parse.urlsplit(target)
        if url.path == "/redirect":
            to = urllib.parse.parse_qs(url.query).get("to", ["/"])[0]
            writer.write(simple(302, {"Location": to}, b""))
        elif url.path == "/echo":
            page = (
                f"<html><head><title>Blocked. Your IP address is {peer}</title></head>"
                f"<body><p>Access denied for {peer}.</p></body></html>"
            ).encode()
            writer.write(simple(200, {"Content-Type": "text/html", "X-Your-IP": peer}, page))
        else:
            writer.write(simple(200, {"Content-Type": "text/html"}, b"<title>hostile</title>"))
        await writer.drain()

    async def helper(self, peer, method, target, headers, body, writer) -> None:
        path = urllib.parse.urlsplit(target).path
        json_type = {"Content-Type": "application/json"}
        if path == "/echo":
            request = json.loads(body)
            endpoints = request.get("tcp_connect") or []
            if len(endpoints) > 64:
                writer.write(simple(400, {}, b"too many endpoints"))
            else:
                answer = json.loads(json.dumps(_VALID))
                answer["tcp_connect"] = {e: {"status": True, "failure": None} for e in endpoints}
                answer["http_request"]["title"] = f"Seen from {peer}"
                answer["http_request"]["headers"] = {"X-Client": peer}
                writer.write(simple(200, json_type, json.dumps(answer).encode()))
        elif path == "/endless":
            writer.write(head(200, json_type) + b'{"tcp_connect": {"')
            sent = 0
            try:
                # Once the peer is gone asyncio discards writes and drain() returns without
                # yielding, so connection_lost() could never run: yield, and check the close,
                # or this would count 1 GiB that nobody read, with every other server here
                # stalled meanwhile (the probe's handshakes with them timed out).
                while sent < ENDLESS_LIMIT and not writer.is_closing():
                    writer.write(b"a" * 65536)
                    await writer.drain()
                    await asyncio.sleep(0)
                    sent += 65536
            finally:
                self.log("endless.log", str(sent))
            return
        elif path == "/gzipbomb":
            if not self.bomb:
                squeeze = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
                zeros = b"\0" * (1 << 20)
                self.bomb = b"".join(squeeze.compress(zeros) for _ in range(256))
                self.bomb += squeeze.flush()
            writer.write(simple(200, {**json_type, "Content-Encoding": "gzip"}, self.bomb))
        elif path == "/drip":
            writer.write(head(200, {**json_type, "Content-Length": "100000"}))
            for _ in range(100000):
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(0.2)
        elif path == "/notjson":
            writer.write(simple(200, json_type, b"\x89PNG\r\n\x1a\n not json at all"))
        elif path.startswith("/types/"):
            answer = WRONG_TYPES[path.removeprefix("/types/")]
            writer.write(simple(200, json_type, json.dumps(answer).encode()))
        else:
            writer.write(simple(404, {}, b""))
        await writer.drain()

    async def doh(self, peer, method, target, headers, body, writer) -> None:
        path = urllib.parse.urlsplit(target).path
        dns_type = {"Content-Type": "application/dns-message"}
        if path == "/dns-query":  # the wrong-certificate server answers honestly
            query = dns.message.from_wire(body)
            name = query.question[0].name.to_text(omit_final_dot=True).lower()
            wire = _answer(query, _honest(name)).to_wire()
            writer.write(simple(200, dns_type, wire))
        elif path == "/endless/dns-query":
            writer.write(head(200, dns_type))
            for _ in range(ENDLESS_LIMIT // 65536):
                if writer.is_closing():
                    break
                writer.write(b"\0" * 65536)
                await writer.drain()
                await asyncio.sleep(0)  # see the helper's /endless
        elif path == "/garbage/dns-query":
            writer.write(simple(200, dns_type, b"<html>not dns</html>"))
        elif path == "/big/dns-query":
            writer.write(simple(200, dns_type, b"\0" * 100_000))
        elif path == "/drip/dns-query":
            writer.write(head(200, {**dns_type, "Content-Length": "1000"}))
            for _ in range(1000):
                writer.write(b"\0")
                await writer.drain()
                await asyncio.sleep(0.3)
        else:
            writer.write(simple(404, {}, b""))
        await writer.drain()

    async def run(self) -> None:
        ip = HOSTILE_IP
        good, wrong = self.config["cert"], self.config["wrong_cert"]
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(HostileDNS, local_addr=(ip, 53))
        listeners = [
            (53, dns_tcp, None),
            (80, self.http(self.web), None),
            (443, self.http(self.web), good),
            (8080, self.http(self.helper), None),
            (8443, self.http(self.helper), good),
            (9441, self.http(self.doh), wrong),
            (9443, self.http(self.doh), good),
            (8531, dns_tcp, wrong),
            (8532, dot_handler("endless"), good),
            (8533, dot_handler("garbage"), good),
            (8534, dot_handler("drip"), good),
        ]
        for port, handler, cert in listeners:
            await asyncio.start_server(
                handler, ip, port, ssl=self.tls(cert) if cert else None, reuse_address=True
            )
        for spec in NET_CANARIES:
            await canary_listener(spec, self.logdir / "canary.log")
        (self.logdir / "serve.ready").write_text(str(os.getpid()))
        await asyncio.Event().wait()


# ---------------------------------------------------------------- canaries


def _split(spec: str) -> tuple[str, int]:
    host, _, port = spec.rpartition(":")
    return host.strip("[]"), int(port)


async def canary_listener(spec: str, log: Path) -> asyncio.AbstractServer:
    host, port = _split(spec)

    async def caught(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        first = b""
        try:
            first = await asyncio.wait_for(reader.read(200), 1)
        except (TimeoutError, ConnectionError, OSError):
            pass
        with open(log, "a") as f:
            f.write(
                json.dumps({"canary": spec, "peer": str(peer), "sent": first.decode("latin-1")})
            )
            f.write("\n")
        writer.close()

    return await asyncio.start_server(caught, host, port, reuse_address=True)


async def canaries(log: str, ready: str, specs: list[str]) -> None:
    for spec in specs:
        await canary_listener(spec, Path(log))
    Path(ready).write_text(str(os.getpid()))
    await asyncio.Event().wait()


# ---------------------------------------------------------------- the lab side


class Hostile:
    """The hostile servers and canaries in a started lab; ``with Hostile(lab) as h: ...``."""

    IP = HOSTILE_IP

    def __init__(self, lab) -> None:
        self.lab = lab
        self.logdir: Path = lab.workdir / "hostile"
        self.procs: list[subprocess.Popen] = []
        self._undo: list[list[str]] = []

    def __enter__(self) -> Hostile:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        lab = self.lab
        self.logdir.mkdir(exist_ok=True)
        self._addr(lab.net, HOSTILE_IP)
        for ip in VANTAGE_PRIVATE:
            self._addr(lab.vantage, ip)
        config = {
            "logdir": str(self.logdir),
            "cert": lab._leaf("hostile", [HOSTILE_IP, f"web.{ZONE}", f"echo.{ZONE}"]),
            "wrong_cert": lab._leaf("hostile-wrong", ["wrong-name.lab.invalid"]),
        }
        cfg = self.logdir / "config.json"
        cfg.write_text(json.dumps(config))
        self._spawn(lab.net, ["serve", str(cfg)], self.logdir / "serve.ready")
        ready = self.logdir / "canary.ready"
        self._spawn(
            lab.vantage,
            ["canary", str(self.canary_log), str(ready), *VANTAGE_CANARIES],
            ready,
        )

    def _addr(self, ns: str, ip: str) -> None:
        subprocess.run(["ip", "-n", ns, "addr", "add", f"{ip}/32", "dev", "lo"], check=True)
        self._undo.append(["ip", "-n", ns, "addr", "del", f"{ip}/32", "dev", "lo"])

    def _spawn(self, ns: str, args: list[str], ready: Path) -> None:
        # A ready file left by an earlier Hostile in this lab would say ready at once.
        ready.unlink(missing_ok=True)
        log = open(self.logdir / f"{args[0]}.log", "wb")  # noqa: SIM115
        env = {"PYTHONPATH": str(Path(__file__).resolve().parents[2]), "PYTHONUNBUFFERED": "1"}
        proc = self.lab.spawn(
            ns, [sys.executable, "-m", "tests.lab.hostile", *args], env=env, stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        self.procs.append(proc)
        deadline = time.monotonic() + 20
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                text = (self.logdir / f"{args[0]}.log").read_text(errors="replace")
                raise RuntimeError(f"hostile {args[0]} did not start:\n{text[-3000:]}")
            time.sleep(0.05)

    @property
    def canary_log(self) -> Path:
        return self.logdir / "canary.log"

    def caught(self) -> list[dict]:
        """What the canaries caught (vantage and net), and forget it."""
        if not self.canary_log.exists():
            return []
        lines = self.canary_log.read_text().splitlines()
        self.canary_log.unlink()
        return [json.loads(line) for line in lines]

    def endless_sent(self) -> list[int]:
        """Bytes the endless helper sent before each client gave up, and forget them."""
        path = self.logdir / "endless.log"
        if not path.exists():
            return []
        sent = [int(x) for x in path.read_text().split()]
        path.unlink()
        return sent

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                proc.wait(10)
        self.procs.clear()
        for argv in reversed(self._undo):
            subprocess.run(argv, capture_output=True)
        self._undo.clear()


def main(argv: list[str]) -> None:
    role, *rest = argv
    if role == "serve":
        config = json.loads(Path(rest[0]).read_text())
        asyncio.run(Servers(config).run())
    elif role == "canary":
        log, ready, *specs = rest
        asyncio.run(canaries(log, ready, specs))
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except KeyboardInterrupt:
        pass
