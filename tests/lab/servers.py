"""Lab servers, run inside a lab namespace by :class:`tests.lab.Lab`.

    python -m tests.lab.servers net|isp STATE_FILE ACK_FILE

Everything is asyncio (TLS handshakes happen in the event loop, large backlogs), and
everything reads the lab's JSON state file, reloading it when it changes, so that the
catalogue of sites and the ISP resolver's censorship can change at run time. After each
(re)load, and once the listeners it asks for are bound, the ACK_FILE gets the state's version.

Role ``net`` (the internet): honest resolver 192.88.99.53 (UDP/TCP 53, DoT 853), DoH at
https://192.88.99.54/dns-query, and every site on its IPs (HTTP 80, HTTPS 443).
Role ``isp``: the ISP resolver 192.88.99.10 (UDP/TCP 53, may lie), the block-page server
192.88.99.11:80, and the on-path injector 192.88.99.12:53 (the router DNATs intercepted
plain-DNS queries there: forged answers for injected names, honest ones otherwise).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import ssl
import sys
import traceback
import urllib.parse

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

ISP_RESOLVER = "192.88.99.10"
BLOCKPAGE_IP = "192.88.99.11"
INJECTOR_IP = "192.88.99.12"
CONTROL_RESOLVER = "192.88.99.53"
DOH_IP = "192.88.99.54"

BLOCKPAGE_SENTENCE = "Access to the requested website has been blocked by judicial decision!"
BLOCKPAGE = (
    "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>Access denied</title></head>\n"
    "<body><h1>Access denied</h1>\n"
    f'<p class="error">{BLOCKPAGE_SENTENCE}</p>\n'
    "</body></html>\n"
).encode()

LARGE_SIZE = 2 * 1024 * 1024
_LARGE = (hashlib.sha256(b"lab-large").hexdigest().encode() * (LARGE_SIZE // 64 + 1))[:LARGE_SIZE]


def site_page(name: str) -> bytes:
    """The deterministic home page of a site (a few KB, unique per site)."""
    paras = []
    for i in range(24):
        h = hashlib.sha256(f"{name}/{i}".encode()).hexdigest()
        paras.append(f"<p id='p{i}'>Story {i} from {name}: {h} {h[::-1]}</p>")
    body = "\n".join(paras)
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{name} — lab news</title></head>\n<body>\n<h1>{name}</h1>\n{body}\n"
        "</body></html>\n"
    ).encode()


def page_id(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:16]


class World:
    """The lab state as last read from the state file."""

    def __init__(self, path: str):
        self.path = path
        self.stamp = None
        self.state: dict = {}
        self._ctx: dict = {}

    def poll(self) -> bool:
        st = os.stat(self.path)
        stamp = (st.st_mtime_ns, st.st_ino, st.st_size)
        if stamp == self.stamp:
            return False
        with open(self.path) as f:
            self.state = json.load(f)
        self.stamp = stamp
        return True

    @property
    def version(self) -> int:
        return self.state.get("version", 0)

    def site(self, host: str) -> dict | None:
        return self.state["sites"].get(host.lower().rstrip("."))

    def site_at(self, ip: str) -> dict | None:
        name = self.state["ip_default"].get(ip)
        return self.state["sites"].get(name) if name else None

    def context(self, cert: str, key: str) -> ssl.SSLContext:
        ctx = self._ctx.get((cert, key))
        if ctx is None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            ctx.set_alpn_protocols(["http/1.1"])
            self._ctx[(cert, key)] = ctx
        return ctx

    def site_context(self, site: dict) -> ssl.SSLContext:
        return self.context(site["certfile"], site["keyfile"])


# ---------------------------------------------------------------- DNS


def decide(world: World, name: str, view: str):
    """-> ("a", [ips]) | ("rcode", rcode) | ("drop", None)"""
    isp = world.state["isp"]
    if view in ("isp", "injector"):
        forged = isp["inject"].get(name)
        if forged:
            return ("a", [forged])
    if view == "isp":
        if isp["offline"]:
            return ("rcode", dns.rcode.SERVFAIL)
        rule = isp["dns"].get(name)
        if rule:
            action = rule["action"]
            if action == "lie":
                return ("a", [rule["address"]])
            if action == "nxdomain":
                return ("rcode", dns.rcode.NXDOMAIN)
            if action == "no_answer":
                return ("a", [])
            if action == "servfail":
                return ("rcode", dns.rcode.SERVFAIL)
            if action == "drop":
                return ("drop", None)
    ips = world.state["dns"].get(name)
    if ips is None:
        return ("rcode", dns.rcode.NXDOMAIN)
    return ("a", ips)


def dns_reply(world: World, wire: bytes, view: str) -> bytes | None:
    try:
        query = dns.message.from_wire(wire)
    except Exception:
        return None
    if not query.question or query.flags & dns.flags.QR:
        return None
    response = dns.message.make_response(query)
    response.flags |= dns.flags.RA
    question = query.question[0]
    name = question.name.to_text(omit_final_dot=True).lower()
    kind, value = decide(world, name, view)
    if kind == "drop":
        return None
    if kind == "rcode":
        response.set_rcode(value)
    elif value and question.rdtype == dns.rdatatype.A:
        response.answer.append(dns.rrset.from_text_list(question.name, 60, "IN", "A", value))
    return response.to_wire()


class DnsUdp(asyncio.DatagramProtocol):
    def __init__(self, world: World, view: str):
        self.world, self.view = world, view

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        out = dns_reply(self.world, data, self.view)
        if out is not None:
            self.transport.sendto(out, addr)


def dns_stream_handler(world: World, view: str):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        try:
            while True:
                size = int.from_bytes(await reader.readexactly(2), "big")
                out = dns_reply(world, await reader.readexactly(size), view)
                if out is not None:
                    writer.write(len(out).to_bytes(2, "big") + out)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            writer.close()

    return handle


# ---------------------------------------------------------------- HTTP


async def serve_http(reader, writer, handler):
    """A minimal HTTP/1.1 server loop (keep-alive, Content-Length bodies)."""
    try:
        while True:
            line = await reader.readline()
            if not line.strip():
                break
            try:
                method, target, version = line.decode("latin-1").split()
            except ValueError:
                break
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
            status, extra, payload = await handler(method, target, headers, body)
            keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
            reason = {200: "OK", 301: "Moved Permanently", 302: "Found", 400: "Bad Request"}.get(
                status, "Not Found"
            )
            head = [f"HTTP/1.1 {status} {reason}", "Server: lab-httpd"]
            head += [f"{k}: {v}" for k, v in extra.items()]
            head.append(f"Content-Length: {len(payload)}")
            head.append(f"Connection: {'keep-alive' if keep else 'close'}")
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("utf-8"))
            if method != "HEAD":
                for i in range(0, len(payload), 65536):
                    writer.write(payload[i : i + 65536])
                    await writer.drain()
            await writer.drain()
            if not keep:
                break
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError, ValueError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


HTML = "text/html; charset=utf-8"


def site_handler(world: World, local_ip: str, scheme: str):
    async def handle(method, target, headers, body):
        host = headers.get("host", "").lower()
        host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        site = world.site(host) or world.site_at(local_ip)
        if site is None:
            return 404, {"Content-Type": "text/plain"}, b"no such site\n"
        path = urllib.parse.urlsplit(target).path or "/"
        if scheme == "http" and site.get("https_only_redirect"):
            return 301, {"Location": f"https://{site['host']}{target}"}, b""
        page_headers = {
            "Content-Type": HTML,
            "X-Lab-Site": site["host"],
            "X-Lab-Page-Id": page_id(site["host"]),
        }
        if path == "/":
            return 200, page_headers, site_page(site["name"])
        if path == "/large":
            return 200, {"Content-Type": "application/octet-stream"}, _LARGE
        parts = path.strip("/").split("/")
        if len(parts) == 2 and parts[0] in ("redirect", "delay") and parts[1].isdigit():
            n = int(parts[1])
            if parts[0] == "redirect":
                if n > 0:
                    return 302, {"Location": f"/redirect/{n - 1}"}, b""
                return 200, page_headers, site_page(site["name"])
            await asyncio.sleep(n / 1000)
            return 200, page_headers, site_page(site["name"])
        return 404, {"Content-Type": "text/plain"}, b"not found\n"

    return handle


def doh_handler(world: World):
    async def handle(method, target, headers, body):
        url = urllib.parse.urlsplit(target)
        if url.path != "/dns-query":
            return 404, {"Content-Type": "text/plain"}, b"not found\n"
        wire = None
        if method == "GET":
            q = urllib.parse.parse_qs(url.query).get("dns")
            if q:
                try:
                    wire = base64.urlsafe_b64decode(q[0] + "=" * (-len(q[0]) % 4))
                except ValueError:
                    wire = None
        elif method == "POST":
            wire = body
        out = dns_reply(world, wire, "honest") if wire else None
        if out is None:
            return 400, {"Content-Type": "text/plain"}, b"bad dns query\n"
        return 200, {"Content-Type": "application/dns-message", "Cache-Control": "max-age=60"}, out

    return handle


async def blockpage_handler(method, target, headers, body):
    return 200, {"Content-Type": HTML}, BLOCKPAGE


# ---------------------------------------------------------------- roles


class Server:
    def __init__(self, role: str, state_path: str, ack_path: str):
        self.role = role
        self.world = World(state_path)
        self.ack_path = ack_path
        self.listeners: dict[tuple[str, int], asyncio.AbstractServer] = {}

    async def tcp(self, ip, port, cb, ssl_ctx=None):
        self.listeners[(ip, port)] = await asyncio.start_server(
            cb, ip, port, ssl=ssl_ctx, backlog=4096, reuse_address=True,
            ssl_handshake_timeout=10 if ssl_ctx else None,
        )  # fmt: skip

    async def udp_dns(self, ip, view):
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: DnsUdp(self.world, view), local_addr=(ip, 53))

    async def start_fixed(self):
        w = self.world
        if self.role == "isp":
            for ip, view in ((ISP_RESOLVER, "isp"), (INJECTOR_IP, "injector")):
                await self.udp_dns(ip, view)
                await self.tcp(ip, 53, dns_stream_handler(w, view))
            await self.tcp(BLOCKPAGE_IP, 80, lambda r, wr: serve_http(r, wr, blockpage_handler))
        else:
            await self.udp_dns(CONTROL_RESOLVER, "honest")
            await self.tcp(CONTROL_RESOLVER, 53, dns_stream_handler(w, "honest"))
            dot = w.context(*w.state["dot_cert"])
            await self.tcp(CONTROL_RESOLVER, 853, dns_stream_handler(w, "honest"), dot)
            doh = w.context(*w.state["doh_cert"])
            h = doh_handler(w)
            await self.tcp(DOH_IP, 443, lambda r, wr: serve_http(r, wr, h), doh)

    def https_context(self, ip: str) -> ssl.SSLContext:
        w = self.world
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*w.state["fallback_cert"])
        ctx.set_alpn_protocols(["http/1.1"])

        def pick(sslobj, server_name, _ctx):
            site = (w.site(server_name) if server_name else None) or w.site_at(ip)
            if site is not None:
                sslobj.context = w.site_context(site)

        ctx.sni_callback = pick
        return ctx

    async def sync_sites(self):
        if self.role != "net":
            return
        wanted = set(self.world.state["ip_default"])
        for ip in wanted:
            if (ip, 80) not in self.listeners:
                h80 = site_handler(self.world, ip, "http")
                h443 = site_handler(self.world, ip, "https")
                await self.tcp(ip, 80, lambda r, wr, h=h80: serve_http(r, wr, h))
                await self.tcp(
                    ip, 443, lambda r, wr, h=h443: serve_http(r, wr, h), self.https_context(ip)
                )
        for key in [k for k in self.listeners if k[1] in (80, 443)]:
            if key[0] not in wanted and key[0] != DOH_IP:
                self.listeners.pop(key).close()

    def ack(self):
        tmp = self.ack_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"version": self.world.version, "pid": os.getpid()}, f)
        os.replace(tmp, self.ack_path)

    async def run(self):
        self.world.poll()
        await self.start_fixed()
        await self.sync_sites()
        self.ack()
        while True:
            await asyncio.sleep(0.02)
            try:
                changed = self.world.poll()
            except (OSError, ValueError):
                continue  # state file being replaced; try again
            if changed:
                await self.sync_sites()
                self.ack()


def main(argv: list[str]) -> None:
    role, state_path, ack_path = argv
    try:
        asyncio.run(Server(role, state_path, ack_path).run())
    except KeyboardInterrupt:
        pass
    except Exception:
        traceback.print_exc()
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
