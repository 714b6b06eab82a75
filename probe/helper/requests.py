"""The helper's side of a control request: validation, and which endpoints to check.

Everything here is pure and refuses what a public server must refuse: malformed JSON shapes,
URLs that are not http(s), endpoints that are not ``ip:port``, and (answered, not measured)
bogon addresses and ports the URL does not use, so the helper never becomes a way into the
network it runs in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..errors import BadRequest
from ..model import failures
from ..model.addresses import canonical_ip, endpoint, is_bogon
from ..model.urls import normalise
from ..net.http11 import DEFAULT_HEADERS

#: ``tcp_connect`` failure for an address the helper will not connect to.
REFUSED_BOGON = failures.REFUSED_BOGON
#: ``tcp_connect`` failure for a port the URL does not use.
REFUSED_PORT = failures.unknown("refused to connect to a port the URL does not use")

#: Request headers forwarded to the site (as OONI's helper does); others are ignored.
FORWARDED_HEADERS = ("User-Agent", "Accept", "Accept-Language")
MAX_URL_LENGTH = 8192
MAX_HEADER_VALUE = 1024
#: At most this many of the helper's own resolved addresses are measured.
MAX_OWN_ADDRESSES = 16


def address_allowed(ip: str) -> bool:
    """True for a public IP address; False for bogons, scoped (``%zone``) addresses and names."""
    if "%" in ip:
        return False
    if canonical_ip(ip) is None:
        return False
    return not is_bogon(ip)


def bogon_refusal(ip: str, port: int) -> str | None:
    """:data:`REFUSED_BOGON` for what :func:`address_allowed` refuses, on any port; else None."""
    return None if address_allowed(ip) else REFUSED_BOGON


@dataclass
class HelperRequest:
    """A validated control request."""

    url: str  # normalised (punycode host, default port dropped)
    scheme: str
    host: str  # punycode, or an IP address
    port: int
    explicit_port: bool
    headers: dict[str, str]
    endpoints: list[tuple[str, str, int]]  # (key as the probe wrote it, canonical ip, port)


def parse_endpoint(text: Any) -> tuple[str, int] | None:
    """``"ip:port"`` or ``"[v6]:port"`` as (canonical ip, port); None when malformed.

    Host names, zone ids and ports outside 1..65535 are malformed: the helper only ever
    connects to addresses.
    """
    if not isinstance(text, str) or len(text) > 64:
        return None
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep or ":" not in host:
            return None
    else:
        host, sep, port = text.rpartition(":")
        if not sep or ":" in host:
            return None
    if "%" in host or not port.isascii() or not port.isdigit() or len(port) > 5:
        return None
    ip = canonical_ip(host)
    number = int(port)
    if ip is None or not 0 < number < 65536:
        return None
    return ip, number


def parse_request(data: Any, max_endpoints: int = 64) -> HelperRequest:
    """Validate a decoded control request; raises :class:`BadRequest`."""
    if not isinstance(data, dict):
        raise BadRequest("the request must be a JSON object")
    raw_url = data.get("http_request")
    if not isinstance(raw_url, str) or not raw_url:
        raise BadRequest("http_request must be a URL")
    if len(raw_url) > MAX_URL_LENGTH:
        raise BadRequest("http_request is too long")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in raw_url):
        raise BadRequest("http_request contains white space or control characters")
    try:
        url, host = normalise(raw_url)
        parts = urlsplit(raw_url)
        explicit = parts.port
    except ValueError as exc:
        raise BadRequest(f"bad http_request: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or "://" not in raw_url:
        raise BadRequest("http_request must be an http:// or https:// URL")
    port = explicit or (443 if scheme == "https" else 80)

    headers = dict(DEFAULT_HEADERS)
    given = data.get("http_request_headers")
    given = {} if given is None else given
    if not isinstance(given, dict):
        raise BadRequest("http_request_headers must be an object of lists")
    wanted = {name.lower(): name for name in FORWARDED_HEADERS}
    for name, values in given.items():
        canonical = wanted.get(str(name).lower())
        if canonical is None:
            continue
        value = values[0] if isinstance(values, list) and values else values
        if not isinstance(value, str):
            raise BadRequest(f"http_request_headers[{name!r}] must be a list of strings")
        value = value.strip()
        if len(value) > MAX_HEADER_VALUE or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise BadRequest(f"http_request_headers[{name!r}] has a bad value")
        headers[canonical] = value

    given_endpoints = data.get("tcp_connect")
    given_endpoints = [] if given_endpoints is None else given_endpoints
    if not isinstance(given_endpoints, list):
        raise BadRequest("tcp_connect must be a list of 'ip:port' strings")
    endpoints: list[tuple[str, str, int]] = []
    seen: set[tuple[str, int]] = set()
    for text in given_endpoints:
        parsed = parse_endpoint(text)
        if parsed is None or parsed in seen:
            continue  # as OONI's helper does: what is not an address is not measured
        seen.add(parsed)
        endpoints.append((text, *parsed))
    if len(endpoints) > max_endpoints:
        raise BadRequest(f"tcp_connect lists more than {max_endpoints} endpoints")
    return HelperRequest(
        url=url,
        scheme=scheme,
        host=host,
        port=port,
        explicit_port=explicit is not None,
        headers=headers,
        endpoints=endpoints,
    )


@dataclass
class Endpoint:
    """One ``ip:port`` to check, and whether (and why not) to connect."""

    key: str  # the response's key: the probe's own spelling, or ours
    ip: str  # canonical
    port: int
    tls: bool  # also TLS-handshake (SNI = URL host)
    refusal: str | None = None  # why the helper will not connect; None: it will


def url_ports(req: HelperRequest) -> list[int]:
    """Ports the helper connects to for its own addresses (OONI: 80 and 443 for plain http)."""
    if req.explicit_port:
        return [req.port]
    return [80, 443] if req.scheme == "http" else [443]


def wants_tls(req: HelperRequest, port: int) -> bool:
    return port == 443 or (req.scheme == "https" and req.explicit_port and port == req.port)


def build_endpoints(
    req: HelperRequest, own_addresses: list[str], refusal: Callable[[str, int], str | None]
) -> list[Endpoint]:
    """The probe's endpoints, then the helper's own; what ``refusal`` refuses (bogons, the
    helper's own host: :meth:`~probe.helper.measurement.HelperContext.refusal`) and foreign
    ports refused.

    The probe's refused endpoints are listed with their refusal (the probe asked about them
    and gets an answer); the refused ones among the helper's own DNS answers are left out
    (they show in ``dns`` and ``ip_info``).
    """
    ports = {req.port, 443}
    out: list[Endpoint] = []
    seen: set[tuple[str, int]] = set()
    for key, ip, port in req.endpoints:
        seen.add((ip, port))
        why = refusal(ip, port)
        if why is None and port not in ports:
            why = REFUSED_PORT
        out.append(Endpoint(key, ip, port, wants_tls(req, port), why))
    for ip in own_addresses[:MAX_OWN_ADDRESSES]:
        for port in url_ports(req):
            if (ip, port) not in seen and refusal(ip, port) is None:
                seen.add((ip, port))
                out.append(Endpoint(endpoint(ip, port), ip, port, wants_tls(req, port)))
    return out


# Failure strings as the protocol spells them.
