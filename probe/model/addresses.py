"""Small helpers about IP addresses: bogons, loopback, IP literals.

A *bogon* here is an address that should never be the public address of a website: private,
loopback, link-local, CGNAT, "this network", multicast, reserved, broadcast, documentation
and benchmarking ranges, and their IPv6 counterparts. IPv6 forms that carry an IPv4 address
(IPv4-mapped, IPv4-compatible, 6to4, Teredo) are judged by the IPv4 address they carry, so
``2002:7f00:1::`` is as much a bogon as ``127.0.0.1``; the NAT64 prefixes are bogons whole.
A resolver that answers a public name with one of these is a strong
(though not conclusive) sign of DNS tampering.

The list is explicit rather than :attr:`ipaddress.IPv4Address.is_global`, whose definition moves
between Python versions. Note that ``192.88.99.0/24`` (the deprecated 6to4 relay anycast
prefix, RFC 7526) is deliberately **public** here: it is routable, and the test lab uses it.
"""

from __future__ import annotations

import ipaddress

_BOGONS_V4 = tuple(
    ipaddress.IPv4Network(net)
    for net in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",  # private
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local
        "172.16.0.0/12",  # private
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation (TEST-NET-1)
        "192.168.0.0/16",  # private
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation (TEST-NET-2)
        "203.0.113.0/24",  # documentation (TEST-NET-3)
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, including 255.255.255.255 broadcast
    )
)

_BOGONS_V6 = tuple(
    ipaddress.IPv6Network(net)
    for net in (
        "::/128",  # unspecified
        "::1/128",  # loopback
        "64:ff9b::/96",  # NAT64 well-known prefix
        "64:ff9b:1::/48",  # NAT64 local-use prefix
        "100::/64",  # discard-only
        "2001:db8::/32",  # documentation
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # deprecated site-local
        "ff00::/8",  # multicast
    )
)

#: What an address field holds instead of one of the vantage's own addresses (OONI's spelling).
SCRUBBED = "[scrubbed]"
#: What replaces a vantage address that is a URL's host (``[scrubbed]`` is no valid host).
SCRUBBED_HOST = "scrubbed.invalid"

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
#: IPv4-compatible addresses (RFC 4291, deprecated): ``::a.b.c.d``.
_COMPATIBLE = ipaddress.IPv6Network("::/96")


def _parse(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = ip.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.split("%", 1)[0]  # drop an IPv6 zone id
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def canonical_ip(ip: str) -> str | None:
    """The one spelling of the address ``ip`` spells, or None when it spells none.

    Every comparison of addresses goes through here (the vantage's own addresses, the
    helper's, a bogon the user listed), so two spellings of one address never disagree:
    brackets and an IPv6 zone id are dropped, IPv4-mapped IPv6 (``::ffff:192.0.2.7``,
    ``::ffff:c000:207``) is the IPv4 address, other IPv6 is compressed and lower-case.
    Other forms that carry an IPv4 address (6to4, NAT64) stay IPv6 addresses of their own:
    :func:`embedded_ipv4` gives what they carry.
    """
    addr = _parse(ip)
    if addr is None:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def bracket(host: str) -> str:
    """``host`` as written in a URL or ``host:port``: IPv6 addresses in brackets."""
    return f"[{host}]" if ":" in host else host


def endpoint(ip: str, port: int) -> str:
    """``ip:port`` as the test-helper protocol spells endpoints."""
    return f"{bracket(ip)}:{port}"


def is_ip_literal(host: str) -> bool:
    """True when ``host`` is an IPv4 or IPv6 address (brackets allowed), not a name."""
    return _parse(host) is not None


def is_loopback(ip: str) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback; False for names and garbage."""
    addr = _parse(ip)
    if addr is None:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr in _MAPPED:
        addr = addr.ipv4_mapped
    return bool(addr and addr.is_loopback)


def embedded_ipv4(addr: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries, by its form; empty for other addresses.

    IPv4-mapped (``::ffff:a.b.c.d``) and IPv4-compatible (``::a.b.c.d``) carry one; 6to4
    (``2002:AABB:CCDD::/48``) carries its relay-side address; Teredo (``2001:0::/32``) carries
    two, the Teredo server's and the client's (obfuscated in the address, returned plain).
    """
    if addr in _MAPPED:
        return [ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)]
    if addr in _COMPATIBLE:
        return [ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)]
    if addr.sixtofour is not None:
        return [addr.sixtofour]
    if addr.teredo is not None:
        return list(addr.teredo)
    return []


def is_bogon(ip: str) -> bool:
    """True when ``ip`` is in a range a public website can never legitimately use.

    IPv6 addresses carrying an IPv4 address (:func:`embedded_ipv4`) are bogons when any IPv4
    address they carry is one (or when they are in an IPv6 bogon range). A string that is not
    an IP address is not a bogon.
    """
    addr = _parse(ip)
    if addr is None:
        return False
    if isinstance(addr, ipaddress.IPv4Address):
        return _is_bogon_v4(addr)
    if any(addr in net for net in _BOGONS_V6):
        return True
    return any(_is_bogon_v4(v4) for v4 in embedded_ipv4(addr))


def _is_bogon_v4(addr: ipaddress.IPv4Address) -> bool:
    return any(addr in net for net in _BOGONS_V4)
