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

import functools
from dataclasses import dataclass
from types import UnionType
from typing import (
    Annotated,
    Any,
    TypedDict,
    Union,
    get_args,
    get_origin,
    get_type_hints,
    is_typeddict,
)

from ..model import failures as F
from ..model.addresses import endpoint


@dataclass(frozen=True)
class Within:
    """The values an int field may take: the union of inclusive ``ranges``, named ``what``.

    A helper's answer is evidence: a status code of 10**12 or a length of -10**18 is not a
    number a helper saw, and an answer holding one is refused whole."""

    what: str
    ranges: tuple[tuple[int, int], ...]

    def __contains__(self, value: int) -> bool:
        return any(low <= value <= high for low, high in self.ranges)


#: -1: the fetch failed (as helpers write it); 0: absent (Go's zero value).
# Three digits, as HTTP says: clients (Go's, so OONI's helpers, and ours) take 600..999, and
# real sites send them (LinkedIn answers 999 to clients it does not like).
STATUS_CODE = Within("an HTTP status code (100..999, or -1 or 0 for none)", ((-1, 0), (100, 999)))
#: No helper reads a body of a TiB; -1: the fetch failed.
MAX_BODY_LENGTH = 1 << 40
BODY_LENGTH = Within(
    f"a body length (0..{MAX_BODY_LENGTH}, or -1 for none)", ((-1, MAX_BODY_LENGTH),)
)
#: AS numbers are 32-bit (RFC 6793); 0: unknown.
ASN = Within("an AS number (0..4294967295)", ((0, 2**32 - 1),))
#: Bits; unknown ones (a newer helper's) are kept, a negative number is no set of bits.
FLAGS = Within("ip_info flags (0..4294967295)", ((0, 2**32 - 1),))


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
    body_length: Annotated[int, BODY_LENGTH]
    discovered_h3_endpoint: str
    failure: str | None
    title: str
    headers: dict[str, str]
    status_code: Annotated[int, STATUS_CODE]


class DNSEntry(TypedDict):
    failure: str | None
    addrs: list[str]


class IPInfoEntry(TypedDict):
    asn: Annotated[int, ASN]
    flags: Annotated[int, FLAGS]


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


#: The keys an answer must have (as OONI's helpers always send them); the others default.
REQUIRED_KEYS = ("tcp_connect", "http_request", "dns")
#: How deep JSON may nest in the parts typed ``Any`` (QUIC, HTTP/3: kept, never read).
MAX_ANY_DEPTH = 32
_INT64 = range(-(2**63), 2**63)


def check_response(data: Any) -> dict[str, Any]:
    """A helper's decoded JSON answer, validated against :class:`ControlResponse`.

    Returns a new dict of exactly the declared shape and types, or raises ``ValueError``
    naming the first bad field (``$.http_request.status_code: expected int, got str``).
    The rules are those of Go's ``encoding/json`` decoding into OONI's structs, so an answer
    OONI's probe accepts is accepted here: a missing field or a ``null`` takes the type's zero
    value (``""``, ``0``, ``False``, ``{}``, ``[]``; ``None`` where the type allows it), keys
    not in the protocol are dropped, and a value of the wrong type is an error (no ``"200"``
    for 200, no ``true`` for 1, no 200.5, nothing beyond 64 bits). Numbers must also be in
    their field's range (:class:`Within`: status codes 100..999, lengths >= 0 and bounded, AS
    numbers and flags 32-bit), else the answer is refused (``$.http_request.status_code:
    1000000000000 is not an HTTP status code ...``). Only ``tcp_connect``, ``http_request`` and
    ``dns`` must be present: an answer without them is no answer.
    """
    if not isinstance(data, dict):
        raise ValueError("$: expected a JSON object")
    for key in REQUIRED_KEYS:
        if data.get(key) is None:
            raise ValueError(f"$.{key}: missing")
    checked: dict[str, Any] = _check(data, ControlResponse, "$")
    return checked


def _check(value: Any, kind: Any, path: str) -> Any:
    """``value`` as ``kind`` (a type hint of the protocol's TypedDicts); raises ValueError."""
    if kind is Any:
        _check_depth(value, path, MAX_ANY_DEPTH)
        return value
    args = get_args(kind)
    if get_origin(kind) is Annotated:  # an int with its range
        number = _check(value, args[0], path)
        within: Within = args[1]
        if number not in within:
            raise ValueError(f"{path}: {number} is not {within.what}")
        return number
    if get_origin(kind) in (Union, UnionType):  # only ``X | None`` in the protocol
        if value is None:
            return None
        (inner,) = (a for a in args if a is not type(None))
        return _check(value, inner, path)
    if value is None:
        return _zero(kind)
    if is_typeddict(kind):
        if not isinstance(value, dict):
            raise ValueError(f"{path}: expected an object, got {_name(value)}")
        hints = _type_hints(kind)
        return {key: _check(value.get(key), hint, f"{path}.{key}") for key, hint in hints.items()}
    origin = get_origin(kind)
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{path}: expected an object, got {_name(value)}")
        return {str(k): _check(v, args[1], f"{path}[{str(k)[:64]!r}]") for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{path}: expected an array, got {_name(value)}")
        return [_check(v, args[0], f"{path}[{i}]") for i, v in enumerate(value)]
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{path}: expected bool, got {_name(value)}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int) or value not in _INT64:
            raise ValueError(f"{path}: expected int, got {_name(value)}")
        return value
    if kind is str:
        if not isinstance(value, str):
            raise ValueError(f"{path}: expected str, got {_name(value)}")
        return value
    raise TypeError(f"no validator for {kind!r}")  # a protocol type this module forgot


@functools.cache
def _type_hints(kind: Any) -> dict[str, Any]:
    """A TypedDict's fields (computed once: ``get_type_hints`` evaluates every annotation
    on each call, and was half the time of reading a measurement at a collector)."""
    return get_type_hints(kind, include_extras=True)


def _zero(kind: Any) -> Any:
    """Go's zero value of ``kind``: what a missing field or a ``null`` decodes to."""
    if is_typeddict(kind):
        return {key: _zero(hint) for key, hint in _type_hints(kind).items()}
    origin = get_origin(kind)
    if origin is Annotated:
        return _zero(get_args(kind)[0])
    if kind is Any or origin in (Union, UnionType):
        return None
    if origin is dict:
        return {}
    if origin is list:
        return []
    return {bool: False, int: 0, str: ""}[kind]


def _check_depth(value: Any, path: str, room: int) -> None:
    if room < 0:
        raise ValueError(f"{path}: nested too deeply")
    if isinstance(value, dict):
        for item in value.values():
            _check_depth(item, path, room - 1)
    elif isinstance(value, list):
        for item in value:
            _check_depth(item, path, room - 1)


def _name(value: Any) -> str:
    names = {dict: "object", list: "array", str: "str", bool: "bool", int: "int", float: "float"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


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
    legacy = LEGACY_FAILURES.get(failure, "unknown_error")
    return legacy if legacy.startswith("dns_") else "unknown_error"


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
