"""The scrubber finds the vantage's addresses in the spellings servers and ISPs use (issue 16
§8), in address fields too (§1), and leaves every other address and number alone.

Pure: :class:`probe.measure.privacy.Scrubber` with given addresses, no discovery. The lab
half (a redirect and a DNS answer to the vantage's own address, a page spelling it every way)
is in tests/test_privacy_lab.py.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from urllib.parse import urlsplit

import pytest

from probe.analysis import analyze
from probe.measure.privacy import SCRUBBED, SCRUBBED_HOST, Scrubber
from probe.model import failures
from probe.model.records import (
    Control,
    DNSQuery,
    HTTPRequest,
    Observations,
    TCPConnect,
    TLSHandshake,
)

V4 = "192.88.99.2"  # 0xc0586302 = 3227017986
V6 = "2001:db8:1:2::7"


@pytest.fixture
def scrub() -> Scrubber:
    return Scrubber([V4, V6], discover=False)


def b64(text: str, *, urlsafe: bool = False) -> str:
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    return encode(text.encode()).decode()


def recoverable(text: str, address: str) -> bool:
    """Whether base64 anywhere in ``text`` (between scrubbed marks), read at any alignment and
    in either alphabet, still holds ``address``."""
    for piece in re.findall(r"[A-Za-z0-9+/]+", text.replace("-", "+").replace("_", "/")):
        for start in range(4):
            chunk = piece[start:]
            chunk = chunk[: len(chunk) // 4 * 4]
            try:
                if address.encode() in base64.b64decode(chunk):
                    return True
            except (binascii.Error, ValueError):
                continue
    return False


V4_SPELLINGS = [
    ("Your IP address is 192.88.99.2.", "192.88.99.2"),
    ("host-192-88-99-2.dsl.isp.kg", "192-88-99-2"),  # reverse DNS, dashed
    ("192-88-99-2.static.isp.kg", "192-88-99-2"),
    ("dslb-192-088-099-002.pools.isp.kg", "192-088-099-002"),  # zero-padded
    ("you are 192.088.099.002", "192.088.099.002"),
    ("2.99.88.192.in-addr.arpa", "2.99.88.192"),  # reversed, as a name
    ("2-99-88-192.dsl.isp.kg", "2-99-88-192"),
    ('{"ip_decimal": 3227017986}', "3227017986"),  # IP APIs
    ("ip=3227017986&x=1", "3227017986"),
    ("p C0586302.dip0.isp.de", "C0586302"),  # hexadecimal, any case
    ("0xc0586302", "c0586302"),
    ("::ffff:c058:6302", "c058:6302"),  # IPv4-mapped, hexadecimal
    ("[::FFFF:C058:6302]:443", "C058:6302"),
    ("::ffff:192.88.99.2", "192.88.99.2"),  # IPv4-mapped, dotted
    ("64:ff9b::c058:6302", "c058:6302"),  # NAT64, well-known prefix
    ("2001:db8:64::c058:6302", "c058:6302"),  # NAT64, the operator's /96
    ("64:ff9b::192.88.99.2", "192.88.99.2"),
    ("2002:c058:6302::1", "c058:6302"),  # 6to4
    ("2002:c058:6302:1::5", "c058:6302"),  # 6to4, a subnet
    ("2001:0:4136:e378:8000:63bf:3fa7:9cfd", "3fa7:9cfd"),  # Teredo: the client inverted
    ("ip.192.88.99.2", "192.88.99.2"),  # preceded by a dot
    ("address:.192.88.99.2", "192.88.99.2"),
    ("192.88.99.2.nip.io", "192.88.99.2"),  # followed by one
    ("IP:192.88.99.2", "192.88.99.2"),
]


@pytest.mark.parametrize(("text", "spelling"), V4_SPELLINGS)
def test_every_realistic_spelling_of_an_ipv4_address_is_scrubbed(scrub, text, spelling):
    assert spelling in text  # the case is what it says
    scrubbed = scrub.text(text)
    assert spelling not in scrubbed and spelling.lower() not in scrubbed.lower()
    assert SCRUBBED in scrubbed
    assert scrub.data(text.encode()) == scrubbed.encode()


@pytest.mark.parametrize("prefix", ["", "x", "xy"])  # every alignment of the base64
@pytest.mark.parametrize("urlsafe", [False, True])
def test_base64_in_a_cookie_is_scrubbed(scrub, prefix, urlsafe):
    for address in (V4, V6):
        value = b64(prefix + json.dumps({"ip": address, "t": 1764374400}), urlsafe=urlsafe)
        cookie = f"session={value}; Path=/; HttpOnly"
        assert recoverable(cookie, address)  # the test can fail
        scrubbed = scrub.text(cookie)
        assert SCRUBBED in scrubbed and not recoverable(scrubbed, address), scrubbed
        assert scrubbed.endswith("; Path=/; HttpOnly")


V6_SPELLINGS = [
    "2001:db8:1:2::7",
    "2001:DB8:1:2::7",
    "2001:Db8:1:2::7",  # mixed case too
    "2001:db8:1:2:0:0:0:7",  # not compressed
    "2001:0db8:0001:0002:0000:0000:0000:0007",  # exploded
    "2001:0db8:0001:0002::0007",
    "2001-db8-1-2--7.ipv6-literal.net",  # dashed
    "2001-db8-1-2-0-0-0-7.dyn.isp.kg",
    "2001%3Adb8%3A1%3A2%3A%3A7",  # in a query string
    "20010db8000100020000000000000007",  # 32 hex digits
    "7.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa",
]


@pytest.mark.parametrize("spelling", V6_SPELLINGS)
def test_every_realistic_spelling_of_an_ipv6_address_is_scrubbed(scrub, spelling):
    for text in (spelling, f"Your IP: {spelling}.", f"[{spelling}]:443", f"ip={spelling}&x"):
        scrubbed = scrub.text(text)
        assert SCRUBBED in scrubbed and spelling not in scrubbed, scrubbed
    if "." not in spelling:  # an address, not a name
        assert scrub.text(f"[{spelling}]:443") == f"[{SCRUBBED}]:443"


OTHERS = [
    "192.88.99.20",
    "192.88.99.25",
    "192.88.99.251",
    "1192.88.99.2",
    "10.192.88.99.2",  # five numbers: not an address
    "192.88.99.2.5",
    "192-88-99-25.isp.kg",
    "10-192-88-99-2",
    "2.99.88.192",  # another address (2.99.88.192), not as a name
    "2.99.88.1920.isp.kg",
    "32270179860",
    "13227017986",
    "c05863021",
    "ac0586302",
    "sha256 6a1f0c0586302bd4",
    "2001:db8:1:2::70",  # the vantage's neighbours
    "2001:db8:1:2::7:1",
    "2001:db8:1:2::7f",
    "2001:db8:1:2::7.1.2.3",
    "2001-db8-1-2--70",
    "2002:c058:6301::1",  # 6to4 of 192.88.99.1
    "OpenSSL 1.1.1.1, nginx 1.18.0.2, ua 192.88.99.3",
]


@pytest.mark.parametrize("text", OTHERS)
def test_other_addresses_and_numbers_are_left_alone(scrub, text):
    assert scrub.text(text) == text
    assert scrub.data(text.encode()) == text.encode()


def test_failure_strings_keep_the_targets_addresses_and_versions():
    """The lossy second scrubber is gone: it erased every dotted quad (a version number, the
    target's address) and kept IPv6; the vantage's addresses are the Scrubber's job."""
    text = "Connect call failed ('192.88.99.100', 443) via OpenSSL 1.1.1.1"
    assert failures.unknown(text) == f"{failures.UNKNOWN}: {text}"
    assert not hasattr(failures, "scrub")
    scrub = Scrubber([V4, V6], discover=False)
    failure = failures.unknown(f"cannot assign ('{V4}', 0) nor ('{V6}', 0) to 192.88.99.100")
    assert scrub.text(failure) == failures.unknown(
        f"cannot assign ('{SCRUBBED}', 0) nor ('{SCRUBBED}', 0) to 192.88.99.100"
    )


@pytest.mark.parametrize(
    ("ip", "own"),
    [
        (V4, True),
        ("::ffff:192.88.99.2", True),
        ("::FFFF:C058:6302", True),
        ("[::ffff:c058:6302]", True),
        ("2002:c058:6302::1", True),  # 6to4: a relay delivers it to the volunteer's address
        ("2002:c058:6302:1::5", True),
        ("64:ff9b::c058:6302", True),  # NAT64: translated to it
        ("2001:db8:64::c058:6302", True),
        ("2001:0:4136:e378:8000:63bf:3fa7:9cfd", True),  # Teredo client
        (V6, True),
        ("2001:DB8:1:2:0:0:0:7", True),
        ("192.88.99.20", False),
        ("2002:c058:6301::1", False),
        ("2001:db8:1:2::70", False),
        ("example.org", False),
        ("", False),
    ],
)
def test_is_own_knows_every_spelling_and_every_ipv6_form_carrying_it(scrub, ip, own):
    assert scrub.is_own(ip) is own


def test_the_ipv4_address_a_vantage_6to4_address_carries_is_the_vantages():
    scrub = Scrubber(["2002:c058:6302::1"], discover=False)
    assert V4 in scrub.addresses
    assert scrub.text(f"Your IP: {V4}") == f"Your IP: {SCRUBBED}"


def test_loopback_and_unspecified_are_never_the_vantages():
    scrub = Scrubber(["127.0.0.1", "::1", "0.0.0.0", "::"], discover=False)
    assert scrub.addresses == frozenset()
    assert scrub.text("127.0.0.1 ::1 0.0.0.0") == "127.0.0.1 ::1 0.0.0.0"


def test_hosts_and_urls_stay_valid_and_agree_across_fields(scrub):
    assert scrub.host(V4) == scrub.host(f"[{V6}]") == SCRUBBED_HOST
    assert scrub.host("host-192-88-99-2.dsl.isp.kg") == SCRUBBED_HOST
    assert scrub.host("kaktus.media") == "kaktus.media"
    for url, expected in [
        (f"http://{V4}/router-admin", f"http://{SCRUBBED_HOST}/router-admin"),
        (f"http://[{V6}]:8080/?ip={V4}", f"http://{SCRUBBED_HOST}:8080/?ip={SCRUBBED}"),
        ("http://host-192-88-99-2.dsl.isp.kg/x", f"http://{SCRUBBED_HOST}/x"),
        ("http://user:192.88.99.2@a.kg/", f"http://{SCRUBBED_HOST}/"),
        ("udp://192.88.99.2:53", f"udp://{SCRUBBED_HOST}:53"),
        ("https://a.kg/?from=3227017986", f"https://a.kg/?from={SCRUBBED}"),
        ("https://a.kg/", "https://a.kg/"),
    ]:
        scrubbed = scrub.url(url)
        assert scrubbed == expected
        urlsplit(scrubbed).port  # noqa: B018 - still a URL: this raises on a broken one


def _redirected_to_the_vantage() -> Observations:
    """What the measurer records when a site redirects to the vantage's own address and the
    ISP resolver answers the next name with it: refused connects to it, in every field."""
    url = "http://a.kg/"
    return Observations(
        input=url,
        url=url,
        domain="a.kg",
        dns=[
            DNSQuery("a.kg", "A", "system", "udp://192.88.99.10:53", addresses=["192.88.99.100"]),
            DNSQuery(
                "host-192-88-99-2.dsl.isp.kg",
                "A",
                "system",
                "udp://192.88.99.10:53",
                addresses=[V4, "192.88.99.100"],
                cnames=["host-192-88-99-2.dsl.isp.kg"],
                duplicate_replies=[{"rcode": "NOERROR", "addresses": ["::ffff:c058:6302"]}],
                depth=1,
            ),
            DNSQuery(
                "host-192-88-99-2.dsl.isp.kg",
                "AAAA",
                "system",
                "udp://192.88.99.10:53",
                addresses=["2002:c058:6302::1", "64:ff9b::c058:6302"],
                depth=1,
            ),
        ],
        tcp=[
            TCPConnect("192.88.99.100", 80),
            TCPConnect(V4, 443, failures.REFUSED_OWN_ADDRESS, depth=1),
            TCPConnect("2002:c058:6302::1", 443, failures.REFUSED_OWN_ADDRESS, depth=1),
        ],
        tls=[TLSHandshake(V4, 443, V4, failures.SSL_INVALID_HOSTNAME, depth=1)],
        http=[
            HTTPRequest(
                url,
                ip="192.88.99.100",
                port=80,
                status_code=302,
                headers=[["Location", f"https://host-192-88-99-2.dsl.isp.kg/?ip={V4}"]],
                location=f"https://host-192-88-99-2.dsl.isp.kg/?ip={V4}",
            ),
            HTTPRequest(
                f"https://host-192-88-99-2.dsl.isp.kg/?ip={V4}",
                ip=V4,
                failure=failures.REFUSED_OWN_ADDRESS,
                depth=1,
            ),
        ],
        control=Control(
            helper="http://192.88.99.80/",
            response={"tcp_connect": {f"{V4}:443": {"status": False, "failure": None}}},
        ),
    )


def test_address_fields_and_names_are_scrubbed_everywhere(scrub):
    obs = _redirected_to_the_vantage()
    scrub.observations(obs)
    stored = json.dumps(obs.to_dict())
    for spelling in ("192.88.99.2", "192-88-99-2", "c058:6302"):
        assert spelling not in stored
    assert "192.88.99.100" in stored and "192.88.99.10" in stored  # nothing else went
    _, lookup_a, lookup_aaaa = obs.dns
    assert lookup_a.hostname == SCRUBBED_HOST and lookup_a.cnames == [SCRUBBED_HOST]
    assert lookup_a.addresses == [SCRUBBED, "192.88.99.100"]
    assert lookup_a.duplicate_replies[0]["addresses"] == [SCRUBBED]
    assert lookup_aaaa.addresses == [SCRUBBED, SCRUBBED]
    assert [t.ip for t in obs.tcp] == ["192.88.99.100", SCRUBBED, SCRUBBED]
    assert (obs.tls[0].ip, obs.tls[0].server_name) == (SCRUBBED, SCRUBBED_HOST)
    assert obs.http[1].ip == SCRUBBED
    assert urlsplit(obs.http[1].url).hostname == SCRUBBED_HOST == lookup_a.hostname
    assert list(obs.control.response["tcp_connect"]) == [f"{SCRUBBED}:443"]


def test_a_refused_own_address_is_no_block_and_its_reason_names_no_address(scrub):
    obs = _redirected_to_the_vantage()
    scrub.observations(obs)
    verdict = analyze(obs)
    assert verdict.verdict == "inconclusive", verdict
    assert "192.88.99.2" not in json.dumps(verdict.to_dict())
    assert "own address" in verdict.reason
