"""Hostile networks on the probe's side: nothing freezes, nothing leaks.

Each attack below was reproduced against the probe; each test replays it in the lab with the
hostile servers of :mod:`tests.lab.hostile` (a lying resolver, hostile web servers, a hostile
helper, DoH and DoT servers) and canary listeners on the vantage's loopback and private
addresses that must never see a connection. The pure parts (the helper-answer validator, the
redirect rule, the address cap, the scrubber, the capped reader) have unit tests first.
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.parse
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlite_utils import Database

from probe import analysis
from probe.measure import measurer, redirects
from probe.measure.privacy import SCRUBBED, Scrubber
from probe.model import failures
from probe.model.records import Control, DNSQuery, HTTPRequest, Observations, TCPConnect
from probe.ooni.helper_protocol import ControlResponse, check_response
from probe.store import Store
from probe.store.schema import migrations
from probe.store.sqlite import load_observations
from tests.lab.hostile import HOSTILE_IP, HUGE_A, HUGE_AAAA, WRONG_TYPES, ZONE, Hostile

TIMEOUTS = [
    "--dns-timeout", "2", "--tcp-timeout", "2", "--tls-timeout", "2",
    "--http-timeout", "4", "--control-timeout", "5",
]  # fmt: skip
VANTAGE_IP = "192.88.99.2"
#: The vantage's address as text, and not as the start of 192.88.99.25x.
VANTAGE_RE = re.compile(r"(?<![0-9.])192\.88\.99\.2(?![0-9])")


# ---------------------------------------------------------------- the helper-answer validator

VALID_ANSWER: dict[str, Any] = {
    "tcp_connect": {"192.88.99.100:443": {"status": True, "failure": None}},
    "tls_handshake": {
        "192.88.99.100:443": {"server_name": "a.kg", "status": True, "failure": None}
    },
    "quic_handshake": {},
    "http_request": {
        "body_length": 1234,
        "discovered_h3_endpoint": "",
        "failure": None,
        "title": "A",
        "headers": {"Content-Type": "text/html"},
        "status_code": 200,
    },
    "http3_request": None,
    "dns": {"failure": None, "addrs": ["192.88.99.100"]},
    "ip_info": {"192.88.99.100": {"asn": 65000, "flags": 11}},
}


def test_a_valid_answer_passes_unchanged():
    assert check_response(json.loads(json.dumps(VALID_ANSWER))) == VALID_ANSWER


@pytest.mark.parametrize(
    "case, path",
    [
        ("addrs-number", "$.dns.addrs"),
        ("ipinfo-string", f"$.ip_info['{HOSTILE_IP}']"),
        ("headers-number", "$.http_request.headers"),
        ("title-number", "$.http_request.title"),
        ("status-string", "$.http_request.status_code"),
        ("nested-garbage", "$.tcp_connect['1.2.3.4:80']"),
        ("not-an-object", "$"),
    ],
)
def test_wrong_types_are_rejected_naming_the_field(case, path):
    with pytest.raises(ValueError) as caught:
        check_response(WRONG_TYPES[case])
    assert str(caught.value).startswith(f"{path}: ")


def test_nulls_and_missing_fields_take_go_zero_values_and_unknown_keys_go():
    answer = {
        "tcp_connect": {"192.88.99.100:80": {"failure": "connection_refused_error"}},
        "http_request": {"status_code": None, "title": None, "x_extra": [1]},
        "dns": {"addrs": None},
        "ip_info": None,
        "x_unknown": {"a": 1},
    }
    got = check_response(answer)
    assert got["tcp_connect"] == {
        "192.88.99.100:80": {"status": False, "failure": "connection_refused_error"}
    }
    assert got["http_request"]["status_code"] == 0 and got["http_request"]["title"] == ""
    assert got["dns"] == {"failure": None, "addrs": []}
    assert got["ip_info"] == {} and got["tls_handshake"] == {}
    assert "x_unknown" not in got and "x_extra" not in got["http_request"]


@pytest.mark.parametrize("value", [True, 200.0, 2**64, "200", [200]])
def test_an_int_field_takes_only_a_64_bit_int(value):
    with pytest.raises(ValueError):
        check_response({**VALID_ANSWER, "http_request": {"status_code": value}})


def test_an_answer_without_its_main_parts_is_no_answer():
    for key in ("tcp_connect", "http_request", "dns"):
        with pytest.raises(ValueError, match=re.escape(f"$.{key}: missing")):
            check_response({k: v for k, v in VALID_ANSWER.items() if k != key})


def _conforms(value: Any, kind: Any) -> bool:
    """An independent check of the declared types (no normalising)."""
    from types import UnionType
    from typing import Union, get_args, get_origin, get_type_hints, is_typeddict

    if kind is Any:
        return True
    if get_origin(kind) in (Union, UnionType):
        return any(_conforms(value, k) for k in get_args(kind))
    if kind is type(None):
        return value is None
    if is_typeddict(kind):
        hints = get_type_hints(kind)
        return (
            isinstance(value, dict)
            and set(value) == set(hints)
            and all(_conforms(value[k], h) for k, h in hints.items())
        )
    if get_origin(kind) is dict:
        return isinstance(value, dict) and all(
            isinstance(k, str) and _conforms(v, get_args(kind)[1]) for k, v in value.items()
        )
    if get_origin(kind) is list:
        return isinstance(value, list) and all(_conforms(v, get_args(kind)[0]) for v in value)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    return out


@st.composite
def answers(draw: Any) -> Any:
    """Arbitrary JSON, or a valid answer with one part replaced by arbitrary JSON."""
    if draw(st.booleans()):
        return draw(JSON)
    answer = json.loads(json.dumps(VALID_ANSWER))
    path = draw(st.sampled_from(_paths(answer)[1:]))
    node = answer
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = draw(JSON)
    return answer


def _observations(response: dict[str, Any]) -> Observations:
    ip = "192.88.99.100"
    return Observations(
        input="http://a.kg/",
        url="http://a.kg/",
        domain="a.kg",
        dns=[DNSQuery("a.kg", "A", "system", "udp://192.88.99.10:53", addresses=[ip])],
        tcp=[TCPConnect(ip, 80)],
        http=[HTTPRequest("http://a.kg/", ip=ip, port=80, status_code=200, title="A", body=b"x")],
        control=Control(helper="http://h/", response=response),
    )


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(answers())
def test_any_json_is_either_a_well_typed_answer_or_a_clean_rejection(data):
    try:
        checked = check_response(data)
    except ValueError:
        return
    assert _conforms(checked, ControlResponse)
    # Downstream: the analysis and the store take it without a hitch.
    obs = _observations(checked)
    verdict = analysis.analyze(obs)
    db = Database(memory=True)
    migrations.apply(db)
    measurement_id = Store(db).save("run", obs, verdict)
    assert load_observations(db, measurement_id).control.response == checked


# ---------------------------------------------------------------- pure rules


@pytest.mark.parametrize(
    "location, failure",
    [
        ("http://web.hostile.test:99999/", redirects.REDIRECT_INVALID),
        ("http://[::1/", redirects.REDIRECT_INVALID),
        ("ftp://192.168.1.1/etc/passwd", redirects.REDIRECT_NOT_HTTP),
        ("javascript:alert(1)", redirects.REDIRECT_NOT_HTTP),
        ("http://192.88.99.251:22/", redirects.REDIRECT_BAD_PORT),
        ("http://example.org:0/", redirects.REDIRECT_BAD_PORT),
        ("http:///nohost", failures.HTTP_INVALID_REDIRECT),
        ("http://exa mple.org/", redirects.REDIRECT_INVALID),
    ],
)
def test_redirects_the_probe_will_not_follow(location, failure):
    assert redirects.redirect_target(location) == (None, failure)


def test_redirects_it_follows_are_normalised():
    assert redirects.redirect_target("HTTPS://Яндекс.РФ:8443/a?b") == (
        "https://xn--d1acpjx3f.xn--p1ai:8443/a?b",
        None,
    )
    # The bogon rule is not the redirect rule's business: the connect step refuses it.
    assert redirects.redirect_target("http://127.0.0.1/")[0] == "http://127.0.0.1/"


def test_addresses_are_capped_per_family_in_order():
    addresses = [f"2001:db8::{i}" for i in range(20)] + [f"192.0.2.{i}" for i in range(20)]
    kept = measurer._capped(addresses)
    assert kept == addresses[:8] + addresses[20:28]


def test_scrubber_replaces_only_the_vantage_addresses():
    scrub = Scrubber(["192.88.99.2", "2001:db8::7"], discover=False)
    assert scrub.text("Your IP is 192.88.99.2.") == f"Your IP is {SCRUBBED}."
    for other in ("192.88.99.25", "192.88.99.251", "10.192.88.99.2", "2001:db8::70"):
        assert scrub.text(other) == other
    assert scrub.text("[2001:DB8:0:0:0:0:0:7]:80") == f"[{SCRUBBED}]:80"
    assert scrub.data(b"ip=192.88.99.2&x") == b"ip=" + SCRUBBED.encode() + b"&x"
    obs = _observations({"http_request": {"title": "from 192.88.99.2"}})
    hop = obs.http[0]
    hop.body, hop.body_sha256 = b"<p>192.88.99.2</p>", "original"
    hop.headers = [["X-Your-IP", "192.88.99.2"]]
    scrub.observations(obs)
    assert b"192.88.99.2" not in hop.body and hop.body_sha256 != "original"
    assert hop.headers == [["X-Your-IP", SCRUBBED]]
    assert obs.control.response == {"http_request": {"title": f"from {SCRUBBED}"}}
    assert obs.dns[0].addresses == ["192.88.99.100"]  # destinations are not scrubbed
    # URLs stay URLs (the analysis parses them).
    assert scrub.url("http://[2001:db8::7]:8080/?ip=192.88.99.2") == (
        f"http://scrubbed.invalid:8080/?ip={SCRUBBED}"
    )
    assert scrub.url("http://192.88.99.2/") == "http://scrubbed.invalid/"


# ---------------------------------------------------------------- the lab


@pytest.fixture(scope="module")
def hostile(lab):
    lab.reset()
    with Hostile(lab) as h:
        # The canaries work: a connection to one is caught (so their silence means something).
        assert lab.call(lab.vantage, "connect", "127.0.0.1", 80)["result"] == "ok"
        deadline = time.monotonic() + 10
        while not h.canary_log.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [c["canary"] for c in h.caught()] == ["127.0.0.1:80"]
        yield h
        assert h.caught() == []


def probe_check(
    lab: Any,
    db: Path,
    urls: list[str],
    *extra: str,
    resolver: str = f"udp://{HOSTILE_IP}",
    helper: str = f"http://{HOSTILE_IP}:8080/echo",
    controls: tuple[str, ...] = (f"udp://{HOSTILE_IP}",),
    prefix: tuple[str, ...] = (),
) -> subprocess.CompletedProcess:
    argv = [*prefix, sys.executable, "-m", "probe.cli", "check", "--json", "--db", str(db),
            "--resolver", resolver, "--helper", helper, "--ca-file", lab.ca_file, *TIMEOUTS,
            *extra]  # fmt: skip
    for control in controls:
        argv += ["--control-resolver", control]
    for url in urls:
        argv += ["--input", url]
    return lab.run(lab.vantage, argv, timeout=180)


def lines_of(result: subprocess.CompletedProcess, count: int) -> dict[str, dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == count, result.stdout + result.stderr
    return {line["input"]: line for line in lines}


def rows(db: Path, sql: str, *args: Any) -> list[tuple]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute(sql, args).fetchall()


def redirect(to: str) -> str:
    return f"http://web.{ZONE}/redirect?to={urllib.parse.quote(to, safe='')}"


BOGON_REDIRECTS = [
    "http://127.0.0.1/",
    "https://127.0.0.1/",
    "http://127.0.0.1:8080/",
    "http://10.0.0.1/",
    "http://192.168.1.1/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "//127.0.0.1/",
    f"http://private.{ZONE}/",
]
REFUSED_REDIRECTS = {
    "http://127.0.0.1:22/": redirects.REDIRECT_BAD_PORT,
    f"http://{HOSTILE_IP}:22/": redirects.REDIRECT_BAD_PORT,
    f"http://{HOSTILE_IP}:25/": redirects.REDIRECT_BAD_PORT,
    # http11 resolves and canonicalises the Location, and already refuses these.
    "ftp://192.168.1.1/etc/passwd": failures.unknown(
        "invalid redirect location: only http:// and https:// URLs can be fetched"
    ),
    f"http://web.{ZONE}:99999/": failures.unknown("invalid redirect location: bad port"),
    "http://[::1/": failures.unknown("invalid redirect location: Invalid IPv6 URL"),
}


def test_no_connection_into_the_volunteers_machine_or_lan(lab, hostile, tmp_path):
    db = tmp_path / "p.db"
    depth0 = f"http://private.{ZONE}/"  # the network's resolver lies: 10.0.0.1
    urls = [redirect(to) for to in [*BOGON_REDIRECTS, *REFUSED_REDIRECTS]] + [depth0]
    results = lines_of(probe_check(lab, db, urls), len(urls))
    assert hostile.caught() == []  # no canary, in the vantage or at :22/:25, saw anything
    for to in BOGON_REDIRECTS:
        mid = results[redirect(to)]["measurement_id"]
        connects = rows(db, "select ip, failure from tcp_connects where measurement_id = ? "
                        "and depth = 1", mid)  # fmt: skip
        assert connects and {f for _, f in connects} == {failures.REFUSED_BOGON}, (to, connects)
        hops = rows(db, "select hop, status_code, ip, failure from http_requests where "
                    "measurement_id = ? order by hop", mid)  # fmt: skip
        assert hops == [(0, 302, HOSTILE_IP, None), (1, None, None, failures.REFUSED_BOGON)]
    for to, failure in REFUSED_REDIRECTS.items():
        mid = results[redirect(to)]["measurement_id"]
        hops = rows(db, "select hop, status_code, failure from http_requests where "
                    "measurement_id = ?", mid)  # fmt: skip
        assert hops == [(0, 302, failure)], to
        assert rows(db, "select count(*) from tcp_connects where measurement_id = ? and "
                    "depth > 0", mid) == [(0,)]  # fmt: skip
    mid = results[depth0]["measurement_id"]
    assert rows(db, "select distinct failure from tcp_connects where measurement_id = ?", mid) == [
        (failures.REFUSED_BOGON,)
    ]
    assert rows(db, "select count(*) from http_requests where measurement_id = ? and "
                "status_code is not null", mid) == [(0,)]  # fmt: skip


def test_a_private_address_the_user_listed_is_measured(lab, hostile, tmp_path):
    """The bogon rule's one exception: the user asked for this very address."""
    result = probe_check(lab, tmp_path / "p.db", ["http://192.168.1.1/"])
    lines_of(result, 1)
    caught = hostile.caught()
    assert [c["canary"] for c in caught] == ["192.168.1.1:80"]
    assert caught[0]["sent"].startswith("GET / HTTP/1.1\r\n")


def test_a_huge_dns_answer_is_capped(lab, hostile, tmp_path):
    """2,256 addresses for one name: 8 per family are tried, with few file descriptors left;
    a healthy target in the same run is unharmed, and the helper gets at most 64 endpoints."""
    db = tmp_path / "p.db"
    huge, healthy = f"http://huge.{ZONE}/", f"http://web.{ZONE}/"
    # A 2,000-record answer comes over TCP after a truncated UDP one: a DNS timeout with room
    # to spare, so that a loaded machine does not turn it into a timeout.
    results = lines_of(
        probe_check(
            lab, db, [huge, healthy], "--dns-timeout", "15", prefix=("prlimit", "--nofile=128:128")
        ),
        2,
    )
    mid = results[huge]["measurement_id"]
    answers = {q: (a, f) for q, a, f in rows(db, "select query_type, addresses, failure from "
               "dns_queries where measurement_id = ? and engine = 'system'", mid)}  # fmt: skip
    v4, v6 = json.loads(answers["A"][0]), json.loads(answers["AAAA"][0])
    # The first 64 kept (tests/test_dns_answers.py), the vantage's own address (192.88.99.2 is
    # among them) scrubbed.
    assert len(v4) == len(v6) == 64, answers
    assert set(v4) <= {SCRUBBED if ip == VANTAGE_IP else ip for ip in HUGE_A}
    assert set(v6) <= set(HUGE_AAAA)
    tried = rows(db, "select ip from tcp_connects where measurement_id = ? and port = 80", mid)
    # The first 8 of each family, in the answer's order.
    assert sorted(ip for (ip,) in tried if ":" not in ip) == sorted(v4[:8])
    assert sorted(ip for (ip,) in tried if ":" in ip) == sorted(v6[:8])
    assert rows(db, "select failure from controls where measurement_id = ?", mid) == [(None,)]
    mid = results[healthy]["measurement_id"]
    assert rows(db, "select status_code from http_requests where measurement_id = ?", mid) == [
        (200,)
    ]


def test_an_endless_helper_answer_is_cut_off_and_the_run_completes(lab, hostile, tmp_path):
    db = tmp_path / "p.db"
    url = f"http://web.{ZONE}/"
    for helper in (f"http://{HOSTILE_IP}:8080/endless", f"https://{HOSTILE_IP}:8443/endless"):
        lines_of(probe_check(lab, db, [url], helper=helper), 1)
        (sent,) = hostile.endless_sent()
        assert sent < 64 << 20  # the probe stopped reading soon after 4 MiB, not at 1 GiB
    assert rows(db, "select distinct failure from controls") == [
        ("unknown_failure: helper answer unusable: answer larger than 4194304 bytes",)
    ]
    assert rows(db, "select distinct status from runs") == [("complete",)]


HELPER_CASES = {
    "endless": "unknown_failure: helper answer unusable: answer larger than 4194304 bytes",
    "gzipbomb": "unknown_failure: helper answer unusable: answer larger than 4194304 bytes",
    "drip": failures.GENERIC_TIMEOUT,
    "notjson": "unknown_failure: helper answer unusable: ",
    **{
        f"types/{case}": "unknown_failure: helper answer unusable: $"
        for case in WRONG_TYPES
    },
}  # fmt: skip

HELPER_SNIPPET = """
import asyncio, contextlib, json, ssl, sys
from probe.measure.control import HelperClient
from probe.net.kept import KeptClient
from probe.net.connections import Clock

async def main(urls, ca):
    out = {}
    async with contextlib.aclosing(KeptClient(ssl.create_default_context(cafile=ca))) as client:
        for url in urls:
            helper = HelperClient([url], client, timeout=3)
            record = await helper.control(
                {"http_request": "http://a.kg/", "http_request_headers": {},
                 "tcp_connect": [], "x_quic_enabled": False}, Clock())
            out[url] = [record.failure, record.response]
    print(json.dumps(out))

asyncio.run(main(json.loads(sys.argv[1]), sys.argv[2]))
"""


def test_every_hostile_helper_answer_is_a_clean_failure(lab, hostile):
    urls = {f"http://{HOSTILE_IP}:8080/{case}": case for case in HELPER_CASES}
    urls.update({f"https://{HOSTILE_IP}:8443/{case}": case for case in ("endless", "drip")})
    code = HELPER_SNIPPET.replace("sys.argv[1]", repr(json.dumps(list(urls)))).replace(
        "sys.argv[2]", repr(lab.ca_file)
    )
    got = json.loads(lab.python(lab.vantage, code, timeout=120))
    for url, case in urls.items():
        failure, response = got[url]
        assert response is None and failure and failure.startswith(HELPER_CASES[case]), (url, got)
    assert all(sent < 64 << 20 for sent in hostile.endless_sent())


DNS_SNIPPET = """
import asyncio, contextlib, json, ssl, sys
from probe.net import resolvers
from probe.net.connections import Clock

async def main(names, urls, ca):
    out = {}
    context = ssl.create_default_context(cafile=ca)
    async with contextlib.aclosing(resolvers.DoHClient(context)) as doh:
        async def one(url, name):
            late = resolvers.LateReplies(0.5)
            query = await resolvers.lookup(
                resolvers.parse_resolver(url), name, "A", timeout=2, clock=Clock(),
                ssl_context=context, doh_client=doh, late=late)
            await late.wait()
            out[url + " " + name] = {"failure": query.failure, "addresses": query.addresses,
                                     "duplicates": query.duplicate_replies}
        await asyncio.gather(*(one(url, name) for url, name in urls))
    print(json.dumps(out))

asyncio.run(main(None, json.loads(sys.argv[1]), sys.argv[2]))
"""


def dns_lookups(lab: Any, pairs: list[tuple[str, str]]) -> dict[str, dict[str, Any]]:
    code = DNS_SNIPPET.replace("sys.argv[1]", repr(json.dumps(pairs))).replace(
        "sys.argv[2]", repr(lab.ca_file)
    )
    return json.loads(lab.python(lab.vantage, code, timeout=120))


def test_udp_dns_keeps_listening_past_bad_replies_and_records_them(lab, hostile):
    udp = f"udp://{HOSTILE_IP}:53"
    names = ["wrongid", "onlywrongid", "garbage", "raced"]
    got = dns_lookups(lab, [(udp, f"{name}.{ZONE}") for name in names])
    got = {key.split()[1].split(".")[0]: value for key, value in got.items()}
    # A wrong-ID reply first: the genuine reply that follows is the answer.
    assert got["wrongid"]["failure"] is None
    assert got["wrongid"]["addresses"] == [HOSTILE_IP]
    assert [(d["wrong_id"], d["addresses"]) for d in got["wrongid"]["duplicates"]] == [
        (True, [lab.BLOCKPAGE_IP])
    ]
    # Only wrong IDs until the timeout.
    assert got["onlywrongid"]["failure"] == failures.DNS_WRONG_ID
    assert got["onlywrongid"]["addresses"] == []
    assert [d["wrong_id"] for d in got["onlywrongid"]["duplicates"]] == [True, True]
    # Garbage first, then the answer.
    assert got["garbage"]["addresses"] == [HOSTILE_IP]
    assert [(d["rcode"], d["wrong_id"]) for d in got["garbage"]["duplicates"]] == [(None, False)]
    # An injector races the resolver: its forgery wins (the first valid reply), and the
    # genuine reply, 20 ms later, is kept as evidence.
    assert got["raced"]["addresses"] == [lab.BLOCKPAGE_IP]
    assert [(d["rcode"], d["addresses"], d["wrong_id"]) for d in got["raced"]["duplicates"]] == [
        ("NOERROR", [HOSTILE_IP], False)
    ]
    assert got["raced"]["duplicates"][0]["t"] > 0


def test_a_racing_injector_is_kept_as_evidence_in_a_run(lab, hostile, tmp_path):
    db = tmp_path / "p.db"
    url = f"http://raced.{ZONE}/"
    mid = lines_of(probe_check(lab, db, [url]), 1)[url]["measurement_id"]
    ((addresses, duplicates),) = rows(
        db, "select addresses, duplicate_replies from dns_queries where measurement_id = ? and "
        "engine = 'system' and query_type = 'A'", mid,
    )  # fmt: skip
    assert json.loads(addresses) == [lab.BLOCKPAGE_IP]
    assert [(d["addresses"], d["wrong_id"]) for d in json.loads(duplicates)] == [
        ([HOSTILE_IP], False)
    ]


HOSTILE_CONTROL_RESOLVERS = {
    f"tls://{HOSTILE_IP}:8531": failures.SSL_INVALID_HOSTNAME,
    f"tls://{HOSTILE_IP}:8532": failures.DNS_MISBEHAVING,
    f"tls://{HOSTILE_IP}:8533": failures.DNS_MISBEHAVING,
    f"tls://{HOSTILE_IP}:8534": failures.GENERIC_TIMEOUT,
    f"https://{HOSTILE_IP}:9441/dns-query": failures.SSL_INVALID_HOSTNAME,
    f"https://{HOSTILE_IP}:9443/endless/dns-query": failures.DNS_MISBEHAVING,
    f"https://{HOSTILE_IP}:9443/big/dns-query": failures.DNS_MISBEHAVING,
    f"https://{HOSTILE_IP}:9443/garbage/dns-query": failures.DNS_MISBEHAVING,
    f"https://{HOSTILE_IP}:9443/drip/dns-query": failures.GENERIC_TIMEOUT,
}


def test_hostile_doh_and_dot_resolvers_fail_cleanly(lab, hostile):
    got = dns_lookups(lab, [(url, f"web.{ZONE}") for url in HOSTILE_CONTROL_RESOLVERS])
    for url, failure in HOSTILE_CONTROL_RESOLVERS.items():
        assert got[f"{url} web.{ZONE}"]["failure"] == failure, (url, got)


def test_a_run_with_only_hostile_controls_completes(lab, hostile, tmp_path):
    db = tmp_path / "p.db"
    result = probe_check(
        lab, db, [f"http://web.{ZONE}/", f"https://web.{ZONE}/"],
        helper=f"https://{HOSTILE_IP}:8443/endless",
        controls=tuple(HOSTILE_CONTROL_RESOLVERS),
    )  # fmt: skip
    results = lines_of(result, 2)
    assert {line["verdict"] for line in results.values()} <= {"accessible", "inconclusive"}
    assert rows(db, "select status from runs") == [("complete",)]
    failed = dict(rows(db, "select distinct resolver, failure from dns_queries where "
                       "engine != 'system'"))  # fmt: skip
    assert failed == HOSTILE_CONTROL_RESOLVERS
    hostile.endless_sent()


def _bytes(cell: bytes) -> bytes:
    """A stored blob as it was measured: bodies are kept zlib-compressed."""
    try:
        return zlib.decompress(cell)
    except zlib.error:
        return cell


def dump(db: Path) -> str:
    """Every row of every table, as text (bytes as latin-1, compressed bodies expanded)."""
    out = []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        tables = [t for (t,) in conn.execute("select name from sqlite_master where type='table'")]
        for table in tables:
            for row in conn.execute(f"select * from [{table}]"):
                for cell in row:
                    text = _bytes(cell).decode("latin-1") if isinstance(cell, bytes) else str(cell)
                    out.append(text)
    return "\n".join(out)


def test_the_vantage_address_is_never_stored_nor_printed(lab, hostile, tmp_path):
    """A block page, a header and the helper echo the client's address; none of it is kept."""
    db = tmp_path / "p.db"
    urls = [f"http://echo.{ZONE}/echo", f"https://echo.{ZONE}/echo"]
    result = probe_check(lab, db, urls)
    lines_of(result, 2)
    stored = dump(db)
    assert SCRUBBED in stored  # the echoes were stored, scrubbed: this test can fail
    hops = rows(db, "select title, headers, body from http_requests")
    assert all(title == f"Blocked. Your IP address is {SCRUBBED}" for title, _, _ in hops)
    assert all([["X-Your-IP", SCRUBBED]] == [h for h in json.loads(headers) if h[0] == "X-Your-IP"]
               for _, headers, _ in hops)  # fmt: skip
    assert all(body is None or f"Access denied for {SCRUBBED}.".encode() in _bytes(body)
               for _, _, body in hops)  # fmt: skip
    assert VANTAGE_RE.search(stored) is None
    for path in tmp_path.glob("p.db*"):  # the files themselves, WAL included
        assert VANTAGE_RE.search(path.read_bytes().decode("latin-1")) is None
    assert VANTAGE_RE.search(result.stdout + result.stderr) is None


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_end_a_run_cleanly(lab, hostile, tmp_path, signum, status):
    db = tmp_path / "p.db"
    fast = ["https://www.azattyk.org/", "http://kaktus.media/"]
    slow = ["https://example.org/delay/30000", "https://24.kg/delay/30000"]
    argv = [sys.executable, "-m", "probe.cli", "check", "--db", str(db),
            "--control-resolver", lab.DOH_URL, "--helper", f"http://{HOSTILE_IP}:8080/echo",
            "--ca-file", lab.ca_file, "--http-timeout", "60"]  # fmt: skip
    for url in fast + slow:
        argv += ["--input", url]
    err = tmp_path / "stderr"
    with open(err, "w") as stderr:
        run = lab.spawn(lab.vantage, argv, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if len(rows(db, "select id from measurements")) == len(fast):
                    break
            except sqlite3.OperationalError:  # not created yet
                pass
            time.sleep(0.1)
        run.send_signal(signum)
        assert run.wait(30) == status, err.read_text()
    finally:
        if run.poll() is None:
            run.kill()
    assert "Traceback" not in err.read_text()
    assert "interrupted" in err.read_text()
    assert rows(db, "select status from runs") == [("interrupted",)]
    stored = rows(db, "select input from measurements order by input")
    assert stored == sorted((url,) for url in fast)
    # Every stored measurement is whole: its control row and its steps are there.
    assert rows(db, "select count(*) from measurements m join controls c on "
                "c.measurement_id = m.id") == [(len(fast),)]  # fmt: skip
    assert rows(db, "select count(distinct measurement_id) from http_requests") == [(len(fast),)]
