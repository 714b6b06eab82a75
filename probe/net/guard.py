"""The bogon rule for the probe's own servers: DoH and DoT resolvers, test helpers, ``/whoami``
lookups, the collector.

Their names are resolved by the system resolver, which is the network's: the ISP (or whoever
answers for it) could point ``dns.google``, a helper's or the collector's name at 192.168.1.1,
127.0.0.1 or 10.0.0.1, and the probe would talk to the volunteer's router or their own machine.
So a name is resolved here, its bogons dropped (:func:`probe.model.addresses.is_bogon`), and the
connection is made to an address that was checked, never to the name again. A URL that names an
address itself (``http://192.168.1.10:8080/``: a helper in the volunteer's LAN) is their choice
and is connected to as written; so is ``localhost``, as long as it resolves to loopback.

:func:`addresses` is for asyncio (every control connection of a run), :func:`addresses_now`
for blocking clients (:class:`probe.net.guarded_httpx.Transport`: the upload to the collector).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable

from ..errors import BogonRefused
from ..model.addresses import canonical_ip, is_bogon, is_ip_literal, is_loopback


def allowed(host: str, found: Iterable[str]) -> list[str]:
    """Of the addresses ``found`` for the name ``host``, those the probe may connect to (each
    once, in order): no bogon, or for ``localhost`` only loopback. Raises
    :class:`~probe.errors.BogonRefused` when none is left."""
    local = _is_localhost(host)
    kept: list[str] = []
    for address in found:
        ip = canonical_ip(address)
        if ip is None or ip in kept:
            continue
        if is_loopback(ip) if local else not is_bogon(ip):
            kept.append(ip)
    if not kept:
        raise BogonRefused(
            f"{host} resolved only to addresses probe does not connect to (private, loopback "
            "or reserved): not connected"
        )
    return kept


async def addresses(host: str, port: int) -> list[str]:
    """Where to connect for ``host``: the address itself when it is one, else its addresses
    from the system resolver, checked (:func:`allowed`). The resolver's errors propagate."""
    if is_ip_literal(host):
        return [host]
    loop = asyncio.get_running_loop()
    found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return allowed(host, [str(info[4][0]) for info in found])


def addresses_now(host: str, port: int) -> list[str]:
    """:func:`addresses`, blocking."""
    if is_ip_literal(host):
        return [host]
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return allowed(host, [str(info[4][0]) for info in found])


def _is_localhost(host: str) -> bool:
    name = host.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost")
