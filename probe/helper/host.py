"""The helper's own host: the addresses and services it must never connect to.

A helper fetching ``http://<its own public address>:6379/`` would hand a stranger what listens
on its machine behind the firewall (an admin page, Redis, SSH, a metrics exporter): the
connection comes from the machine itself, over its loopback path. Bogons (127.0.0.1, 10.0.0.1,
...) are refused elsewhere (:func:`probe.helper.requests.address_allowed`); this module refuses
the host's *public* addresses:

* Listening on a wildcard (``0.0.0.0`` or ``::``, the default), or on a name: every address of
  every interface of the host, on every port. The helper answers on all of them, so all are its
  own. This is a superset of "its listening ports and its local services" and simpler: no list
  of ports to keep up to date, no race with a service that starts later, nothing to miss.
* Listening on one address: that address on every port, and every other address of the host on
  the ports a service listens on for all addresses (a wildcard TCP listener: ``sshd`` and Redis
  bound to ``0.0.0.0`` answer on every address of the host). The other addresses stay
  measurable otherwise, as any public server: binding the helper to one address says which
  address is the helper's, and a server on another address of the same machine that answers on
  that address alone is one the operator put there to be public (the test lab's sites are).
* Addresses the operator names (``--own-address``): every port. For an address that is on no
  interface: a cloud's 1:1 NAT (an "elastic IP") puts the public address outside the machine.

Every address is compared through :func:`~probe.model.addresses.canonical_ip`, so
``::ffff:192.0.2.7`` is ``192.0.2.7``; an IPv6 address carrying one of the host's IPv4
addresses (IPv4-compatible, 6to4, Teredo: :func:`~probe.model.addresses.embedded_ipv4`) is the
host's too.

The host's addresses are read from the kernel without a subprocess: IPv4 from
``/proc/net/fib_trie`` (its ``LOCAL`` routes, secondary addresses and local prefixes included,
which ``SIOCGIFADDR`` would miss), IPv6 from ``/proc/net/if_inet6``, listeners from
``/proc/net/tcp`` and ``/proc/net/tcp6``; every :data:`REFRESH` seconds, so an address added
later is refused within that time. Where ``/proc`` cannot be read (not Linux), only the listen
address and the named ones are refused, and the helper says so once at start.
"""

from __future__ import annotations

import ipaddress
import logging
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ..model import failures
from ..model.addresses import canonical_ip, embedded_ipv4

log = logging.getLogger("probe.helper")

#: ``tcp_connect`` and fetch failure for an address of the helper's own host.
REFUSED_OWN_HOST = failures.unknown("refused to connect to the helper's own host")
#: Seconds between two readings of the host's addresses and listeners.
REFRESH = 10.0
PROC_NET = Path("/proc/net")
_WILDCARDS = ("0.0.0.0", "::")
_LISTEN = "0A"  # the TCP_LISTEN state in /proc/net/tcp

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class HostView:
    """One reading of the host: its addresses and the ports listened on for all of them."""

    addresses: frozenset[str]  # canonical
    prefixes: tuple[Network, ...]  # local routes wider than one address (127.0.0.0/8, AnyIP)
    wildcard_ports: frozenset[int]  # TCP ports with a listener on 0.0.0.0 or ::

    def owns(self, ip: str) -> bool:
        if ip in self.addresses:
            return True
        addr = ipaddress.ip_address(ip)
        return any(addr in net for net in self.prefixes if net.version == addr.version)


def local_ipv4(fib_trie: str) -> tuple[set[str], list[ipaddress.IPv4Network]]:
    """The host's IPv4 addresses and wider local prefixes, from ``/proc/net/fib_trie``.

    A leaf is ``|-- ADDRESS`` followed by one line per route, ``/LEN SCOPE TYPE``; the
    ``LOCAL`` ones are the host's (``/32 host LOCAL`` for an address)."""
    addresses: set[str] = set()
    prefixes: list[ipaddress.IPv4Network] = []
    leaf = None
    for line in fib_trie.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == "|--":
            leaf = words[1]
        elif len(words) == 3 and words[0].startswith("/") and words[2] == "LOCAL" and leaf:
            net = ipaddress.IPv4Network(f"{leaf}{words[0]}", strict=False)
            if net.prefixlen == 32:
                addresses.add(str(net.network_address))
            elif net not in prefixes:
                prefixes.append(net)
    return addresses, prefixes


def local_ipv6(if_inet6: str) -> set[str]:
    """The host's IPv6 addresses, from ``/proc/net/if_inet6`` (32 hex digits a line)."""
    out = set()
    for line in if_inet6.splitlines():
        words = line.split()
        if words and len(words[0]) == 32:
            out.add(str(ipaddress.IPv6Address(bytes.fromhex(words[0]))))
    return out


def wildcard_ports(proc_tcp: str) -> set[int]:
    """TCP ports with a listener on every address, from ``/proc/net/tcp`` or ``tcp6``."""
    ports = set()
    for line in proc_tcp.splitlines()[1:]:
        words = line.split()
        if len(words) < 4 or words[3] != _LISTEN:
            continue
        address, _, port = words[1].partition(":")
        if canonical_ip(_proc_address(address)) in _WILDCARDS:
            ports.add(int(port, 16))
    return ports


def _proc_address(hex_text: str) -> str:
    """An address as /proc/net/tcp{,6} writes it: 32-bit words, each in host byte order."""
    raw = bytes.fromhex(hex_text)
    words = [raw[i : i + 4] for i in range(0, len(raw), 4)]
    if sys.byteorder == "little":
        words = [w[::-1] for w in words]
    packed = b"".join(words)
    return str(ipaddress.ip_address(packed))


def read_host(proc_net: Path = PROC_NET) -> HostView:
    """The host's addresses and wildcard listeners now; raises ``OSError`` when unreadable."""
    addresses, prefixes = local_ipv4((proc_net / "fib_trie").read_text())
    ports = wildcard_ports((proc_net / "tcp").read_text())
    try:  # IPv6 may be disabled: the files are then absent
        addresses |= local_ipv6((proc_net / "if_inet6").read_text())
        ports |= wildcard_ports((proc_net / "tcp6").read_text())
    except FileNotFoundError:
        pass
    return HostView(frozenset(addresses), tuple(prefixes), frozenset(ports))


NOTHING = HostView(frozenset(), (), frozenset())


class OwnHost:
    """What the helper refuses of its own host (see the module docstring).

    ``refusal(ip, port)`` is :data:`REFUSED_OWN_HOST` or None; the host is read again when
    the last reading is ``refresh`` seconds old.
    """

    def __init__(
        self,
        listen: str,
        *,
        named: Iterable[str] = (),
        proc_net: Path = PROC_NET,
        refresh: float = REFRESH,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        own = canonical_ip(listen)
        #: Listening on every address (or on a name, whose addresses may change).
        self.everywhere = own is None or own in _WILDCARDS
        #: Refused on every port whatever the interfaces say: the listen address, the named.
        self.own = frozenset(
            ip for ip in (own, *map(canonical_ip, named)) if ip and ip not in _WILDCARDS
        )
        self.proc_net = proc_net
        self.refresh = refresh
        self.clock = clock
        self._view = NOTHING
        self._read_at = -float("inf")
        self.readable = True
        self.view()
        if not self.readable:
            log.warning(
                "cannot read this host's addresses from %s: refusing only %s",
                proc_net,
                ", ".join(sorted(self.own)) or "the addresses named",
            )

    def view(self) -> HostView:
        """The host's addresses, as read at most ``refresh`` seconds ago."""
        now = self.clock()
        if now - self._read_at >= self.refresh:
            self._read_at = now
            try:
                self._view = read_host(self.proc_net)
            except OSError:
                self.readable = False
                self._view = NOTHING
        return self._view

    def refusal(self, ip: str, port: int) -> str | None:
        """Why the helper may not connect to ``ip:port`` (its own host), or None."""
        canonical = canonical_ip(ip)
        if canonical is None:
            return None  # not an address: the bogon rule refuses it
        spellings = {canonical}
        addr = ipaddress.ip_address(canonical)
        if isinstance(addr, ipaddress.IPv6Address):
            spellings |= {str(v4) for v4 in embedded_ipv4(addr)}
        if spellings & self.own:
            return REFUSED_OWN_HOST
        view = self.view()
        for spelling in spellings:
            if view.owns(spelling) and (self.everywhere or port in view.wildcard_ports):
                return REFUSED_OWN_HOST
        return None
