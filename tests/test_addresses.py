"""probe.model.addresses: IPv6 forms that carry an IPv4 address are judged by it."""

import ipaddress

import pytest

from probe.helper.requests import address_allowed
from probe.model.addresses import canonical_ip, embedded_ipv4, is_bogon


@pytest.mark.parametrize(
    "ip",
    [
        # IPv4-compatible (::a.b.c.d, deprecated)
        "::7f00:1",
        "::127.0.0.1",
        "::a00:1",
        "::c0a8:101",  # 192.168.1.1
        "::a9fe:a9fe",  # 169.254.169.254, the cloud metadata address
        # 6to4: 2002:AABB:CCDD::/48 carries AA.BB.CC.DD
        "2002:7f00:1::",
        "2002:0a00:0001::",
        "2002:0a00:0001:1234::5",
        "2002:a9fe:a9fe::1",
        "[2002:c0a8:0101::1]",
        # Teredo: 2001:0::/32, server address in bits 32-63, client obfuscated in the last 32
        "2001:0:a00:1::",  # server 10.0.0.1
        "2001:0:808:808::f5ff:fffe",  # public server 8.8.8.8, client 10.0.0.1 (0a000001 ^ ff..)
        "2001:0:808:808::80ff:fffe",  # client 127.0.0.1
        # IPv4-mapped, and the NAT64 prefixes whole
        "::ffff:7f00:1",
        "::ffff:a9fe:a9fe",
        "64:ff9b::808:808",
        "64:ff9b:1::1",
    ],
)
def test_ipv6_forms_carrying_a_bogon_are_bogons(ip):
    assert is_bogon(ip) is True
    assert address_allowed(ip) is False  # the helper never connects there


@pytest.mark.parametrize(
    "ip",
    [
        "::808:808",  # IPv4-compatible 8.8.8.8
        "2002:808:808::1",  # 6to4 of 8.8.8.8
        "2001:0:808:808::f7f7:f7f7",  # Teredo: server 8.8.8.8, client 8.8.8.8
        "::ffff:808:808",
        "2001:4860:4860::8888",  # not Teredo: 2001:4860::/32
        "2002:c058:6301::1",  # 6to4 of 192.88.99.1: public here (the lab's prefix)
    ],
)
def test_ipv6_forms_carrying_a_public_address_are_not_bogons(ip):
    assert is_bogon(ip) is False


def test_embedded_ipv4_by_form():
    def v4(text):
        return [str(a) for a in embedded_ipv4(ipaddress.IPv6Address(text))]

    assert v4("::ffff:10.0.0.1") == ["10.0.0.1"]
    assert v4("::10.0.0.1") == ["10.0.0.1"]
    assert v4("2002:0a00:0001::") == ["10.0.0.1"]
    # RFC 4380's example: server 65.54.227.120, client 192.0.2.45
    assert v4("2001:0:4136:e378:8000:63bf:3fff:fdd2") == ["65.54.227.120", "192.0.2.45"]
    assert v4("2001:db8::1") == []
    assert v4("2606:4700::1111") == []


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("192.88.99.2", "192.88.99.2"),
        ("::ffff:192.88.99.2", "192.88.99.2"),
        ("::ffff:c058:6302", "192.88.99.2"),
        ("[::FFFF:C058:6302]", "192.88.99.2"),
        (" 192.88.99.2 ", "192.88.99.2"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("2002:c058:6302::", "2002:c058:6302::"),  # 6to4 stays its own address
        ("www.azattyk.org", None),
        ("3227017986", None),  # no address spelling by itself (scrubbing knows it)
        ("", None),
    ],
)
def test_canonical_ip_gives_one_spelling_per_address(spelling, canonical):
    assert canonical_ip(spelling) == canonical
