"""Where exceptions raised by the network become failure strings (:mod:`probe.model.failures`).

Every measured step catches what the network can throw and records ``classify(exc)``. Our own
protocol errors (:class:`probe.errors.NetworkError`) and dnspython's are named here too, so
there is one mapping for the whole probe.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl

import dns.exception

from ..errors import DNSWrongQueryID, DoHError, NetworkError
from ..model import failures as F

_ERRNO = {
    errno.ECONNREFUSED: F.CONNECTION_REFUSED,
    errno.ECONNRESET: F.CONNECTION_RESET,
    errno.EPIPE: F.CONNECTION_RESET,
    errno.ECONNABORTED: F.CONNECTION_RESET,
    errno.ETIMEDOUT: F.GENERIC_TIMEOUT,
    errno.EHOSTUNREACH: F.HOST_UNREACHABLE,
    errno.ENETUNREACH: F.NETWORK_UNREACHABLE,
    errno.ENETDOWN: F.NETWORK_DOWN,
    errno.EADDRNOTAVAIL: F.NETWORK_UNREACHABLE,
}

_GAI = {
    socket.EAI_NONAME: F.DNS_NXDOMAIN,
    socket.EAI_AGAIN: F.DNS_TEMPORARY,
    socket.EAI_FAIL: F.DNS_NON_RECOVERABLE,
}


def _root_cause(exc: BaseException) -> BaseException:
    """The OS or TLS error under a client library's wrapper exceptions (httpx, httpcore)."""
    seen = exc
    for _ in range(8):
        if isinstance(seen, (OSError, ssl.SSLError, TimeoutError, EOFError)):
            return seen
        nxt = seen.__cause__ or seen.__context__
        if nxt is None:
            break
        seen = nxt
    return exc


def classify(exc: BaseException) -> str:
    """Turn an exception raised by a network step into a failure string."""
    if isinstance(exc, DNSWrongQueryID):
        return F.DNS_WRONG_ID
    if isinstance(exc, dns.exception.Timeout):
        return F.GENERIC_TIMEOUT
    if isinstance(exc, (dns.exception.FormError, dns.exception.SyntaxError, DoHError)):
        return F.DNS_MISBEHAVING
    if isinstance(exc, NetworkError):
        return F.unknown(str(exc))
    exc = _root_cause(exc)
    if type(exc).__name__.endswith("Timeout") or type(exc).__name__ == "TimeoutException":
        return F.GENERIC_TIMEOUT
    if isinstance(exc, socket.gaierror):
        return _GAI.get(exc.errno or 0, F.DNS_MISBEHAVING)
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return F.GENERIC_TIMEOUT
    if isinstance(exc, asyncio.CancelledError):
        return F.INTERRUPTED
    if isinstance(exc, ssl.SSLCertVerificationError):
        return classify_certificate_error(exc)
    if isinstance(exc, ssl.SSLError):
        reason = (exc.reason or "").upper()
        if "UNRECOGNIZED_NAME" in reason:
            return F.SSL_INVALID_HOSTNAME
        if "UNEXPECTED_EOF" in reason or isinstance(exc, ssl.SSLEOFError):
            return F.EOF_ERROR
        if isinstance(exc, ssl.SSLZeroReturnError):
            return F.EOF_ERROR
        return F.SSL_FAILED_HANDSHAKE
    if isinstance(exc, asyncio.IncompleteReadError):
        return F.EOF_ERROR
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return F.CONNECTION_RESET
    if isinstance(exc, ConnectionRefusedError):
        return F.CONNECTION_REFUSED
    if isinstance(exc, OSError) and exc.errno in _ERRNO:
        return _ERRNO[exc.errno]
    if isinstance(exc, EOFError):
        return F.EOF_ERROR
    return F.unknown(f"{type(exc).__name__}: {exc}")


def classify_certificate_error(exc: ssl.SSLCertVerificationError) -> str:
    """Map OpenSSL's verify codes to OONI's three certificate failures."""
    code = getattr(exc, "verify_code", None)
    message = (getattr(exc, "verify_message", "") or str(exc)).lower()
    if code == 62 or "hostname mismatch" in message or "ip address mismatch" in message:
        return F.SSL_INVALID_HOSTNAME
    # 18 self-signed leaf, 19 self-signed in chain, 20/21 unable to get issuer.
    if code in (18, 19, 20, 21, 2) or "self-signed" in message or "unable to get" in message:
        return F.SSL_UNKNOWN_AUTHORITY
    return F.SSL_INVALID_CERTIFICATE
