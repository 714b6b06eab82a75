"""The one failure vocabulary of probe.

Every network step records ``failure: str | None``; ``None`` means success. The strings are
OONI's (ooni/spec df-007-errors), so our measurements and OONI's can be compared and
exchanged. This module is the only place where exceptions become failure strings.

=====================================  ====================================================
string                                 meaning
=====================================  ====================================================
``connection_refused``                 a RST answered our SYN (nothing listening, or a censor)
``connection_reset``                   a RST on an established connection (DPI on SNI/Host)
``eof_error``                          the peer or a middlebox closed (FIN) mid-handshake/request
``generic_timeout_error``              any timeout; typical of blackholing
``host_unreachable``                   EHOSTUNREACH (often an ICMP from a router)
``network_unreachable``                ENETUNREACH (no route: offline, or IPv6 missing)
``network_down``                       ENETDOWN
``dns_nxdomain_error``                 the resolver said NXDOMAIN
``dns_no_answer``                      a valid reply with no record of the type asked
``dns_refused_error``                  rcode REFUSED
``dns_servfail_error``                 rcode SERVFAIL
``dns_server_misbehaving``             any other bad rcode, or a malformed reply
``dns_reply_with_wrong_query_id``      a reply whose ID does not match the query
``dns_bogon_error``                    a resolver that rejects bogons saw one (helper only)
``dns_temporary_failure``              getaddrinfo's EAI_AGAIN (a resolver we only reach by name)
``dns_non_recoverable_failure``        getaddrinfo's EAI_FAIL
``ssl_invalid_hostname``               the certificate does not match the SNI
``ssl_unknown_authority``              the chain is not rooted in the trust store
``ssl_invalid_certificate``            other certificate trouble (expired, malformed)
``ssl_failed_handshake``               the TLS handshake failed for another reason
``http_invalid_redirect_location_host``  a redirect whose Location has no host
``interrupted``                        cancelled by the user or by the run's deadline
``unknown_failure: <text>``            anything else, with the text (addresses scrubbed)
=====================================  ====================================================

The test helper protocol uses older names for some of these (``dns_name_error``,
``connection_refused_error``, ...); :data:`HELPER_LEGACY` maps ours to theirs.
"""

from __future__ import annotations

import asyncio
import errno
import re
import socket
import ssl

CONNECTION_REFUSED = "connection_refused"
CONNECTION_RESET = "connection_reset"
EOF_ERROR = "eof_error"
GENERIC_TIMEOUT = "generic_timeout_error"
HOST_UNREACHABLE = "host_unreachable"
NETWORK_UNREACHABLE = "network_unreachable"
NETWORK_DOWN = "network_down"
DNS_NXDOMAIN = "dns_nxdomain_error"
DNS_NO_ANSWER = "dns_no_answer"
DNS_REFUSED = "dns_refused_error"
DNS_SERVFAIL = "dns_servfail_error"
DNS_MISBEHAVING = "dns_server_misbehaving"
DNS_WRONG_ID = "dns_reply_with_wrong_query_id"
DNS_BOGON = "dns_bogon_error"
SSL_INVALID_HOSTNAME = "ssl_invalid_hostname"
SSL_UNKNOWN_AUTHORITY = "ssl_unknown_authority"
SSL_INVALID_CERTIFICATE = "ssl_invalid_certificate"
SSL_FAILED_HANDSHAKE = "ssl_failed_handshake"
HTTP_INVALID_REDIRECT = "http_invalid_redirect_location_host"
INTERRUPTED = "interrupted"
UNKNOWN = "unknown_failure"

TOO_MANY_REDIRECTS = "unknown_failure: stopped after too many redirects"

#: Failures that say the network path is gone rather than that one site is blocked.
UNREACHABLE = frozenset({HOST_UNREACHABLE, NETWORK_UNREACHABLE, NETWORK_DOWN})

#: Our names -> the legacy names the OONI test helper protocol uses in its responses.
HELPER_LEGACY = {
    DNS_NXDOMAIN: "dns_name_error",
    DNS_SERVFAIL: "dns_server_failure",
    DNS_REFUSED: "dns_server_failure",
    DNS_MISBEHAVING: "dns_server_failure",
    CONNECTION_REFUSED: "connection_refused_error",
}

_ERRNO = {
    errno.ECONNREFUSED: CONNECTION_REFUSED,
    errno.ECONNRESET: CONNECTION_RESET,
    errno.EPIPE: CONNECTION_RESET,
    errno.ECONNABORTED: CONNECTION_RESET,
    errno.ETIMEDOUT: GENERIC_TIMEOUT,
    errno.EHOSTUNREACH: HOST_UNREACHABLE,
    errno.ENETUNREACH: NETWORK_UNREACHABLE,
    errno.ENETDOWN: NETWORK_DOWN,
    errno.EADDRNOTAVAIL: NETWORK_UNREACHABLE,
}

_IP_LIKE = re.compile(r"\[?[0-9a-fA-F:.]*\d+\.\d+\.\d+\.\d+\]?(:\d+)?|\[[0-9a-fA-F:]+\](:\d+)?")


def scrub(text: str) -> str:
    """Remove IP addresses from ``text``: failure strings must never carry the volunteer's IP."""
    return _IP_LIKE.sub("[scrubbed]", text)


def unknown(text: str) -> str:
    """An ``unknown_failure`` with an explanation."""
    return f"{UNKNOWN}: {scrub(text)}"


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


_GAI = {
    socket.EAI_NONAME: DNS_NXDOMAIN,
    socket.EAI_AGAIN: "dns_temporary_failure",
    socket.EAI_FAIL: "dns_non_recoverable_failure",
}


def classify(exc: BaseException) -> str:
    """Turn an exception raised by a network step into a failure string."""
    exc = _root_cause(exc)
    if type(exc).__name__.endswith("Timeout") or type(exc).__name__ == "TimeoutException":
        return GENERIC_TIMEOUT
    if isinstance(exc, socket.gaierror):
        return _GAI.get(exc.errno or 0, DNS_MISBEHAVING)
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return GENERIC_TIMEOUT
    if isinstance(exc, asyncio.CancelledError):
        return INTERRUPTED
    if isinstance(exc, ssl.SSLCertVerificationError):
        return classify_certificate_error(exc)
    if isinstance(exc, ssl.SSLError):
        reason = (exc.reason or "").upper()
        if "UNRECOGNIZED_NAME" in reason:
            return SSL_INVALID_HOSTNAME
        if "UNEXPECTED_EOF" in reason or isinstance(exc, ssl.SSLEOFError):
            return EOF_ERROR
        if isinstance(exc, ssl.SSLZeroReturnError):
            return EOF_ERROR
        return SSL_FAILED_HANDSHAKE
    if isinstance(exc, asyncio.IncompleteReadError):
        return EOF_ERROR
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return CONNECTION_RESET
    if isinstance(exc, ConnectionRefusedError):
        return CONNECTION_REFUSED
    if isinstance(exc, OSError) and exc.errno in _ERRNO:
        return _ERRNO[exc.errno]
    if isinstance(exc, EOFError):
        return EOF_ERROR
    return unknown(f"{type(exc).__name__}: {exc}")


def classify_certificate_error(exc: ssl.SSLCertVerificationError) -> str:
    """Map OpenSSL's verify codes to OONI's three certificate failures."""
    code = getattr(exc, "verify_code", None)
    message = (getattr(exc, "verify_message", "") or str(exc)).lower()
    if code == 62 or "hostname mismatch" in message or "ip address mismatch" in message:
        return SSL_INVALID_HOSTNAME
    # 18 self-signed leaf, 19 self-signed in chain, 20/21 unable to get issuer.
    if code in (18, 19, 20, 21, 2) or "self-signed" in message or "unable to get" in message:
        return SSL_UNKNOWN_AUTHORITY
    return SSL_INVALID_CERTIFICATE


def for_helper(failure: str | None) -> str | None:
    """Our failure string as the OONI test helper protocol spells it."""
    if failure is None:
        return None
    return HELPER_LEGACY.get(failure, failure)


def from_helper(failure: str | None) -> str | None:
    """A helper's (possibly legacy) failure string in our vocabulary."""
    if failure is None:
        return None
    legacy = {v: k for k, v in HELPER_LEGACY.items() if k != DNS_REFUSED and k != DNS_MISBEHAVING}
    if failure == "connect_error":
        return unknown("connect_error")
    return legacy.get(failure, failure)
