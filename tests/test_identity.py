"""The network's identity, never the volunteer's address (issue 9 §2).

Pure parts first: the ASN table's countries and names, the helper's ``/whoami`` answer, the
probe's reading of it (a hostile helper's too) and the overrides. Then the lab: a volunteer
BEHIND A NAT (``lab.home_network()``: 192.168.77.2, masqueraded by the vantage to
192.88.99.2) runs ``probe check``; the run finds its network through our own helper, flags and
the configuration win over it, and neither the local nor the public address is anywhere in the
database, its WAL, the configuration and data directories, the output or the helper's log,
although a lab site echoes the public address into its page and a header.
"""

from __future__ import annotations

import json

import pytest

from probe.errors import BadRequest, HelperAnswerError
from probe.helper import whoami
from probe.helper.asn import AsInfo, AsnDB
from probe.measure.identity import (
    Found,
    NetworkIdentity,
    decide,
    parse_answer,
    resolver_to_look_up,
    whoami_urls,
)
from probe.measure.privacy import SCRUBBED, Scrubber

ASN_TSV = """\
1.0.0.0\t1.0.0.255\t13335\tUS\tCLOUDFLARENET
1.0.1.0\t1.0.1.255\t13335\tUS\tCLOUDFLARENET
1.0.8.0\t1.0.15.255\t0\tNone\tNot routed
2.0.0.0\t2.0.0.255\t8449\tkg\tELCAT-AS\tElCat \x1bLtd.
3.0.0.0\t3.0.0.255\t64512
2001:4860::\t2001:4860:ffff:ffff:ffff:ffff:ffff:ffff\t15169\tUS\tGOOGLE
"""


@pytest.fixture
def asn_db() -> AsnDB:
    return AsnDB.from_lines(ASN_TSV.splitlines())


# ---------------------------------------------------------------- the ASN table


def test_asn_info_country_and_name(asn_db):
    assert asn_db.info("1.0.1.7") == AsInfo(13335, "US", "CLOUDFLARENET")
    assert asn_db.info("2001:4860:4860::8888") == AsInfo(15169, "US", "GOOGLE")
    # Lower-case country upper-cased; a tab or a control character in a name never survives.
    assert asn_db.info("2.0.0.9") == AsInfo(8449, "KG", "ELCAT-AS ElCat Ltd.")
    assert asn_db.info("3.0.0.1") == AsInfo(64512, None, None)  # a 3-column table
    assert asn_db.info("1.0.9.1") is None  # not routed
    assert asn_db.info("9.9.9.9") is None  # no range
    assert asn_db.info("garbage") is None


def test_asn_info_is_kept_once_per_as():
    lines = [f"1.0.{i}.0\t1.0.{i}.255\t13335\tUS\tCLOUDFLARENET" for i in range(200)]
    db = AsnDB.from_lines(lines)
    assert len(db) == 200
    assert len(db._about) == 1  # not one entry per range


# ---------------------------------------------------------------- the helper's /whoami


def test_whoami_answer(asn_db):
    assert whoami.answer("2.0.0.7", "", asn_db) == {
        "probe_ip": "2.0.0.7",
        "probe_asn": "AS8449",
        "probe_cc": "KG",
        "probe_network_name": "ELCAT-AS ElCat Ltd.",
    }
    assert whoami.answer("2.0.0.7", "resolver=1.0.0.1", asn_db) == {
        "probe_ip": "2.0.0.7",
        "probe_asn": "AS8449",
        "probe_cc": "KG",
        "probe_network_name": "ELCAT-AS ElCat Ltd.",
        "resolver_ip": "1.0.0.1",
        "resolver_asn": "AS13335",
        "resolver_cc": "US",
        "resolver_network_name": "CLOUDFLARENET",
    }


def test_whoami_unknown_and_without_a_table(asn_db):
    unknown = {"probe_asn": None, "probe_cc": None, "probe_network_name": None}
    assert whoami.answer("192.168.1.2", "", asn_db) == {"probe_ip": "192.168.1.2", **unknown}
    assert whoami.answer("2.0.0.7", "", None) == {"probe_ip": "2.0.0.7", **unknown}


@pytest.mark.parametrize(
    "query", ["resolver=", "resolver=example.org", "resolver=1.0.0.1&resolver=1.0.0.2", "a=%zz&"]
)
def test_whoami_bad_queries(asn_db, query):
    with pytest.raises(BadRequest):
        whoami.answer("2.0.0.7", query, asn_db)


def test_whoami_client_address():
    assert whoami.client_address("::ffff:2.0.0.7", {}) == "2.0.0.7"
    assert whoami.client_address("2001:db8::7%eth0", {}) == "2001:db8::7"
    # X-Forwarded-For counts only from a local reverse proxy, and only its last entry.
    forwarded = {"x-forwarded-for": "9.9.9.9, 2.0.0.7"}
    assert whoami.client_address("127.0.0.1", forwarded) == "2.0.0.7"
    assert whoami.client_address("::1", forwarded) == "2.0.0.7"
    assert whoami.client_address("1.0.0.1", forwarded) == "1.0.0.1"
    assert whoami.client_address("127.0.0.1", {"x-forwarded-for": "nonsense"}) == "127.0.0.1"
    assert whoami.client_address(None, forwarded) is None


# ---------------------------------------------------------------- the probe's side


def scrubber() -> Scrubber:
    return Scrubber(discover=False)


def test_whoami_urls():
    assert whoami_urls(["http://192.88.99.80/", "https://th.example.org:8443/helper/"]) == [
        "http://192.88.99.80/whoami",
        "https://th.example.org:8443/helper/whoami",
    ]
    # OONI's public helpers do not offer it: not asked. Configured lookups come first.
    ooni = ["https://0.th.ooni.org/", "https://1.th.ooni.org/"]
    assert whoami_urls(ooni) == []
    assert whoami_urls(ooni + ["http://h/"], ["https://who.example/whoami", "http://h/whoami"]) == [
        "https://who.example/whoami",
        "http://h/whoami",
    ]


def test_answer_scrubs_the_public_address_first():
    scrub = scrubber()
    raw = json.dumps(
        {
            "probe_ip": "2.0.0.7",
            "probe_asn": "AS8449",
            "probe_cc": "kg",
            "probe_network_name": "ElCat, you are 2.0.0.7",
        }
    ).encode()
    found = parse_answer(raw, scrub)
    assert found == Found(asn="AS8449", cc="KG", name=f"ElCat, you are {SCRUBBED}")
    assert "2.0.0.7" in scrub.addresses
    assert scrub.text("Your IP: 2.0.0.7") == f"Your IP: {SCRUBBED}"
    # The address is not kept anywhere else.
    assert "2.0.0.7" not in repr(found)


@pytest.mark.parametrize(
    "data",
    [
        {"probe_ip": "2.0.0.7", "probe_asn": 8449, "probe_cc": ["KG"]},
        {"probe_ip": "2.0.0.7", "probe_asn": "AS0", "probe_cc": "ZZ"},
        {"probe_ip": "2.0.0.7", "probe_asn": "AS99999999999", "probe_cc": "KGZ"},
        {"probe_ip": "2.0.0.7", "probe_asn": "8449; drop", "probe_cc": "K1"},
        {"probe_ip": "2.0.0.7", "probe_asn": None, "probe_network_name": {"x": 1}},
    ],
)
def test_hostile_answers_give_nothing_but_the_address(data):
    scrub = scrubber()
    assert parse_answer(json.dumps(data).encode(), scrub) == Found()
    assert "2.0.0.7" in scrub.addresses


@pytest.mark.parametrize("raw", [b"", b"[1, 2]", b"\xff\xfe", b"[" * 100_000, b'"AS8449"'])
def test_unusable_answers_are_errors(raw):
    with pytest.raises(HelperAnswerError):
        parse_answer(raw, scrubber())


def test_names_are_printable_and_capped():
    raw = json.dumps({"probe_asn": "AS1", "probe_network_name": "A\x1b[31m\nB" + "x" * 500})
    name = parse_answer(raw.encode(), scrubber()).name
    assert name is not None and name.startswith("A[31m B") and len(name) == 200


def test_resolver_only_when_the_helper_answers_the_one_asked():
    data = {
        "probe_asn": "AS8449",
        "resolver_ip": "1.0.0.1",
        "resolver_asn": "AS13335",
        "resolver_network_name": "CLOUDFLARENET",
    }
    raw = json.dumps(data).encode()
    assert parse_answer(raw, scrubber(), resolver="1.0.0.1").resolver_asn == "AS13335"
    other = parse_answer(raw, scrubber(), resolver="1.0.0.2")
    assert (other.resolver_ip, other.resolver_asn, other.resolver_name) == (None, None, None)
    assert parse_answer(raw, scrubber()).resolver_asn is None  # not asked


def test_resolver_to_look_up():
    scrub = Scrubber(["2.0.0.7"], discover=False)
    assert resolver_to_look_up("1.0.0.1", scrub) == "1.0.0.1"
    assert resolver_to_look_up("[2001:4860:0::8888]", scrub) == "2001:4860::8888"
    assert resolver_to_look_up("192.168.1.1", scrub) is None  # a home router: no AS
    assert resolver_to_look_up("127.0.0.53", scrub) is None
    assert resolver_to_look_up("dns.example", scrub) is None  # a DoH/DoT name
    assert resolver_to_look_up("2.0.0.7", scrub) is None  # the volunteer's own address


FOUND = Found(
    asn="AS8449",
    cc="KG",
    name="ElCat",
    resolver_ip="1.0.0.1",
    resolver_asn="AS13335",
    resolver_name="CLOUDFLARENET",
)


def test_found_is_the_identity_without_overrides():
    assert decide(FOUND) == NetworkIdentity(
        probe_asn="AS8449",
        probe_cc="KG",
        probe_network_name="ElCat",
        resolver_ip="1.0.0.1",
        resolver_asn="AS13335",
        resolver_network_name="CLOUDFLARENET",
        identity_source="lookup",
    )


def test_overrides_win_field_by_field():
    both = decide(FOUND, probe_asn="AS12345", probe_cc="DE")
    assert (both.probe_asn, both.probe_cc, both.identity_source) == ("AS12345", "DE", "override")
    assert both.probe_network_name is None  # "ElCat" names AS8449, not AS12345
    assert both.resolver_asn == "AS13335"  # the resolver is still what was found
    cc_only = decide(FOUND, probe_cc="DE")
    assert (cc_only.probe_asn, cc_only.probe_cc) == ("AS8449", "DE")
    assert cc_only.probe_network_name == "ElCat"
    assert cc_only.identity_source == "lookup+override"
    same = decide(FOUND, probe_asn="AS8449")  # the same AS: its name stays
    assert same.probe_network_name == "ElCat"


def test_nothing_found():
    nothing = decide(None)
    assert nothing == NetworkIdentity()
    assert nothing.unknown() == ["AS number", "country"]
    assert decide(None, probe_asn="AS1").unknown() == ["country"]
    assert decide(None, probe_asn="AS1", probe_cc="KG").identity_source == "override"
