"""TCP connections and TLS handshakes, measured.

We drive TLS ourselves (``ssl.MemoryBIO`` over a non-blocking socket) instead of asyncio's
transports because the evidence is in the details: asyncio reports a FIN during the handshake
as a ``ConnectionResetError``, which would turn an ``eof_error`` (a censor closing the flow)
into a ``connection_reset`` (a censor injecting RST). Here a zero-byte read is EOF and an
``ECONNRESET`` is a reset, nothing else.

Every socket read that returns data yields to the event loop once: ``loop.sock_recv`` returns
at once, without suspending, while the kernel has data, so a peer that streams faster than we
read would otherwise keep the loop busy forever. Timeouts would never fire and every other
task in the process would stall.

A deadline measures the network only while the loop listens: when the loop stalls (a blocking
call, a CPU hog in the process, a machine too loaded to schedule it), a step's deadline can pass
with its answer unread. :class:`LoopLag` notices: the measurer asks it, for a step that timed
out, how long the loop stalled meanwhile.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import socket
import ssl
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from ..model.records import TCPConnect, TLSHandshake
from .classify import classify

READ_SIZE = 65536

#: What a connection, a TLS handshake or a read raises when the network (not probe) fails.
#: ``ssl.SSLError`` and ``TimeoutError`` are ``OSError``s; they are named for the reader.
NETWORK_ERRORS = (OSError, ssl.SSLError, TimeoutError, EOFError)


class Conn:
    """A connected socket, optionally wrapped in TLS, with async send/recv."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.tls: ssl.SSLObject | None = None
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._eof = False

    async def start_tls(self, context: ssl.SSLContext, server_hostname: str) -> None:
        """Handshake; raises on failure (``EOFError`` when the peer closed)."""
        self.tls = context.wrap_bio(self._in, self._out, server_hostname=server_hostname)
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._flush()
                if not await self._fill():
                    raise EOFError("EOF during the TLS handshake") from None
            except ssl.SSLError:
                # Send our alert, so the server's logs say why, then re-raise.
                await self._flush(ignore_errors=True)
                raise
        await self._flush()

    async def _flush(self, ignore_errors: bool = False) -> None:
        data = self._out.read()
        if not data:
            return
        try:
            await self.loop.sock_sendall(self.sock, data)
        except OSError:
            if not ignore_errors:
                raise

    async def _fill(self) -> bool:
        """Read from the socket into the TLS input; False at EOF."""
        if self._eof:
            return False
        data = await self.loop.sock_recv(self.sock, READ_SIZE)
        if not data:
            self._eof = True
            self._in.write_eof()
            return False
        self._in.write(data)
        await asyncio.sleep(0)  # see the module docstring
        return True

    async def send(self, data: bytes) -> None:
        if self.tls is None:
            await self.loop.sock_sendall(self.sock, data)
            return
        self.tls.write(data)
        await self._flush()

    async def recv(self) -> bytes:
        """Some bytes, or b"" at EOF (a TLS close without close_notify counts as EOF)."""
        if self.tls is None:
            data = await self.loop.sock_recv(self.sock, READ_SIZE)
            if data:
                await asyncio.sleep(0)  # see the module docstring
            return data
        while True:
            try:
                return self.tls.read(READ_SIZE)
            except ssl.SSLWantReadError:
                if not await self._fill():
                    continue  # the next read raises SSLEOFError or returns b""
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _family(ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET


async def open_tcp(ip: str, port: int, timeout: float) -> Conn:
    """Connect to ip:port; raises on failure."""
    sock = socket.socket(_family(ip), socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        async with asyncio.timeout(timeout):
            await asyncio.get_running_loop().sock_connect(sock, (ip, port))
    except BaseException:
        sock.close()
        raise
    return Conn(sock)


class Clock:
    """Seconds since the start of one target's measurement."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def __call__(self) -> float:
        return round(time.monotonic() - self.start, 6)


#: Seconds between the lag monitor's wake-ups (20 a second per process, whatever the targets).
LAG_INTERVAL = 0.05
#: A wake-up later than this (seconds) is a stall: the loop ran nothing else meanwhile, or the
#: process did not run at all. Less is the jitter of a busy loop, which deadlines absorb.
STALL = 0.1
#: Seconds a stall is remembered: longer than any step's timeout (at most 300 s).
STALL_MEMORY = 600.0


class LoopLag:
    """The stalls of one event loop: the spans when it could not run anything.

    One monitor per loop, shared by every measurement on it (:meth:`watching`): a task that
    sleeps LAG_INTERVAL and records how late it woke, when later than STALL. It runs only
    while a measurement is in progress.
    """

    _loops: ClassVar[dict[asyncio.AbstractEventLoop, LoopLag]] = {}

    def __init__(self) -> None:
        self._stalls: deque[tuple[float, float]] = deque()  # (start, end), monotonic
        self._tick = time.monotonic()  # the monitor's last wake-up
        self._users = 0
        self._task: asyncio.Task[None] | None = None

    @classmethod
    @contextmanager
    def watching(cls) -> Iterator[LoopLag]:
        """The running loop's monitor, started if none runs, stopped when its last user ends."""
        loop = asyncio.get_running_loop()
        lag = cls._loops.get(loop)
        if lag is None:
            lag = cls._loops[loop] = LoopLag()
            lag._task = loop.create_task(lag._watch())
        lag._users += 1
        try:
            yield lag
        finally:
            lag._users -= 1
            if not lag._users:
                del cls._loops[loop]
                if lag._task is not None:
                    lag._task.cancel()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(LAG_INTERVAL)
            now = time.monotonic()
            if now - self._tick - LAG_INTERVAL > STALL:
                self._stalls.append((self._tick + LAG_INTERVAL, now))
                while self._stalls[0][1] < now - STALL_MEMORY:
                    self._stalls.popleft()
            self._tick = now

    def stalled(self, start: float, end: float) -> float:
        """Seconds the loop stalled between the monotonic times ``start`` and ``end``.

        A stall still going on counts (the monitor has not woken since): a step that times
        out right after a stall may run before the monitor does.
        """
        now = time.monotonic()
        total = 0.0
        if now - self._tick - LAG_INTERVAL > STALL:
            total += max(0.0, min(now, end) - max(self._tick + LAG_INTERVAL, start))
        for begin, stop in reversed(self._stalls):
            if stop <= start:
                break  # the older ones ended before, too
            total += max(0.0, min(stop, end) - max(begin, start))
        return total


async def tcp_connect(
    ip: str, port: int, *, timeout: float, clock: Clock, depth: int = 0
) -> tuple[TCPConnect, Conn | None]:
    """Measure a TCP connect; the record, and the connection when it succeeded."""
    record = TCPConnect(ip=ip, port=port, depth=depth, t0=clock())
    conn = None
    try:
        conn = await open_tcp(ip, port, timeout)
    except NETWORK_ERRORS as exc:
        record.failure = classify(exc)
    record.t = clock()
    return record, conn


async def tls_handshake(
    conn: Conn,
    server_name: str,
    context: ssl.SSLContext,
    *,
    timeout: float,
    clock: Clock,
    ip: str,
    port: int,
    depth: int = 0,
    purpose: str = "fetch",
) -> TLSHandshake:
    """Measure a TLS handshake on ``conn``; on failure the connection is closed."""
    record = TLSHandshake(
        ip=ip, port=port, server_name=server_name, purpose=purpose, depth=depth, t0=clock()
    )
    try:
        async with asyncio.timeout(timeout):
            await conn.start_tls(context, server_name)
    except NETWORK_ERRORS as exc:
        record.failure = classify(exc)
        conn.close()
    else:
        describe_tls(record, conn.tls)
    record.t = clock()
    return record


async def presented_certificate(ip: str, port: int, server_name: str, timeout: float) -> str | None:
    """SHA-256 of the leaf certificate ip:port presents for ``server_name``, unverified.

    Used after a certificate failure, so the record says *which* certificate was presented
    (a censor's interception certificate, a block page's, a misconfigured site's). None when
    no second handshake succeeds.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        async with asyncio.timeout(timeout):
            conn = await open_tcp(ip, port, timeout)
            try:
                await conn.start_tls(context, server_name)
                der = conn.tls.getpeercert(binary_form=True) if conn.tls else None
            finally:
                conn.close()
    except NETWORK_ERRORS:
        return None
    return hashlib.sha256(der).hexdigest() if der else None


def describe_tls(record: TLSHandshake, tls: ssl.SSLObject | None) -> None:
    """Fill in version, cipher, ALPN and the leaf certificate's identity."""
    if tls is None:
        return
    record.tls_version = tls.version()
    cipher = tls.cipher()
    record.cipher = cipher[0] if cipher else None
    record.alpn = tls.selected_alpn_protocol()
    der = tls.getpeercert(binary_form=True)
    if der:
        record.cert_sha256 = hashlib.sha256(der).hexdigest()
    info = tls.getpeercert()
    if info:
        record.cert_subject = _name(info.get("subject", ()))
        record.cert_issuer = _name(info.get("issuer", ()))


def _name(rdns: Any) -> str:
    return ", ".join(f"{k}={v}" for rdn in rdns for k, v in rdn)


def client_context(ca_file: str | None = None, alpn: list[str] | None = None) -> ssl.SSLContext:
    """A verifying TLS client context.

    Trust anchors: ``ca_file`` when given, else ``SSL_CERT_FILE`` when set, else the Mozilla
    bundle shipped by certifi.
    """
    import os

    import certifi

    cafile = ca_file or os.environ.get("SSL_CERT_FILE") or certifi.where()
    context = ssl.create_default_context(cafile=cafile)
    context.set_alpn_protocols(alpn or ["http/1.1"])
    return context


def raise_fd_limit() -> None:
    """Lift the soft limit on open files to the hard one: a run or a helper holds hundreds of
    sockets at once, and many systems start processes with a soft limit of 1024."""
    try:
        import resource
    except ImportError:  # not on this platform
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            pass  # the system refuses: we keep the limit we have
