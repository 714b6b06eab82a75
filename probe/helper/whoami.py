"""``GET /whoami``: tell a probe which network it measures from, and the address it comes from.

A probe behind a NAT cannot see its public address, nor tell its network's AS from its own
interfaces; the helper, outside, sees the address every connection comes from. It answers::

    GET /whoami[?resolver=IP]

    {"probe_ip": "192.0.2.7", "probe_asn": "AS8449", "probe_cc": "KG",
     "probe_network_name": "ELCAT-AS ElCat Ltd.",
     "resolver_ip": "192.0.2.53", "resolver_asn": "AS8449", "resolver_cc": "KG",
     "resolver_network_name": "ELCAT-AS ElCat Ltd."}

``probe_ip`` is the address the connection came from, so that the probe can scrub it from
everything it stores and prints (as OONI's probes do with ``probe_ip``); the probe keeps it in
memory only, and the helper never logs it (nor the AS: the log line is ``GET /whoami 200``).
The AS number, country and name come from the helper's ``--asn-db`` (iptoasn's country is the
AS's registration country, not a geolocation); each is ``null`` when unknown (no table, an
unrouted or private address). The ``resolver_*`` keys are there only when ``resolver`` is given:
the probe's resolver address (from its resolv.conf), looked up in the same table.

Behind a reverse proxy on the same machine (a connection from a loopback address), the client
is the last address of ``X-Forwarded-For``, the one the proxy itself appended; from any other
peer the header is ignored, since a client can write anything in it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from ..errors import BadRequest
from ..model.addresses import canonical_ip, is_loopback
from .asn import AsnDB

PATH = "/whoami"


def client_address(peer: str | None, headers: dict[str, str]) -> str | None:
    """The client's address: the peer's (IPv4-mapped spelled as IPv4), or for a loopback peer
    (a local reverse proxy) the last entry of ``X-Forwarded-For`` when it is an address."""
    addr = canonical_ip(peer or "")
    if addr is not None and is_loopback(addr):
        forwarded = headers.get("x-forwarded-for", "").rsplit(",", 1)[-1]
        addr = canonical_ip(forwarded) or addr
    return addr


def answer(client: str | None, query: str, asn: AsnDB | None) -> dict[str, Any]:
    """The ``/whoami`` answer for ``client`` (see the module docstring); raises
    :class:`BadRequest` for a malformed query."""
    try:
        params = parse_qs(
            query, keep_blank_values=True, strict_parsing=bool(query), max_num_fields=8
        )
    except ValueError:
        raise BadRequest("malformed query string") from None
    result = {"probe_ip": client, **_about("probe", client, asn)}
    resolvers = params.get("resolver")
    if resolvers is not None:
        resolver = canonical_ip(resolvers[0]) if len(resolvers) == 1 else None
        if resolver is None:
            raise BadRequest("resolver must be one IP address")
        result |= {"resolver_ip": resolver, **_about("resolver", resolver, asn)}
    return result


def _about(prefix: str, ip: str | None, asn: AsnDB | None) -> dict[str, Any]:
    info = asn.info(ip) if asn is not None and ip is not None else None
    return {
        f"{prefix}_asn": f"AS{info.asn}" if info else None,
        f"{prefix}_cc": info.cc if info else None,
        f"{prefix}_network_name": info.name if info else None,
    }
