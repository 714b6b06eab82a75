"""Lab servers, run inside a lab namespace by :class:`tests.lab.Lab`.

    python -m tests.lab.servers net|isp STATE_FILE ACK_FILE

Everything is asyncio (TLS handshakes happen in the event loop, large backlogs), and
everything reads the lab's JSON state file, reloading it when it changes, so that the
catalogue of sites and the ISP resolver's censorship can change at run time. After each
(re)load, and once the listeners it asks for are bound, the ACK_FILE gets the state's version.

Role ``net`` (the internet): honest resolver 192.88.99.53 (UDP/TCP 53, DoT 853), DoH at
https://192.88.99.54/dns-query, and every site on its IPs (HTTP 80, HTTPS 443), shaped by the
site's options (see the lab's module docstring).
Role ``isp``: the ISP resolver 192.88.99.10 (UDP/TCP 53, may lie), the fingerprinted block-page
server 192.88.99.11:80, the on-path injector 192.88.99.12:53 (the router DNATs intercepted
plain-DNS queries there: forged answers for injected names, honest ones otherwise), the
unfingerprinted notice server 192.88.99.13 (HTTP 80, and HTTPS 443 as notice.isp.kg), the
redirector 192.88.99.14:80 (302 to https://notice.isp.kg/) and the SNI proxy 192.88.99.15:443.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import gzip
import hashlib
import http
import ipaddress
import json
import os
import socket
import ssl
import struct
import sys
import traceback
import urllib.parse
import zlib
from dataclasses import dataclass, field

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
NOTICE_IP = "192.88.99.13"
NOTICE_HOST = "notice.isp.kg"
REDIRECT_IP = "192.88.99.14"
SNI_PROXY_IP = "192.88.99.15"

BLOCKPAGE_SENTENCE = "Access to the requested website has been blocked by judicial decision!"
BLOCKPAGE = (
    "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>Access denied</title></head>\n"
    "<body><h1>Access denied</h1>\n"
    f'<p class="error">{BLOCKPAGE_SENTENCE}</p>\n'
    "</body></html>\n"
).encode()

LARGE_SIZE = 2 * 1024 * 1024
_LARGE = (hashlib.sha256(b"lab-large").hexdigest().encode() * (LARGE_SIZE // 64 + 1))[:LARGE_SIZE]


#: An ISP's own notice, served by stock nginx: no fingerprint knows it (a sixth of a site page).
NOTICE_TITLE = "Доступ к сайту закрыт"
NOTICE = (
    '<!DOCTYPE html>\n<html lang="ru">\n<head>\n<meta charset="utf-8">\n'
    f"<title>{NOTICE_TITLE}</title>\n</head>\n<body>\n<h2>{NOTICE_TITLE}</h2>\n"
    "<p>Доступ к этому сайту закрыт по решению уполномоченного государственного органа.</p>\n"
    "<p>Сиз сураган ресурска кирүү чектелген.</p>\n"
    "<p>По вопросам обращайтесь в службу поддержки абонентов.<br>\n"
    "Толук маалымат алуу үчүн колдоо кызматына кайрылыңыз.</p>\n"
    "<hr>\n<p><small>Служба поддержки: 0 800 000 000</small></p>\n"
    "</body>\n</html>\n"
).encode()

#: The body stock nginx sends with a 302.
NGINX_302 = (
    b"<html>\r\n<head><title>302 Found</title></head>\r\n<body>\r\n"
    b"<center><h1>302 Found</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)

#: A CDN's bot check, as shown to a visitor it does not trust.
CHALLENGE = (
    b'<!DOCTYPE html><html lang="en-US"><head><title>Just a moment...</title>'
    b'<meta http-equiv="Content-Type" content="text/html; charset=UTF-8">'
    b'<meta name="robots" content="noindex,nofollow"></head><body>'
    b'<div class="main-wrapper" role="main"><div class="main-content">'
    b"<noscript><div>Enable JavaScript and cookies to continue</div></noscript>"
    b"</div></div></body></html>"
)


def site_title(name: str) -> str:
    return f"{name} — lab news"


def site_page(name: str, titled: bool = True, ticker: str = "") -> bytes:
    """The deterministic home page of a site (a few KB, unique per site); ``ticker`` is put
    before ``</body>``."""
    paras = []
    for i in range(24):
        h = hashlib.sha256(f"{name}/{i}".encode()).hexdigest()
        paras.append(f"<p id='p{i}'>Story {i} from {name}: {h} {h[::-1]}</p>")
    body = "\n".join(paras)
    title = f"<title>{site_title(name)}</title>" if titled else ""
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'>{title}</head>\n"
        f"<body>\n<h1>{name}</h1>\n{body}\n{ticker}</body></html>\n"
    ).encode()


def cyrillic_title(name: str) -> str:
    return f"Новости Кыргызстана: {name}"


def cyrillic_page(name: str, meta_charset: str | None = None) -> str:
    """A Russian-language page (text; the caller encodes it), with a ``<meta charset>`` if
    ``meta_charset`` is given."""
    meta = f'<meta charset="{meta_charset}">' if meta_charset else ""
    paras = []
    for i in range(24):
        h = hashlib.sha256(f"{name}/{i}".encode()).hexdigest()
        paras.append(f"<p>Новость {i} с сайта {name}: парламент обсудил поправки, {h}</p>")
    body = "\n".join(paras)
    return (
        f"<!DOCTYPE html>\n<html><head>{meta}<title>{cyrillic_title(name)}</title></head>\n"
        f"<body>\n<h1>Главные новости</h1>\n{body}\n</body></html>\n"
    )


def page_id(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:16]


class World:
    """The lab state as last read from the state file."""

    def __init__(self, path: str):
        self.path = path
        self.stamp = None
        self.state: dict = {}
        self._ctx: dict = {}
        self._counts: dict[str, int] = {}

    def count(self, host: str) -> int:
        """How many times this was asked before for host (0 the first time)."""
        n = self._counts.get(host, 0)
        self._counts[host] = n + 1
        return n

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


@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    peer: str  # the client's address

    def accepts(self, coding: str) -> bool:
        offered = self.headers.get("accept-encoding", "").lower().split(",")
        return coding in {c.split(";")[0].strip() for c in offered}


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    server: str = "lab-httpd"
    #: 1xx responses sent before this one: (status, headers)
    interim: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    chunked: bool = False  # Transfer-Encoding: chunked (HTTP/1.1 clients only)


CHUNK = 1000  # bytes per chunk of a chunked body: several chunks for every page


def _head(status: int, headers: list[str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


async def serve_http(reader, writer, handler):
    """A minimal HTTP/1.1 server loop (keep-alive, Content-Length request bodies); responses
    may be preceded by 1xx responses and sent chunked (see :class:`Response`)."""
    peer = (writer.get_extra_info("peername") or ("", 0))[0]
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
            resp = await handler(Request(method, target, version, headers, body, peer))
            keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
            for status, extra in resp.interim if version == "HTTP/1.1" else ():
                writer.write(_head(status, [f"{k}: {v}" for k, v in extra.items()]))
            head = [f"Server: {resp.server}", f"Date: {email.utils.formatdate(usegmt=True)}"]
            head += [f"{k}: {v}" for k, v in resp.headers.items()]
            chunked = resp.chunked and version == "HTTP/1.1"
            if chunked:
                head.append("Transfer-Encoding: chunked")
            else:
                head.append(f"Content-Length: {len(resp.body)}")
            head.append(f"Connection: {'keep-alive' if keep else 'close'}")
            writer.write(_head(resp.status, head))
            if method != "HEAD":
                payload = resp.body
                if chunked:
                    payload = (
                        b"".join(
                            f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
                            for piece in (
                                payload[i : i + CHUNK] for i in range(0, len(payload), CHUNK)
                            )
                        )
                        + b"0\r\n\r\n"
                    )
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
#: The ISP's customers (the vantage): anyone else is "outside" for a CDN's bot check.
CUSTOMER_NET = ipaddress.ip_network("192.88.99.0/29")


def decoded_path(target: str) -> str:
    """The request target's path as text: percent-escapes and raw UTF-8 bytes both decoded."""
    raw = urllib.parse.urlsplit(target).path or "/"
    return urllib.parse.unquote_to_bytes(raw.encode("latin-1")).decode("utf-8", "replace")


def _ticker(size: int) -> str:
    """A news ticker of exactly ``size`` bytes (empty when size is too small)."""
    shell = "<div class='ticker'><!--  --></div>\n"
    if size <= len(shell):
        return ""
    filler = hashlib.sha256(str(size).encode()).hexdigest() * (size // 64 + 1)
    return f"<div class='ticker'><!-- {filler[: size - len(shell)]} --></div>\n"


def page_response(world: World, site: dict, req: Request) -> Response:
    """The site's page, shaped by the site's options (see the lab's module docstring)."""
    nth = world.count(site["host"])  # the how-many-th page request for this site
    charset = site.get("charset")
    if charset:
        in_meta = site.get("charset_in") == "meta"
        body = cyrillic_page(site["name"], charset if in_meta else None).encode(charset)
        headers = {"Content-Type": "text/html" if in_meta else f"text/html; charset={charset}"}
    else:
        titled = not site.get("untitled")
        body = site_page(site["name"], titled=titled)
        jitter = site.get("length_jitter") or 0.0
        if jitter and nth % 2:  # every other page has a longer ticker: N(1-j), N(1+j)
            longer = round(len(body) * (1 + jitter) / (1 - jitter))
            body = site_page(site["name"], titled=titled, ticker=_ticker(longer - len(body)))
        headers = {"Content-Type": HTML}
    if not site.get("plain_headers"):
        headers |= {"X-Lab-Site": site["host"], "X-Lab-Page-Id": page_id(site["host"])}
    if site.get("varying_headers"):  # consecutive pages never share a non-standard header
        if nth % 2:
            headers["X-Request-Id"] = os.urandom(16).hex()
        else:
            headers |= {"X-Cache": ("HIT", "MISS")[nth // 2 % 2], "X-Cache-Hits": str(nth)}
    if site.get("echo_ip"):  # as "what is my IP" widgets and some block pages do
        headers["X-Your-IP"] = req.peer
        body = body.replace(b"</body>", f"<p>Your IP address: {req.peer}</p>\n</body>".encode())
    coding = site.get("content_encoding")
    if coding and req.accepts(coding.split("-")[0]):
        headers["Content-Encoding"] = coding.split("-")[0]
        if coding == "gzip":
            body = gzip.compress(body)
        elif coding == "deflate":
            body = zlib.compress(body)
        else:  # deflate-raw: a raw DEFLATE stream labelled "deflate", as some servers send
            squeeze = zlib.compressobj(wbits=-zlib.MAX_WBITS)
            body = squeeze.compress(body) + squeeze.flush()
    interim = []
    if site.get("interim") == 103:
        interim = [(103, {"Link": "</static/lab.css>; rel=preload; as=style"})]
    elif site.get("interim") == 100:
        interim = [(100, {})]
    server = "nginx" if site.get("plain_headers") else "lab-httpd"
    return Response(200, headers, body, server, interim, bool(site.get("chunked")))


def challenge_response() -> Response:
    headers = {"Content-Type": "text/html; charset=UTF-8", "Cache-Control": "no-cache",
               "cf-mitigated": "challenge", "CF-RAY": f"{os.urandom(8).hex()}-FRA"}  # fmt: skip
    return Response(403, headers, CHALLENGE, server="cloudflare")


def site_handler(world: World, local_ip: str, scheme: str):
    async def handle(req: Request) -> Response:
        host = req.headers.get("host", "").lower()
        host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        site = world.site(host) or world.site_at(local_ip)
        if site is None:
            return Response(404, {"Content-Type": "text/plain"}, b"no such site\n")
        path = decoded_path(req.target)
        if scheme == "http" and site.get("https_only_redirect"):
            return Response(301, {"Location": f"https://{site['host']}{req.target}"})
        if site.get("cdn_challenge") and ipaddress.ip_address(req.peer) not in CUSTOMER_NET:
            return challenge_response()
        redirect = (site.get("redirects") or {}).get(path)
        if redirect:
            return Response(redirect[0], {"Location": redirect[1]})
        if path == "/" or path in (site.get("pages") or ()):
            return page_response(world, site, req)
        if path == "/large":
            return Response(200, {"Content-Type": "application/octet-stream"}, _LARGE)
        parts = path.strip("/").split("/")
        if len(parts) == 2 and parts[0] in ("redirect", "delay") and parts[1].isdigit():
            n = int(parts[1])
            if parts[0] == "redirect" and n > 0:
                return Response(302, {"Location": f"/redirect/{n - 1}"})
            if parts[0] == "delay":
                await asyncio.sleep(n / 1000)
            return page_response(world, site, req)
        return Response(404, {"Content-Type": "text/plain"}, b"not found\n")

    return handle


def doh_handler(world: World):
    async def handle(req: Request) -> Response:
        url = urllib.parse.urlsplit(req.target)
        if url.path != "/dns-query":
            return Response(404, {"Content-Type": "text/plain"}, b"not found\n")
        wire = None
        if req.method == "GET":
            q = urllib.parse.parse_qs(url.query).get("dns")
            if q:
                try:
                    wire = base64.urlsafe_b64decode(q[0] + "=" * (-len(q[0]) % 4))
                except ValueError:
                    wire = None
        elif req.method == "POST":
            wire = req.body
        out = dns_reply(world, wire, "honest") if wire else None
        if out is None:
            return Response(400, {"Content-Type": "text/plain"}, b"bad dns query\n")
        headers = {"Content-Type": "application/dns-message", "Cache-Control": "max-age=60"}
        return Response(200, headers, out)

    return handle


async def blockpage_handler(req: Request) -> Response:
    return Response(200, {"Content-Type": HTML}, BLOCKPAGE)


async def notice_handler(req: Request) -> Response:
    return Response(200, {"Content-Type": HTML}, NOTICE, server="nginx")


async def redirect_handler(req: Request) -> Response:
    host = req.headers.get("host", "")
    location = f"https://{NOTICE_HOST}/?site={urllib.parse.quote(host, safe='')}"
    return Response(302, {"Content-Type": "text/html", "Location": location}, NGINX_302, "nginx")


# ---------------------------------------------------------------- the ISP's SNI proxy


def client_hello_sni(hello: bytes) -> str | None:
    """The server_name of a TLS ClientHello handshake message (type, length, body), or None."""
    try:
        if hello[0] != 1:
            return None
        i = 4 + 2 + 32  # header, legacy_version, random
        i += 1 + hello[i]  # session id
        i += 2 + int.from_bytes(hello[i : i + 2], "big")  # cipher suites
        i += 1 + hello[i]  # compression methods
        end = i + 2 + int.from_bytes(hello[i : i + 2], "big")
        i += 2
        while i + 4 <= end:
            kind, size = (
                int.from_bytes(hello[i : i + 2], "big"),
                int.from_bytes(hello[i + 2 : i + 4], "big"),
            )
            if kind == 0:  # server_name: list length, name type 0, name length, name
                n = int.from_bytes(hello[i + 7 : i + 9], "big")
                return hello[i + 9 : i + 9 + n].decode("ascii").lower()
            i += 4 + size
    except (IndexError, UnicodeDecodeError):
        return None
    return None


async def read_client_hello(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """(the TLS records as received, the ClientHello handshake message they carry)."""
    records, message = b"", b""
    while len(message) < 4 or len(message) < 4 + int.from_bytes(message[1:4], "big"):
        header = await reader.readexactly(5)
        if header[0] != 22:  # not a handshake record: not TLS
            raise ValueError("not a TLS handshake")
        fragment = await reader.readexactly(int.from_bytes(header[3:5], "big"))
        records += header + fragment
        message += fragment
    return records, message


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
        if dst.can_write_eof():
            dst.write_eof()
    except (ConnectionError, OSError):
        pass


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a RST (SO_LINGER 0), as a censor's middlebox does."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def sni_proxy_handler(world: World):
    """Read the ClientHello's SNI; reset it if the ISP blocks that name, else splice the TCP
    stream to the name's real address (honest DNS), so the site's own certificate validates."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = None
        try:
            records, hello = await read_client_hello(reader)
            sni = client_hello_sni(hello)
            if sni is None:
                return
            if sni in world.state["isp"]["sni_reset"]:
                _reset(writer)
                return
            addresses = world.state["dns"].get(sni)
            if not addresses:
                return
            up_reader, upstream = await asyncio.open_connection(addresses[0], 443)
            upstream.write(records)
            await asyncio.gather(_pipe(reader, upstream), _pipe(up_reader, writer))
        except (asyncio.IncompleteReadError, ConnectionError, OSError, ValueError):
            pass
        finally:
            for w in (upstream, writer):
                if w is not None and not w.transport.is_closing():
                    w.close()

    return handle


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
            await self.tcp(NOTICE_IP, 80, lambda r, wr: serve_http(r, wr, notice_handler))
            notice_tls = w.context(*w.state["notice_cert"])
            await self.tcp(
                NOTICE_IP, 443, lambda r, wr: serve_http(r, wr, notice_handler), notice_tls
            )
            await self.tcp(REDIRECT_IP, 80, lambda r, wr: serve_http(r, wr, redirect_handler))
            await self.tcp(SNI_PROXY_IP, 443, sni_proxy_handler(w))
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
