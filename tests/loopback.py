"""Real servers on loopback addresses, so the probe's core is tested without root or a lab.

Each server listens on its own loopback address (127.0.0.0/8 is all loopback on Linux: no
root, no interface to add) on a port the kernel picks, in threads of the test process, and is
a context manager: it stops (every connection closed, every thread joined) when its ``with``
block ends, also when the test failed. ``tests/conftest.py`` wraps them in fixtures.

* :class:`DNSServer`: a UDP resolver answering A and AAAA from a dict ``{name: [addresses]}``
  (NXDOMAIN for a name not in it, nothing at all for a name in ``silent``); ``queries`` lists
  what it was asked.
* :class:`WebServer`: HTTP, or HTTPS with a certificate from :class:`Certificates`
  (``trustme``), whose ``routes`` a test sets per path: :func:`page`, :func:`redirect`,
  :data:`RESET` (the connection reset after the request came), :data:`SILENCE` (the request
  read, never answered); a callable for anything else. ``requests`` lists what it received.
* :func:`doh_route`: a route answering DNS over HTTPS (RFC 8484 POST) from a :class:`DNSServer`'s
  dict, so a :class:`WebServer` with TLS is a DoH server.

The probe refuses bogons, loopback included; a test lets it connect to these servers with the
settings' test-only exemption (``Settings.bogons_exempt``, ``HelperConfig.bogons_exempt``),
listing exactly the servers' addresses (:func:`exempt`).
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import selectors
import socket
import socketserver
import ssl
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

# A different block of 127.0.0.0/8 for each process (the root and unprivileged runs may run at
# once); addresses end in neither .0 nor .255.
_block = 16 + os.getpid() % 200
_counter = itertools.count()


def loopback_address() -> str:
    """A loopback address not yet used by this process (the port is the kernel's choice)."""
    n = next(_counter)
    return f"127.{_block}.{n // 254 % 256}.{n % 254 + 1}"


def exempt(*servers: Any) -> tuple[ipaddress.IPv4Network, ...]:
    """The /32 networks of these servers' addresses: ``Settings.bogons_exempt`` for them only."""
    return tuple(ipaddress.IPv4Network(f"{s.host}/32") for s in servers)


# ---------------------------------------------------------------- DNS


class DNSServer:
    """A UDP DNS resolver on a loopback address answering from ``zone``."""

    def __init__(
        self,
        zone: dict[str, list[str]] | None = None,
        *,
        silent: Iterable[str] = (),
        host: str | None = None,
    ) -> None:
        self.zone = zone if zone is not None else {}
        self.silent = set(silent)
        self.host = host or loopback_address()
        self.port = 0
        self.queries: list[tuple[str, str]] = []
        self._server: socketserver.UDPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"udp://{self.host}:{self.port}"

    def answer(self, wire: bytes) -> bytes | None:
        """The reply to the query ``wire``; None for no reply (not a query, or a silent name)."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        if not query.question:
            return None
        return answer_from(self.zone, query, self.silent, self.queries)

    def __enter__(self) -> DNSServer:
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                reply = outer.answer(data)
                if reply is not None:
                    sock.sendto(reply, self.client_address)

        self._server = socketserver.UDPServer((self.host, 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)


def answer_from(
    zone: dict[str, list[str]],
    query: dns.message.Message,
    silent: set[str],
    log: list[tuple[str, str]],
) -> bytes | None:
    """``query`` answered from ``zone``: its A or AAAA addresses, NXDOMAIN for a name not in
    it; None (no reply) for a name in ``silent``."""
    question = query.question[0]
    name = question.name.to_text().rstrip(".").lower()
    qtype = dns.rdatatype.to_text(question.rdtype)
    log.append((name, qtype))
    if name in silent:
        return None
    reply = dns.message.make_response(query)
    if name not in zone:
        reply.set_rcode(dns.rcode.NXDOMAIN)
    else:
        family = [a for a in zone[name] if (":" in a) == (qtype == "AAAA")]
        if qtype in ("A", "AAAA") and family:
            reply.answer.append(dns.rrset.from_text_list(question.name, 60, "IN", qtype, family))
    return reply.to_wire()


# ---------------------------------------------------------------- certificates


class Certificates:
    """A throwaway CA (``trustme``) and the files a client needs to trust it."""

    def __init__(self, directory: Path) -> None:
        import trustme

        self.ca = trustme.CA()
        self.ca_file = directory / "loopback-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def server_context(self, *names: str) -> ssl.SSLContext:
        """A TLS server context with a certificate for ``names`` (host names, IP addresses)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(*names).configure_cert(context)
        return context


# ---------------------------------------------------------------- HTTP and HTTPS


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)


class _Action:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: The connection is reset (RST, SO_LINGER 0) once the request has come.
RESET = _Action("RESET")
#: The request is read and never answered (until the server stops).
SILENCE = _Action("SILENCE")

Route = Reply | _Action | Callable[[Request], Reply]


def page(body: str | bytes, status: int = 200, **headers: str) -> Reply:
    """An HTML page (``headers`` as keywords, ``_`` for ``-``)."""
    data = body.encode() if isinstance(body, str) else body
    fields = [("Content-Type", "text/html; charset=utf-8")]
    fields += [(name.replace("_", "-"), value) for name, value in headers.items()]
    return Reply(status, data, fields)


def redirect(location: str, status: int = 302) -> Reply:
    return Reply(status, b"", [("Location", location)])


def doh_route(dns_server: DNSServer) -> Callable[[Request], Reply]:
    """A route answering DNS-over-HTTPS POSTs from ``dns_server``'s zone."""

    def route(request: Request) -> Reply:
        reply = dns_server.answer(request.body) if request.method == "POST" else None
        if reply is None:
            return Reply(400, b"not a DNS query")
        return Reply(200, reply, [("Content-Type", "application/dns-message")])

    return route


_REASONS = {200: "OK", 301: "Moved Permanently", 302: "Found", 400: "Bad Request",
            404: "Not Found", 500: "Internal Server Error"}  # fmt: skip
MAX_HEAD = 64 * 1024


class WebServer:
    """HTTP/1.1 (HTTPS with ``tls``) on a loopback address; ``routes`` maps a path (without
    the query string) to what is answered; other paths get 404."""

    def __init__(
        self,
        routes: dict[str, Route] | None = None,
        *,
        tls: ssl.SSLContext | None = None,
        host: str | None = None,
    ) -> None:
        self.routes: dict[str, Route] = routes if routes is not None else {}
        self.tls = tls
        self.host = host or loopback_address()
        self.port = 0
        self.requests: list[Request] = []
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def url(self, path: str = "/", name: str | None = None) -> str:
        """The URL of ``path`` here, with host ``name`` (resolved by a test's DNS) or the
        address; the port is always explicit."""
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{name or self.host}:{self.port}{path}"

    def __enter__(self) -> WebServer:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, 0))
        listener.listen(64)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._spawn(self._accept_loop)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop: every connection closed, every thread joined (a second call does nothing)."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._wake_w.send(b"x")
        with self._lock:
            for conn in self._open:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed by its peer
        for thread in list(self._threads):
            thread.join(10)
        if self._listener is not None:
            self._listener.close()
        self._wake_r.close()
        self._wake_w.close()

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in selector.select():
                    if key.fileobj is self._listener and not self._stopping.is_set():
                        conn, _peer = self._listener.accept()
                        with self._lock:
                            self._open.add(conn)
                        self._spawn(self._serve, conn)

    def _serve(self, raw: socket.socket) -> None:
        conn = raw
        try:
            raw.settimeout(30)  # only against a hang: close() wakes it
            if self.tls is not None:
                conn = self.tls.wrap_socket(raw, server_side=True)
                with self._lock:
                    self._open.add(conn)
            buffer = b""
            while not self._stopping.is_set():
                request, buffer = _read_request(conn, buffer)
                if request is None:
                    return
                self.requests.append(request)
                route = self.routes.get(request.path.split("?")[0])
                if route is RESET:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                if route is SILENCE:
                    self._stopping.wait()
                    return
                if route is None:
                    reply = Reply(404, b"not found")
                elif isinstance(route, Reply):
                    reply = route
                else:
                    assert callable(route)
                    reply = route(request)
                close = request.headers.get("connection", "").lower() == "close"
                conn.sendall(_reply_bytes(reply, close))
                if close:
                    return
        except (OSError, ssl.SSLError):
            return  # the client went away (or the test's server was stopped)
        finally:
            with self._lock:
                self._open.discard(raw)
                self._open.discard(conn)
            conn.close()


def _read_request(conn: socket.socket, buffer: bytes) -> tuple[Request | None, bytes]:
    """The next request on ``conn`` and what follows it; None at the end of the connection."""
    while b"\r\n\r\n" not in buffer:
        chunk = conn.recv(65536)
        if not chunk or len(buffer) > MAX_HEAD:
            return None, b""
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _version = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None, b""
        rest += chunk
    return Request(method, path, headers, rest[:length]), rest[length:]


def _reply_bytes(reply: Reply, close: bool) -> bytes:
    reason = _REASONS.get(reply.status, "Whatever")
    fields = [*reply.headers, ("Content-Length", str(len(reply.body)))]
    if close:
        fields.append(("Connection", "close"))
    head = f"HTTP/1.1 {reply.status} {reason}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in fields)
    return head.encode("latin-1") + b"\r\n" + reply.body


# ---------------------------------------------------------------- all of them, for one test


class Loopback:
    """Servers for one test, each stopped when the test ends (:meth:`close`, pass or fail)."""

    def __init__(self, certificates: Certificates) -> None:
        import contextlib

        self.certificates = certificates
        self._stack = contextlib.ExitStack()

    def dns(self, zone: dict[str, list[str]] | None = None, **kwargs: Any) -> DNSServer:
        return self._stack.enter_context(DNSServer(zone, **kwargs))

    def http(self, routes: dict[str, Route] | None = None) -> WebServer:
        return self._stack.enter_context(WebServer(routes))

    def https(self, routes: dict[str, Route] | None = None, *names: str) -> WebServer:
        """An HTTPS server with a certificate for its address and ``names``."""
        host = loopback_address()
        context = self.certificates.server_context(host, *names)
        return self._stack.enter_context(WebServer(routes, tls=context, host=host))

    def doh(self, dns_server: DNSServer) -> WebServer:
        """A DoH server (``/dns-query``) answering from ``dns_server``'s zone."""
        return self.https({"/dns-query": doh_route(dns_server)})

    def client_context(self) -> ssl.SSLContext:
        """The probe's own verifying client context, trusting this harness's CA only."""
        from probe.net.connections import client_context

        return client_context(str(self.certificates.ca_file))

    def close(self) -> None:
        self._stack.close()


# ---------------------------------------------------------------- processes


class Process:
    """A server process (its own session, so it and its children are stopped together) whose
    stderr lines are collected as they come: :meth:`wait_for` waits on a line, not a time."""

    def __init__(self, argv: list[str], *, env: dict[str, str] | None = None) -> None:
        self.argv, self.env = argv, env
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.process: Any = None
        self._reader: threading.Thread | None = None

    def start(self) -> Process:
        import subprocess

        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            env=self.env,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()  # the end: a waiter learns it never comes

    def wait_for(self, predicate: Callable[[str], bool], *, after: int = 0,
                 timeout: float = 60.0) -> str:  # fmt: skip
        """The first line from index ``after`` on for which ``predicate`` holds, as soon as it
        is logged. ``timeout`` only guards against a hang; an exit fails at once."""
        import time

        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines[after:]:
                    if predicate(line):
                        return line
                reader_done = self._reader is not None and not self._reader.is_alive()
                if reader_done or time.monotonic() > deadline:
                    raise AssertionError(
                        f"{self.argv[:6]}: no such line ({'exited' if reader_done else 'hung'})"
                        ":\n" + "\n".join(self.lines)
                    )
                self._changed.wait(max(0.0, deadline - time.monotonic()))

    def stop(self) -> None:
        """SIGTERM to its session, SIGKILL if it has not gone in 10 s; its stderr drained."""
        import signal
        import subprocess

        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
            except ProcessLookupError:
                pass  # it had just ended
        if self._reader is not None:
            self._reader.join(10)

    def __enter__(self) -> Process:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _listening(line: str) -> bool:
    return line.startswith("listening on ")


class HelperProcess(Process):
    """``probe helper serve`` on a loopback address: through the CLI (which cannot exempt a
    bogon) or, with ``bogons_exempt``, through its Python entry point
    (``probe.helper.server.serve(HelperConfig(...))``) in a process of its own. ``url`` once
    started."""

    def __init__(
        self,
        *,
        resolver: str | None = None,
        ca_file: str | None = None,
        bogons_exempt: tuple[str, ...] = (),
        host: str | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        import sys

        self.host = host or loopback_address()
        self.port = 0
        if bogons_exempt:
            config = dict(host=self.host, port=0, ca_file=ca_file, bogons_exempt=bogons_exempt)
            code = (
                "import sys\n"
                "from probe.helper import HelperConfig, serve\n"
                "from probe.net.resolvers import parse_resolver\n"
                f"config = HelperConfig(**{config!r})\n"
                f"config.resolver = parse_resolver({resolver!r}) if {resolver!r} else None\n"
                "serve(config)\n"
            )
            argv = [sys.executable, "-c", code]
        else:
            argv = [sys.executable, "-m", "probe.cli", "helper", "serve",
                    "--listen", f"{self.host}:0", *extra]  # fmt: skip
            argv += ["--resolver", resolver] if resolver else []
            argv += ["--ca-file", ca_file] if ca_file else []
        super().__init__(argv)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self) -> HelperProcess:
        super().start()
        line = self.wait_for(_listening)
        self.port = int(line.rsplit(":", 1)[1])
        return self
