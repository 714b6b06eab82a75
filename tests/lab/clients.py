"""Plain-Python clients used to exercise the lab from inside a namespace (see ``Lab.call``).

Every function returns a JSON-able dict with a ``result``: ``"ok"``, ``"timeout"``, ``"eof"``,
an errno name (``"ECONNRESET"``, ``"ECONNREFUSED"``, ``"EHOSTUNREACH"``...), ``"cert"`` (a
certificate verification failure), or a DNS rcode name (``"NXDOMAIN"``, ``"SERVFAIL"``).
"""

from __future__ import annotations

import base64
import errno
import socket
import ssl
import time


def outcome(exc: BaseException) -> str:
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timeout"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "cert"
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError, EOFError)):
        return "eof"
    if isinstance(exc, ssl.SSLError) and "EOF" in str(exc).upper():
        return "eof"
    if isinstance(exc, OSError) and exc.errno in errno.errorcode:
        return errno.errorcode[exc.errno]
    name = type(exc).__name__
    if name in ("Timeout", "LifetimeTimeout"):  # dnspython
        return "timeout"
    return f"{name}: {exc}"


def connect(ip: str, port: int, timeout: float = 3.0) -> dict:
    t0 = time.monotonic()
    try:
        socket.create_connection((ip, port), timeout=timeout).close()
        result = "ok"
    except Exception as e:
        result = outcome(e)
    return {"result": result, "elapsed": time.monotonic() - t0}


def connect_rtt(ip: str, port: int, n: int = 5, timeout: float = 5.0) -> dict:
    """Minimum TCP connect time (seconds) over n attempts."""
    best = None
    for _ in range(n):
        t0 = time.monotonic()
        socket.create_connection((ip, port), timeout=timeout).close()
        dt = time.monotonic() - t0
        best = dt if best is None else min(best, dt)
    return {"result": "ok", "rtt": best}


def tls(
    ip: str, sni: str | None, port: int = 443, cafile: str | None = None, timeout: float = 3.0
) -> dict:
    """A TLS handshake (verified against cafile when given) with an optional SNI."""
    ctx = ssl.create_default_context(cafile=cafile) if cafile else ssl._create_unverified_context()
    if sni is None:
        ctx.check_hostname = False
    stage = "connect"
    try:
        with socket.create_connection((ip, port), timeout=timeout) as s:
            stage = "handshake"
            with ctx.wrap_socket(s, server_hostname=sni) as t:
                return {"result": "ok", "stage": "done", "version": t.version()}
    except Exception as e:
        return {"result": outcome(e), "stage": stage, "error": repr(e)}


def http(
    ip: str, host: str, path: str = "/", port: int = 80, timeout: float = 3.0, sni: bool = False,
    cafile: str | None = None, version: str = "1.0", headers: dict | None = None,
) -> dict:  # fmt: skip
    """One GET over a raw socket (TLS if sni=True; HTTP/1.0 unless told, with ``headers`` added,
    the connection closed by the server); returns status, headers, the body as received (text,
    and its bytes in base64) and the status codes of the 1xx responses that came first."""
    stage = "connect"
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    request = f"GET {path} HTTP/{version}\r\nHost: {host}\r\nUser-Agent: lab\r\n"
    request += "Connection: close\r\n" if version == "1.1" else ""
    try:
        s = socket.create_connection((ip, port), timeout=timeout)
        if sni:
            stage = "handshake"
            ctx = ssl.create_default_context(cafile=cafile)
            s = ctx.wrap_socket(s, server_hostname=host)
        stage = "request"
        s.sendall(f"{request}{extra}\r\n".encode())
        stage = "response"
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        s.close()
    except Exception as e:
        return {"result": outcome(e), "stage": stage, "error": repr(e)}
    interim = []
    while True:
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        if not lines[0].startswith("HTTP/"):
            return {"result": "eof" if not data else "garbage", "stage": stage}
        status = int(lines[0].split()[1])
        if not 100 <= status < 200:
            break
        interim.append(status)
        data = body
    pairs = [[k.strip(), v.strip()] for k, _, v in (line.partition(":") for line in lines[1:])]
    return {
        "result": "ok",
        "status": status,
        "interim": interim,
        "headers": {k.lower(): v for k, v in pairs},
        "header_pairs": pairs,  # as sent: names in their case, in order
        "body": body.decode("utf-8", "replace"),
        "body_b64": base64.b64encode(body).decode(),
        "length": len(body),
    }


def dns_query(
    server: str, name: str, proto: str = "udp", rdtype: str = "A", timeout: float = 2.0,
    cafile: str | None = None, url: str | None = None, method: str = "POST",
) -> dict:  # fmt: skip
    """Query a resolver over udp, tcp, dot or doh (url, RFC 8484 GET or POST, done with httpx
    since dnspython's DoH needs extras); return rcode and A addresses."""
    import dns.message
    import dns.query
    import dns.rcode

    q = dns.message.make_query(name, rdtype)
    try:
        if proto == "udp":
            r = dns.query.udp(q, server, timeout=timeout)
        elif proto == "tcp":
            r = dns.query.tcp(q, server, timeout=timeout)
        elif proto == "dot":
            ctx = ssl.create_default_context(cafile=cafile)
            r = dns.query.tls(q, server, timeout=timeout, ssl_context=ctx, server_hostname=server)
        elif proto == "doh":
            r = _doh(q, url, timeout, cafile, method)
        else:
            raise ValueError(proto)
    except Exception as e:
        return {"result": outcome(e), "error": repr(e)}
    addresses = sorted(rr.address for rrset in r.answer for rr in rrset if hasattr(rr, "address"))
    rcode = dns.rcode.to_text(r.rcode())
    return {"result": "ok" if rcode == "NOERROR" else rcode, "addresses": addresses}


def _doh(q, url: str, timeout: float, cafile: str | None, method: str):
    import base64

    import dns.message
    import httpx

    verify = ssl.create_default_context(cafile=cafile) if cafile else True
    wire = q.to_wire()
    with httpx.Client(verify=verify, timeout=timeout) as c:
        if method == "GET":
            b64 = base64.urlsafe_b64encode(wire).rstrip(b"=").decode()
            resp = c.get(url, params={"dns": b64}, headers={"accept": "application/dns-message"})
        else:
            resp = c.post(url, content=wire, headers={"content-type": "application/dns-message"})
    resp.raise_for_status()
    assert resp.headers["content-type"] == "application/dns-message"
    return dns.message.from_wire(resp.content)


def system_resolve(name: str) -> dict:
    """getaddrinfo through the namespace's /etc/resolv.conf."""
    try:
        infos = socket.getaddrinfo(name, 443, socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror as e:
        return {"result": "gaierror", "error": str(e)}
    return {"result": "ok", "addresses": sorted({i[4][0] for i in infos})}


def httpx_get(url: str, cafile: str | None = None, timeout: float = 5.0, **kw) -> dict:
    """httpx GET through the system resolver (follows redirects unless told otherwise)."""
    import httpx

    kw.setdefault("follow_redirects", True)
    try:
        verify = ssl.create_default_context(cafile=cafile) if cafile else True
        with httpx.Client(verify=verify, timeout=timeout, **kw) as c:
            r = c.get(url)
    except httpx.TooManyRedirects:
        return {"result": "too_many_redirects"}
    except Exception as e:
        cause = e.__context__ or e
        while cause.__context__ is not None and not isinstance(cause, OSError):
            cause = cause.__context__
        return {"result": outcome(cause), "error": repr(e)}
    return {
        "result": "ok",
        "status": r.status_code,
        "url": str(r.url),
        "headers": dict(r.headers),
        "length": len(r.content),
        "body": r.text if len(r.content) < 100_000 else "",
        "history": [h.status_code for h in r.history],
    }
