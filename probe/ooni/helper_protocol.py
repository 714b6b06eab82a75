"""OONI's Web Connectivity test-helper protocol: its messages, names and flags, in one place.

A probe POSTs a :class:`ControlRequest` (JSON) to a helper outside the censored network; the
helper answers a :class:`ControlResponse` describing what it saw for the same URL (OONI spec
ts-017, "Example control request and response"; oohelperd speaks it). Our client
(:mod:`probe.measure.control`), our helper (:mod:`probe.helper`) and the analysis all read
and write these shapes through this module, so the protocol's quirks live here only:

* failure strings use legacy names (``dns_name_error``, ``connection_refused_error``,
  ``dns_server_failure``, ``dns_lookup_error``) where ours are OONI's newer ones;
* header names in ``http_request.headers`` are Go-canonical (``Content-Type``), one value each;
* ``ip_info`` flags are bits: :data:`FLAG_PROBE`, :data:`FLAG_HELPER`, :data:`FLAG_BOGON`,
  :data:`FLAG_VALID_TLS`.

Pure: no network, so the analysis and a collector can use it.
"""

from __future__ import annotations

from typing import Any, TypedDict

from ..model import failures as F
from ..model.addresses import endpoint


class ControlRequest(TypedDict):
    http_request: str
    http_request_headers: dict[str, list[str]]
    tcp_connect: list[str]
    x_quic_enabled: bool


class TCPConnectEntry(TypedDict):
    status: bool
    failure: str | None


class TLSHandshakeEntry(TypedDict):
    server_name: str
    status: bool
    failure: str | None


class HTTPRequestEntry(TypedDict):
    body_length: int
    discovered_h3_endpoint: str
    failure: str | None
    title: str
    headers: dict[str, str]
    status_code: int


class DNSEntry(TypedDict):
    failure: str | None
    addrs: list[str]


class IPInfoEntry(TypedDict):
    asn: int
    flags: int


class ControlResponse(TypedDict):
    tcp_connect: dict[str, TCPConnectEntry]
    tls_handshake: dict[str, TLSHandshakeEntry]
    quic_handshake: dict[str, Any]
    http_request: HTTPRequestEntry
    http3_request: Any
    dns: DNSEntry
    ip_info: dict[str, IPInfoEntry]


#: ``ip_info`` flags.
FLAG_PROBE = 1  # the probe resolved this address (it came in tcp_connect)
FLAG_HELPER = 2  # the helper resolved it
FLAG_BOGON = 4
FLAG_VALID_TLS = 8  # a TLS handshake with SNI = host validated on it

#: What ``GET /`` answers.
HELLO = {"message": "Hello OONItarian!"}

#: Our names -> the legacy names the protocol uses in its responses.
LEGACY_FAILURES = {
    F.DNS_NXDOMAIN: "dns_name_error",
    F.DNS_SERVFAIL: "dns_server_failure",
    F.DNS_REFUSED: "dns_server_failure",
    F.DNS_MISBEHAVING: "dns_server_failure",
    F.CONNECTION_REFUSED: "connection_refused_error",
}
_FROM_LEGACY = {
    legacy: ours
    for ours, legacy in LEGACY_FAILURES.items()
    if ours not in (F.DNS_REFUSED, F.DNS_MISBEHAVING)
}


# ------------------------------------------------------------------ requests


def control_request(url: str, endpoints: list[str], headers: dict[str, str]) -> ControlRequest:
    """The JSON body of a control request."""
    return {
        "http_request": url,
        "http_request_headers": {k: [v] for k, v in headers.items()},
        "tcp_connect": endpoints,
        "x_quic_enabled": False,
    }


def endpoints_for(addresses: list[str], port: int, scheme: str, explicit_port: bool) -> list[str]:
    """``ip:port`` strings the helper should connect to, as OONI's probes send them."""
    ports = [port]
    if scheme == "http" and not explicit_port:
        ports.append(443)
    out = []
    for address in addresses:
        for p in ports:
            if endpoint(address, p) not in out:
                out.append(endpoint(address, p))
    return out


# ------------------------------------------------------------------ responses


def check_response(data: Any) -> dict[str, Any]:
    """Validate the shape of a helper's answer; raises ``ValueError``."""
    if not isinstance(data, dict):
        raise ValueError("helper answer is not a JSON object")
    for key, kind in (("tcp_connect", dict), ("http_request", dict), ("dns", dict)):
        if not isinstance(data.get(key), kind):
            raise ValueError(f"helper answer lacks {key!r}")
    for key in ("tls_handshake", "ip_info"):
        if data.get(key) is None:
            data[key] = {}
        if not isinstance(data[key], dict):
            raise ValueError(f"helper answer has a bad {key!r}")
    return data


def entry_ok(entry: Any) -> bool | None:
    """A ``tcp_connect``/``tls_handshake`` entry: True ok, False failed, None absent."""
    if not isinstance(entry, dict):
        return None
    return entry.get("failure") is None and entry.get("status", True) is not False


def http_entry(response: dict[str, Any] | None) -> dict[str, Any] | None:
    """The answer's ``http_request`` part, or None."""
    if not response:
        return None
    http = response.get("http_request")
    return http if isinstance(http, dict) else None


def http_ok(http: dict[str, Any] | None) -> bool | None:
    """True when the helper fetched the URL, False when it failed, None without data."""
    if http is None:
        return None
    status = http.get("status_code")
    return http.get("failure") is None and isinstance(status, int) and status > 0


def ip_asn(response: dict[str, Any] | None, ip: str) -> int:
    """The AS number the helper gave ``ip`` (0: unknown)."""
    entry = ((response or {}).get("ip_info") or {}).get(ip) or {}
    asn = entry.get("asn") if isinstance(entry, dict) else None
    return asn if isinstance(asn, int) and asn > 0 else 0


def ip_flags(response: dict[str, Any] | None, ip: str) -> int:
    """The ``ip_info`` flags the helper gave ``ip`` (0: none)."""
    entry = ((response or {}).get("ip_info") or {}).get(ip) or {}
    flags = entry.get("flags") if isinstance(entry, dict) else None
    return flags if isinstance(flags, int) else 0


# ------------------------------------------------------------------ names


def legacy_failure(failure: str | None) -> str | None:
    """Our failure string as the protocol spells it."""
    if failure is None:
        return None
    return LEGACY_FAILURES.get(failure, failure)


def our_failure(failure: str | None) -> str | None:
    """A helper's (possibly legacy) failure string in our vocabulary."""
    if failure is None:
        return None
    if failure == "connect_error":
        return F.unknown("connect_error")
    return _FROM_LEGACY.get(failure, failure)


def dns_failure(failure: str | None) -> str | None:
    """The helper's ``dns.failure``: NXDOMAIN, server failures, no-answer as success."""
    if failure is None or failure == F.DNS_NO_ANSWER:
        return None
    if failure == F.DNS_NXDOMAIN:
        return "dns_name_error"
    if failure in (F.DNS_SERVFAIL, F.DNS_REFUSED, F.DNS_MISBEHAVING):
        return "dns_server_failure"
    return "unknown_error"


def http_failure(failure: str | None) -> str | None:
    """The fetch's failure: any DNS trouble is ``dns_lookup_error``; else the legacy names."""
    if failure is not None and failure.startswith("dns_"):
        return "dns_lookup_error"
    return legacy_failure(failure)


def go_header_name(name: str) -> str:
    """A header name as Go canonicalises it (``content-type`` -> ``Content-Type``)."""
    if not name or any(not (c.isalnum() or c in "!#$%&'*+-.^_`|~") for c in name):
        return name
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))
