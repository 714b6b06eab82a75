"""The test helper (probe/helper/) and the ASN database (probe/helper/asn.py).

Pure parts first (request validation, endpoints, bogon decisions, failure names, ASN lookups,
and a whole measurement that needs no network because every address in it is refused); then
the server itself in the censorship lab: it runs in the ``net`` namespace at lab.HELPER_IP and
is queried from the ``vantage`` with httpx, exactly as a probe would.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from probe.app.config import parse_helper_url
from probe.errors import AsnDBError, BadRequest, InputError
from probe.helper.asn import AsnDB
from probe.helper.host import REFUSED_OWN_HOST, OwnHost
from probe.helper.measurement import HelperContext, handle_request, http_result
from probe.helper.requests import (
    REFUSED_BOGON,
    REFUSED_PORT,
    address_allowed,
    bogon_refusal,
    build_endpoints,
    parse_endpoint,
    parse_request,
    url_ports,
)
from probe.measure.measurer import MAX_ADDRESSES_PER_FAMILY
from probe.model import failures
from probe.model.records import HTTPRequest
from probe.model.text import printable
from probe.net import connections
from probe.net.connections import client_context
from probe.net.resolvers import parse_resolver
from probe.ooni.helper_protocol import (
    FLAG_BOGON,
    FLAG_HELPER,
    FLAG_PROBE,
    FLAG_VALID_TLS,
    check_response,
    dns_failure,
    endpoints_for,
    go_header_name,
    http_failure,
)
from probe.ooni.helper_protocol import control_request as helper_request
from tests.lab import REPO_ROOT

BOGONS = ["127.0.0.1", "10.0.0.1", "192.168.1.1", "169.254.169.254"]


def request(url: str, endpoints: list[str] | None = None, **extra) -> dict:
    """A control request exactly as our client (probe.measure.control) builds it."""
    body = helper_request(url, endpoints or [], {"User-Agent": "probe-test", "Accept": "*/*"})
    body.update(extra)
    return body


# ---------------------------------------------------------------- request validation


@pytest.mark.parametrize(
    "text, expected",
    [
        ("192.88.99.100:443", ("192.88.99.100", 443)),
        ("[2001:db8::1]:80", ("2001:db8::1", 80)),
        ("[2001:DB8:0::1]:80", ("2001:db8::1", 80)),
        ("192.88.99.100", None),  # no port
        ("example.org:443", None),  # a name: never resolved on the probe's behalf
        ("2001:db8::1:80", None),  # IPv6 without brackets
        ("[fe80::1%eth0]:80", None),  # zone id
        ("192.88.99.100:0", None),
        ("192.88.99.100:65536", None),
        ("192.88.99.100:+80", None),
        ("192.88.99.100:٨٠", None),  # non-ASCII digits
        (443, None),
    ],
)
def test_parse_endpoint(text, expected):
    assert parse_endpoint(text) == expected


@pytest.mark.parametrize(
    "body, reason",
    [
        ([], "JSON object"),
        ({}, "http_request"),
        ({"http_request": 5}, "http_request"),
        ({"http_request": "ftp://example.org/"}, "http"),
        ({"http_request": "file:///etc/passwd"}, "http"),
        ({"http_request": "javascript:alert(1)"}, "http"),
        ({"http_request": "example.org"}, "http"),  # no scheme
        ({"http_request": "http://exa mple.org/"}, "white space"),
        ({"http_request": "http://example.org/\r\nX: y"}, "white space"),
        ({"http_request": "http://localhost/"}, "domain"),
        ({"http_request": "http://example.org:99999/"}, "port"),
        ({"http_request": "http://" + "a" * 9000 + ".org/"}, "too long"),
        ({"http_request": "http://example.org/", "tcp_connect": "1.2.3.4:80"}, "tcp_connect"),
        ({"http_request": "http://example.org/", "http_request_headers": []}, "headers"),
        (
            {
                "http_request": "http://example.org/",
                "http_request_headers": {"User-Agent": ["x\r\nHost: evil"]},
            },
            "bad value",
        ),
        ({"http_request": "http://example.org/", "http_request_headers": {"Accept": [3]}}, "list"),
    ],
)
def test_parse_request_refuses(body, reason):
    with pytest.raises(BadRequest, match=reason):
        parse_request(body)


def test_parse_request_accepts_what_ooni_probes_send():
    body = request(
        "https://www.example.org/path?q=1",
        ["192.88.99.100:443", "[2001:db8::1]:443", "192.88.99.100:443", "bogus", "x.org:443"],
        http_request_headers={
            "User-Agent": ["ooniprobe-cli/3.20"],
            "accept-language": ["ky, ru"],
            "Cookie": ["secret=1"],  # not forwarded
        },
    )
    req = parse_request(body)
    assert req.url == "https://www.example.org/path?q=1"
    assert (req.scheme, req.host, req.port, req.explicit_port) == (
        "https",
        "www.example.org",
        443,
        False,
    )
    # duplicates and malformed entries dropped, the probe's spelling kept as the key
    assert req.endpoints == [
        ("192.88.99.100:443", "192.88.99.100", 443),
        ("[2001:db8::1]:443", "2001:db8::1", 443),
    ]
    assert req.headers["User-Agent"] == "ooniprobe-cli/3.20"
    assert req.headers["Accept-Language"] == "ky, ru"
    assert "Cookie" not in req.headers and "Accept" in req.headers  # default filled in


def test_parse_request_idn_and_explicit_port():
    req = parse_request(request("http://Яндекс.РФ:8080/"))
    assert req.host == "xn--d1acpjx3f.xn--p1ai"
    assert (req.port, req.explicit_port) == (8080, True)
    assert url_ports(req) == [8080]


def test_too_many_endpoints_is_refused_not_truncated():
    endpoints = [f"192.88.99.{i}:443" for i in range(100, 110)]
    assert len(parse_request(request("https://example.org/", endpoints), 10).endpoints) == 10
    with pytest.raises(BadRequest, match="more than 9"):
        parse_request(request("https://example.org/", endpoints), 9)


# ---------------------------------------------------------------- endpoints and bogons


@pytest.mark.parametrize(
    "ip",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "224.0.0.1",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "2001:4860:4860::8888%eth0",  # public but scoped: refused too
        "example.org",
        "",
    ],
)
def test_bogons_and_non_addresses_are_refused(ip):
    assert address_allowed(ip) is False


@pytest.mark.parametrize("ip", ["192.88.99.100", "8.8.8.8", "2001:4860:4860::8888", "1.1.1.1"])
def test_public_addresses_are_allowed(ip):
    assert address_allowed(ip) is True


def test_context_never_connects_to_its_own_address(tmp_path):
    context = HelperContext(
        resolver=parse_resolver("udp://192.88.99.53"),
        ssl_context=client_context(),
        own_host=OwnHost("192.88.99.80", proc_net=tmp_path),  # (no /proc: the address only)
    )
    assert context.refusal("192.88.99.81", 80) is None
    assert context.refusal("192.88.99.80", 80) == REFUSED_OWN_HOST
    assert context.refusal("::ffff:192.88.99.80", 6379) == REFUSED_OWN_HOST
    assert context.refusal("10.0.0.1", 80) == REFUSED_BOGON


def test_endpoints_for_http_url():
    req = parse_request(
        request(
            "http://example.org/",
            ["192.88.99.100:80", "192.88.99.100:443", "10.0.0.1:80", "192.88.99.100:22"],
        )
    )
    eps = build_endpoints(req, ["192.88.99.100", "192.88.99.101", "127.0.0.1"], bogon_refusal)
    got = {ep.key: (ep.tls, ep.refusal) for ep in eps}
    assert got == {
        "192.88.99.100:80": (False, None),
        "192.88.99.100:443": (True, None),
        "10.0.0.1:80": (False, REFUSED_BOGON),  # the probe's bogon: answered, refused
        "192.88.99.100:22": (False, REFUSED_PORT),  # a port the URL does not use
        # the helper's own address on 80 and 443; its own bogon (127.0.0.1) left out
        "192.88.99.101:80": (False, None),
        "192.88.99.101:443": (True, None),
    }


def test_endpoints_for_https_with_explicit_port():
    req = parse_request(request("https://example.org:8443/", ["[2001:db8::5]:8443"]))
    eps = build_endpoints(req, ["192.88.99.100"], lambda ip, port: None)
    assert [(ep.key, ep.tls) for ep in eps] == [
        ("[2001:db8::5]:8443", True),
        ("192.88.99.100:8443", True),
    ]


def test_endpoints_match_what_our_client_sends():
    # probe.control builds the tcp_connect list; the helper must measure every entry of it.
    for url in ("http://example.org/", "https://example.org/", "http://example.org:8080/"):
        req = parse_request(request(url))
        sent = endpoints_for(
            ["192.88.99.100", "2001:db8::1"], req.port, req.scheme, req.explicit_port
        )
        req = parse_request(request(url, sent))
        eps = build_endpoints(req, [], lambda ip, port: None)
        assert [ep.key for ep in eps] == sent
        assert all(ep.refusal is None for ep in eps)


# ---------------------------------------------------------------- failures and the response


@pytest.mark.parametrize(
    "ours, legacy",
    [
        (None, None),
        (failures.DNS_NXDOMAIN, "dns_name_error"),
        (failures.DNS_NO_ANSWER, None),
        (failures.DNS_SERVFAIL, "dns_server_failure"),
        (failures.DNS_REFUSED, "dns_server_failure"),
        (failures.DNS_MISBEHAVING, "dns_server_failure"),
        (failures.GENERIC_TIMEOUT, "unknown_error"),
    ],
)
def test_dns_failure_names(ours, legacy):
    assert dns_failure(ours) == legacy


@pytest.mark.parametrize(
    "ours, legacy",
    [
        (None, None),
        (failures.CONNECTION_REFUSED, "connection_refused_error"),
        (failures.GENERIC_TIMEOUT, "generic_timeout_error"),
        (failures.DNS_NXDOMAIN, "dns_lookup_error"),
        ("dns_bogon_error", "dns_lookup_error"),  # OONI's, in imported measurements
        (failures.CONNECTION_RESET, "connection_reset"),
        (failures.SSL_INVALID_HOSTNAME, "ssl_invalid_hostname"),
    ],
)
def test_http_failure_names(ours, legacy):
    assert http_failure(ours) == legacy


def test_header_names_as_go_spells_them():
    assert go_header_name("content-type") == "Content-Type"
    assert go_header_name("X-LAB-PAGE-ID") == "X-Lab-Page-Id"
    assert go_header_name("weird header") == "weird header"  # invalid: unchanged, as Go does


def test_http_result_success_and_failure():
    hop = HTTPRequest(
        url="https://example.org/",
        status_code=200,
        headers=[["set-cookie", "a=1"], ["Set-Cookie", "b=2"], ["server", "x"]],
        title="Example",
        body_length=1234,
    )
    assert http_result(hop) == {
        "body_length": 1234,
        "discovered_h3_endpoint": "",
        "failure": None,
        "title": "Example",
        "headers": {"Set-Cookie": "a=1", "Server": "x"},
        "status_code": 200,
    }
    failed = http_result(HTTPRequest(url="x", failure=failures.CONNECTION_REFUSED))
    assert (failed["status_code"], failed["body_length"]) == (-1, -1)
    assert failed["failure"] == "connection_refused_error"
    assert http_result(None)["failure"] == "dns_lookup_error"  # DNS gave no address


@pytest.mark.asyncio
async def test_handle_request_refuses_everything_private_without_touching_the_network(
    monkeypatch,
):
    # An IP-literal URL needs no DNS, and every address is a bogon: a complete answer comes
    # back without a single packet (the resolver given does not even exist). Any connect
    # attempt is caught here, before it reaches the network.
    attempts = []

    async def no_connect(ip, port, timeout):
        attempts.append((ip, port))
        raise ConnectionRefusedError("the test forbids connecting")

    monkeypatch.setattr(connections, "open_tcp", no_connect)
    context = HelperContext(
        resolver=parse_resolver("udp://192.0.2.1:9"), ssl_context=client_context()
    )
    try:
        answer = await handle_request(
            request("http://10.0.0.1/admin", [f"{ip}:80" for ip in BOGONS] + ["[::1]:443"]),
            context,
        )
    finally:
        await context.aclose()
    assert attempts == []
    check_response(answer)  # our own client accepts it
    assert set(answer["tcp_connect"]) == {f"{ip}:80" for ip in BOGONS} | {"[::1]:443"}
    for entry in answer["tcp_connect"].values():
        assert entry == {"status": False, "failure": REFUSED_BOGON}
    assert answer["tls_handshake"] == {}
    assert answer["dns"] == {"failure": None, "addrs": ["10.0.0.1"]}
    assert answer["http_request"]["status_code"] == -1
    assert answer["http_request"]["failure"] == REFUSED_BOGON
    assert answer["ip_info"]["10.0.0.1"]["flags"] == FLAG_PROBE | FLAG_HELPER | FLAG_BOGON
    assert answer["ip_info"]["::1"]["flags"] == FLAG_PROBE | FLAG_BOGON
    assert answer["quic_handshake"] == {} and answer["http3_request"] is None


@pytest.mark.asyncio
async def test_handle_request_validates():
    context = HelperContext(
        resolver=parse_resolver("udp://192.0.2.1:9"), ssl_context=client_context()
    )
    try:
        with pytest.raises(BadRequest):
            await handle_request({"http_request": "gopher://example.org/"}, context)
    finally:
        await context.aclose()


# ---------------------------------------------------------------- ASN database

ASN_TSV = """\
# iptoasn.com ip2asn-combined, abridged
1.0.0.0\t1.0.0.255\t13335\tUS\tCLOUDFLARENET

1.0.4.0\t1.0.7.255\t38803\tAU\tWPL-AS-AP Wirefreebroadband Pty Ltd
1.0.8.0\t1.0.15.255\t0\tNone\tNot routed
2001:4860::\t2001:4860:ffff:ffff:ffff:ffff:ffff:ffff\t15169\tUS\tGOOGLE
"""


def test_asn_lookup(tmp_path):
    path = tmp_path / "ip2asn.tsv"
    path.write_text(ASN_TSV)
    db = AsnDB.load(path)
    assert len(db) == 4
    assert db.lookup("1.0.0.0") == 13335
    assert db.lookup("1.0.0.255") == 13335
    assert db.lookup("1.0.1.0") == 0  # a gap
    assert db.lookup("1.0.5.17") == 38803
    assert db.lookup("1.0.9.1") == 0  # not routed
    assert db.lookup("0.255.255.255") == 0  # before the first range
    assert db.lookup("9.9.9.9") == 0  # after the last
    assert db.lookup("2001:4860:4860::8888") == 15169
    assert db.lookup("[2001:4860:4860::8888]") == 15169
    assert db.lookup("2001:4861::1") == 0
    assert db.lookup("::ffff:1.0.0.7") == 13335  # IPv4-mapped: judged by its IPv4 part
    assert db.lookup("not an address") == 0


def test_asn_gzip(tmp_path):
    path = tmp_path / "ip2asn.tsv.gz"
    path.write_bytes(gzip.compress(ASN_TSV.encode()))
    assert AsnDB.load(path).lookup("1.0.6.1") == 38803


@pytest.mark.parametrize(
    "line, reason",
    [
        ("1.0.16.0 1.0.16.255 5 XX spaces", "separated by tabs"),
        ("1.0.16.0\t1.0.16.300\t5\tXX\tbad", "bad address"),
        ("1.0.16.0\t2001:db8::\t5\tXX\tmixed", "mixes"),
        ("1.0.17.0\t1.0.16.0\t5\tXX\tbackwards", "after its end"),
        ("1.0.16.0\t1.0.16.255\tfive\tXX\tbad", "bad AS number"),
    ],
)
def test_asn_bad_line_names_file_and_line(tmp_path, line, reason):
    path = tmp_path / "db.tsv"
    path.write_text(ASN_TSV + line + "\n")
    with pytest.raises(AsnDBError, match=reason) as info:
        AsnDB.load(path)
    assert str(info.value).startswith(f"{path}:7:")


def test_asn_overlap_names_the_line(tmp_path):
    path = tmp_path / "db.tsv"
    path.write_text(ASN_TSV + "1.0.5.0\t1.0.5.255\t1\tXX\toverlap\n")
    with pytest.raises(AsnDBError, match=r"db.tsv:7: range overlaps the one on line 4"):
        AsnDB.load(path)


# ---------------------------------------------------------------- the server, in the lab


class Helper:
    """A helper process in the lab's net namespace, its stderr collected line by line."""

    def __init__(self, lab, port: int, resolver: str, cli: bool = False, **config) -> None:
        self.lab = lab
        self.url = f"http://{lab.HELPER_IP}:{port}/"
        options = {
            "host": lab.HELPER_IP,  # config may say "0.0.0.0": HELPER_IP is still reached
            "port": port,
            "ca_file": lab.ca_file,
            "asn_db": lab.asn_db,
            **config,
        }
        code = (
            "from probe.net.resolvers import parse_resolver\n"
            "from probe.helper import HelperConfig, HelperTimeouts, serve\n"
            f"serve(HelperConfig(resolver=parse_resolver({resolver!r}), **{options!r}))\n"
        )
        argv = [sys.executable, "-c", code]
        if cli:  # through the command line, as an operator starts it
            argv = [sys.executable, "-m", "probe.cli", "helper", "serve",
                    "--listen", f"{lab.HELPER_IP}:{port}", "--resolver", resolver,
                    "--ca-file", lab.ca_file, "--asn-db", lab.asn_db]  # fmt: skip
        self.proc = lab.spawn(
            lab.net,
            argv,
            env={"PYTHONPATH": str(REPO_ROOT)},
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
        )
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()
        if not self._ready.wait(20):
            raise RuntimeError(f"the helper did not start:\n{''.join(self.lines)}")

    def _drain(self) -> None:
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace")
            self.lines.append(line)
            if line.startswith("listening on "):
                self._ready.set()

    def log(self) -> str:
        return "".join(self.lines)

    def wait(self) -> int:
        code = self.proc.wait(15)
        self._thread.join(5)  # everything it wrote is in self.lines
        return code

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait()


@pytest.fixture(scope="module")
def helper(lab):
    h = Helper(lab, 80, f"udp://{lab.CONTROL_RESOLVER}")
    yield h
    h.stop()


@pytest.fixture(scope="module")
def small_helper(lab):
    """At most one measurement in flight, 1 KiB bodies, impatient with slow clients."""
    h = Helper(
        lab,
        8080,
        f"udp://{lab.CONTROL_RESOLVER}",
        max_in_flight=1,
        max_request_bytes=1024,
        read_timeout=1.0,
        idle_timeout=1.0,
    )
    yield h
    h.stop()


@pytest.fixture(scope="module")
def isp_helper(lab):
    """A helper (mis)configured to use the ISP's lying resolver: its DNS can answer bogons."""
    h = Helper(lab, 8081, f"udp://{lab.ISP_RESOLVER}")
    yield h
    h.stop()


POST = """
import httpx, json
body = {body}
try:
    r = httpx.post({url!r}, content=body if isinstance(body, bytes) else json.dumps(body).encode(),
                   headers={{"content-type": "application/json"}}, timeout={timeout})
    try:
        data = r.json()
    except ValueError:
        data = None
    print(json.dumps({{"status": r.status_code, "headers": dict(r.headers), "json": data}}))
except httpx.HTTPError as exc:
    print(json.dumps({{"status": None, "error": repr(exc)}}))
"""


def post(lab, url: str, body, timeout: float = 40) -> dict:
    """POST ``body`` (a JSON-able object, or raw bytes) from the vantage; status and answer."""
    code = POST.format(body=repr(body), url=url, timeout=timeout)
    out = lab.python(lab.vantage, code, timeout=timeout + 20)
    return json.loads(out.strip().splitlines()[-1])


def measure(lab, helper: Helper, body: dict) -> dict:
    reply = post(lab, helper.url, body)
    assert reply["status"] == 200, reply
    assert reply["headers"]["server"].startswith("probe-helper/")
    return check_response(reply["json"])


def test_lab_hello(lab, helper):
    out = lab.python(
        lab.vantage,
        f"import httpx; r = httpx.get({helper.url!r}); print(r.status_code, r.text)",
    )
    assert out.split(" ", 1) == ["200", '{"message":"Hello OONItarian!"}\n']


def test_lab_https_site_full_answer(lab, helper):
    site = lab.site("www.azattyk.org")
    answer = measure(lab, helper, request(site.url("https"), [f"{site.ip}:443"]))
    key = f"{site.ip}:443"
    assert answer["dns"] == {"failure": None, "addrs": [site.ip]}
    assert answer["tcp_connect"] == {key: {"status": True, "failure": None}}
    assert answer["tls_handshake"] == {
        key: {"server_name": site.host, "status": True, "failure": None}
    }
    http = answer["http_request"]
    assert http["status_code"] == 200 and http["failure"] is None
    assert http["title"] == "www.azattyk.org — lab news"
    assert http["body_length"] > 1000
    assert http["headers"]["X-Lab-Site"] == site.host
    assert http["headers"]["Content-Type"].startswith("text/html")
    assert answer["ip_info"] == {
        site.ip: {
            "asn": lab.outlet_asn(site.ip),
            "flags": FLAG_PROBE | FLAG_HELPER | FLAG_VALID_TLS,
        }
    }


def test_lab_http_site_checks_80_and_443(lab, helper):
    site = lab.site("24.kg")
    answer = measure(lab, helper, request(site.url("http"), [f"{site.ip}:80"]))
    assert answer["tcp_connect"] == {
        f"{site.ip}:80": {"status": True, "failure": None},
        f"{site.ip}:443": {"status": True, "failure": None},
    }
    assert list(answer["tls_handshake"]) == [f"{site.ip}:443"]  # TLS only on 443
    assert answer["tls_handshake"][f"{site.ip}:443"]["status"] is True
    assert answer["http_request"]["status_code"] == 200
    assert answer["http_request"]["title"] == "24.kg — lab news"


def test_lab_redirects_followed_and_nxdomain(lab, helper):
    site = lab.site("example.org")
    answer = measure(lab, helper, request(site.url("https", "/redirect/3")))
    assert answer["http_request"]["status_code"] == 200
    assert answer["http_request"]["title"] == "example.org — lab news"
    # only the helper resolved it: flags 2 (+8 for the valid certificate)
    assert answer["ip_info"][site.ip]["flags"] == FLAG_HELPER | FLAG_VALID_TLS

    answer = measure(lab, helper, request("https://no-such-site.kg/"))
    assert answer["dns"] == {"failure": "dns_name_error", "addrs": []}
    assert answer["http_request"]["failure"] == "dns_lookup_error"
    assert answer["http_request"]["status_code"] == -1
    assert answer["tcp_connect"] == {}


def test_lab_site_down(clean_lab, helper):
    lab = clean_lab
    site = lab.site("kloop.kg")
    lab.site_down(site.ip)
    answer = measure(lab, helper, request(site.url("https"), [f"{site.ip}:443"]))
    assert answer["tcp_connect"][f"{site.ip}:443"] == {
        "status": False,
        "failure": "connection_refused_error",
    }
    assert answer["tls_handshake"] == {}
    http = answer["http_request"]
    assert (http["status_code"], http["body_length"]) == (-1, -1)
    assert http["failure"] == "connection_refused_error"
    assert answer["ip_info"][site.ip]["flags"] == FLAG_PROBE | FLAG_HELPER  # no valid TLS


def test_lab_wrong_certificate(lab, helper):
    site = lab.add_site("wrong-cert.kg", cert="wrong-name")
    try:
        answer = measure(lab, helper, request(site.url("https"), [f"{site.ip}:443"]))
    finally:
        lab.remove_site("wrong-cert.kg")
    tls = answer["tls_handshake"][f"{site.ip}:443"]
    assert tls == {"server_name": site.host, "status": False, "failure": "ssl_invalid_hostname"}
    assert answer["tcp_connect"][f"{site.ip}:443"]["status"] is True
    assert answer["http_request"]["failure"] == "ssl_invalid_hostname"
    assert not answer["ip_info"][site.ip]["flags"] & FLAG_VALID_TLS


# ---------------------------------------------------------------- each endpoint once


@contextlib.contextmanager
def net_rules(lab, rules: list[list[str]]):
    """iptables rules inserted at the head of net's OUTPUT chain (where the helper's own
    connections leave from, to the outlets on lo or beyond), removed afterwards."""
    added: list[list[str]] = []
    try:
        for rule in rules:
            lab.run(lab.net, ["iptables", "-w", "-I", "OUTPUT", *rule]).check_returncode()
            added.append(rule)
        yield
    finally:
        for rule in added:
            lab.run(lab.net, ["iptables", "-w", "-D", "OUTPUT", *rule])


@contextlib.contextmanager
def helper_connections(lab, endpoints: list[tuple[str, int]]):
    """Counts the TCP connections opened from net (the helper's) to each ``(ip, port)``: a
    rule without a target per endpoint, counting its SYNs. Yields a function that returns the
    counts so far as ``{(ip, port): n}``."""
    rules = [
        ["-p", "tcp", "--syn", "-d", ip, "--dport", str(port),
         "-m", "comment", "--comment", f"count {ip} {port}"]
        for ip, port in endpoints
    ]  # fmt: skip

    def counts() -> dict[tuple[str, int], int]:
        listing = lab.run(lab.net, ["iptables", "-w", "-L", "OUTPUT", "-n", "-v", "-x"])
        found = {}
        for line in listing.stdout.splitlines():
            match = re.search(r"/\* count (\S+) (\d+) \*/", line)
            if match:
                found[(match[1], int(match[2]))] = int(line.split()[0])
        return found

    with net_rules(lab, rules):
        yield counts


def spare_outlet_ips(lab, n: int) -> list[str]:
    """``n`` outlet addresses no site uses (from the top of the range down)."""
    used = {ip for site in lab.sites.values() for ip in site.ips}
    free = [f"192.88.99.{i}" for i in range(250, 99, -1) if f"192.88.99.{i}" not in used]
    return free[:n]


OK = {"status": True, "failure": None}


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_lab_each_endpoint_is_connected_to_once(lab, helper, scheme):
    # The endpoints are the helper's own addresses (as for any uncensored site): the fetch's
    # own connects and handshakes answer for them, so each address sees one connection per
    # port and request (TLS on :443), not a check and then a fetch.
    site = lab.add_site("twice.lab-helper.kg", extra_ips=spare_outlet_ips(lab, 1))
    try:
        ports = [443] if scheme == "https" else [80, 443]
        endpoints = [(ip, port) for ip in site.ips for port in ports]
        sent = endpoints_for(site.ips, ports[0], scheme, False)
        with helper_connections(lab, endpoints) as counts:
            answer = measure(lab, helper, request(site.url(scheme), sent))
            counted = counts()
    finally:
        lab.remove_site(site.name)
    assert counted == {endpoint: 1 for endpoint in endpoints}  # before: 2 each
    assert answer["tcp_connect"] == {f"{ip}:{port}": OK for ip, port in endpoints}
    assert answer["tls_handshake"] == {
        f"{ip}:443": {"server_name": site.host, "status": True, "failure": None} for ip in site.ips
    }
    assert sorted(answer["dns"]["addrs"]) == sorted(site.ips)
    assert answer["http_request"]["status_code"] == 200
    for ip in site.ips:
        assert answer["ip_info"][ip]["flags"] == FLAG_PROBE | FLAG_HELPER | FLAG_VALID_TLS


def test_lab_endpoints_the_helper_did_not_resolve_are_checked(lab, helper):
    # The probe's DNS was lied to: its endpoints are the ISP's block notice (HTTP on 80, and
    # HTTPS on 443 with a certificate for another name). The helper's fetch never goes there,
    # so it checks them, with TLS on 443 only; its own address is measured by the fetch.
    site = lab.site("kloop.kg")
    notice = lab.NOTICE_IP
    endpoints = [(notice, 80), (notice, 443), (site.ip, 80), (site.ip, 443)]
    with helper_connections(lab, endpoints) as counts:
        answer = measure(
            lab, helper, request(site.url("http"), endpoints_for([notice], 80, "http", False))
        )
        counted = counts()
    assert counted == {endpoint: 1 for endpoint in endpoints}  # before: 2 to the site's
    assert answer["tcp_connect"] == {f"{ip}:{port}": OK for ip, port in endpoints}
    assert answer["tls_handshake"] == {
        f"{notice}:443": {
            "server_name": site.host,
            "status": False,
            "failure": failures.SSL_INVALID_HOSTNAME,
        },
        f"{site.ip}:443": {"server_name": site.host, "status": True, "failure": None},
    }
    assert answer["ip_info"][notice]["flags"] == FLAG_PROBE
    assert answer["ip_info"][site.ip]["flags"] == FLAG_HELPER | FLAG_VALID_TLS
    assert answer["http_request"]["title"] == "kloop.kg — lab news"


def test_lab_addresses_beyond_the_fetch_cap_are_checked(lab, helper):
    # The fetch connects to at most MAX_ADDRESSES_PER_FAMILY addresses per family; the helper
    # measures up to MAX_OWN_ADDRESSES of its own. The ones beyond the fetch's cap are checked
    # apart: every address once, with TLS.
    ips = spare_outlet_ips(lab, MAX_ADDRESSES_PER_FAMILY + 2)
    site = lab.add_site("many.lab-helper.kg", ip=ips[0], extra_ips=ips[1:])
    try:
        with helper_connections(lab, [(ip, 443) for ip in ips]) as counts:
            answer = measure(lab, helper, request(site.url("https"), [f"{ips[0]}:443"]))
            counted = counts()
    finally:
        lab.remove_site(site.name)
    assert sorted(answer["dns"]["addrs"]) == sorted(ips)
    assert counted == {(ip, 443): 1 for ip in ips}  # before: 2 to the first 8
    assert answer["tcp_connect"] == {f"{ip}:443": OK for ip in ips}
    assert answer["tls_handshake"] == {
        f"{ip}:443": {"server_name": site.host, "status": True, "failure": None} for ip in ips
    }
    assert answer["http_request"]["status_code"] == 200


IN_PROCESS = """
import asyncio, json
from probe.helper import HelperContext, HelperTimeouts, handle_request
from probe.net.connections import client_context
from probe.net.resolvers import parse_resolver

async def main():
    context = HelperContext(resolver=parse_resolver({resolver!r}),
                            ssl_context=client_context({ca_file!r}),
                            timeouts=HelperTimeouts(**{timeouts!r}))
    try:
        print(json.dumps(await handle_request({body!r}, context)))
    finally:
        await context.aclose()

asyncio.run(main())
"""


def measure_in_net(lab, body: dict, **timeouts: float) -> dict:
    """handle_request in a process of its own in net, with the given HelperTimeouts."""
    code = IN_PROCESS.format(
        resolver=f"udp://{lab.CONTROL_RESOLVER}", ca_file=lab.ca_file, timeouts=timeouts, body=body
    )
    return check_response(json.loads(lab.python(lab.net, code).strip().splitlines()[-1]))


def test_lab_fetch_out_of_time_keeps_its_connects(lab):
    # The page comes after the fetch's deadline: the connect and handshake the fetch made
    # before still answer for the endpoint (one connection, no second check).
    site = lab.site("akipress.org")
    with helper_connections(lab, [(site.ip, 443)]) as counts:
        answer = measure_in_net(
            lab, request(site.url("https", "/delay/4000"), [f"{site.ip}:443"]), http=1.0
        )
        counted = counts()
    assert counted == {(site.ip, 443): 1}
    assert answer["tcp_connect"] == {f"{site.ip}:443": OK}
    assert answer["tls_handshake"][f"{site.ip}:443"]["status"] is True
    assert answer["http_request"]["failure"] == "generic_timeout_error"


def test_lab_fetch_out_of_time_while_connecting_then_endpoint_checked(lab):
    # The helper's SYNs to the site vanish, and the fetch's deadline (1.5 s) comes before its
    # connect gives up (3 s): the fetch has no record of the endpoint, which is checked then.
    site = lab.site("factcheck.kg")
    drop = ["-p", "tcp", "--syn", "-d", site.ip, "--dport", "443", "-j", "DROP"]
    with net_rules(lab, [drop]):
        answer = measure_in_net(
            lab, request(site.url("https"), [f"{site.ip}:443"]), dns=1.0, http=0.5, tcp=3.0
        )
    assert answer["tcp_connect"] == {
        f"{site.ip}:443": {"status": False, "failure": "generic_timeout_error"}
    }
    assert answer["tls_handshake"] == {}
    assert answer["http_request"]["failure"] == "generic_timeout_error"


LISTENER = """
import socket, sys, threading, time
addrs = {addrs!r}
socks = []
for ip in addrs:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, 80))
    s.listen(16)
    socks.append(s)
def accept(s):
    while True:
        c, peer = s.accept()
        print("accept", s.getsockname()[0], flush=True)
        c.close()
for s in socks:
    threading.Thread(target=accept, args=(s,), daemon=True).start()
print("ready", flush=True)
time.sleep(3600)
"""


@pytest.fixture
def bogon_listeners(lab):
    """Listeners on :80 of 127.0.0.1, 10.0.0.1, 192.168.1.1 and 169.254.169.254 in net.

    Those addresses are added to net's loopback for the test (so a connection, if the helper
    made one, would succeed and be seen) and removed afterwards.
    """
    extra = [ip for ip in BOGONS if ip != "127.0.0.1"]
    for ip in extra:
        lab.run(lab.net, ["ip", "addr", "add", f"{ip}/32", "dev", "lo"]).check_returncode()
    proc = lab.spawn(
        lab.net,
        [sys.executable, "-u", "-c", LISTENER.format(addrs=BOGONS)],
        stdout=subprocess.PIPE,
    )
    accepts: list[str] = []
    ready = threading.Event()

    def drain():
        for raw in proc.stdout:
            line = raw.decode().strip()
            if line == "ready":
                ready.set()
            elif line.startswith("accept "):
                accepts.append(line.split()[1])

    threading.Thread(target=drain, daemon=True).start()
    try:
        assert ready.wait(10), "listener did not start"
        yield accepts
    finally:
        proc.kill()
        proc.wait(5)
        for ip in extra:
            lab.run(lab.net, ["ip", "addr", "del", f"{ip}/32", "dev", "lo"])


def _connect_from_net(lab, ip: str) -> None:
    lab.python(lab.net, f"import socket; socket.create_connection(({ip!r}, 80), 5).close()")


def wait_until(condition, what: str, timeout: float = 30.0) -> None:
    """Until ``condition()`` holds; ``timeout`` only guards against a hang."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.02)


def assert_no_connection(lab, accepts: list[str]) -> None:
    """No connection reached a bogon listener: one more connection to each, from net, comes
    after any the helper made on that listener (one accept queue, accepted in order), so once
    they are all seen, anything else would have been too."""
    for ip in BOGONS:
        _connect_from_net(lab, ip)
    wait_until(lambda: len(accepts) >= len(BOGONS), "the listeners' accepts")
    assert sorted(accepts) == sorted(BOGONS)  # ours only: not one from the helper


def test_lab_never_connects_to_bogons(lab, helper, bogon_listeners):
    accepts = bogon_listeners
    # The listeners work: a connection from inside net to each is seen.
    assert_no_connection(lab, accepts)  # (nothing to see yet: this checks the listeners)
    accepts.clear()

    site = lab.site("24.kg")
    endpoints = [f"{ip}:80" for ip in BOGONS] + [f"{ip}:443" for ip in BOGONS]
    answer = measure(lab, helper, request(site.url("http"), [*endpoints, f"{site.ip}:80"]))
    for endpoint in endpoints:
        assert answer["tcp_connect"][endpoint] == {"status": False, "failure": REFUSED_BOGON}
        assert endpoint not in answer["tls_handshake"]
    for ip in BOGONS:
        assert answer["ip_info"][ip] == {"asn": 0, "flags": FLAG_PROBE | FLAG_BOGON}
    assert answer["tcp_connect"][f"{site.ip}:80"]["status"] is True  # the real one measured
    assert answer["http_request"]["status_code"] == 200

    # IP-literal URLs naming a bogon: no fetch either.
    for ip in BOGONS:
        answer = measure(lab, helper, request(f"http://{ip}/latest/meta-data/"))
        assert answer["http_request"]["failure"] == REFUSED_BOGON
        assert answer["http_request"]["status_code"] == -1
        assert answer["tcp_connect"] == {}  # the helper's own bogon is not even listed
        assert answer["ip_info"][ip]["flags"] == FLAG_HELPER | FLAG_BOGON

    assert_no_connection(lab, accepts)  # not a single connection reached a private address


def test_lab_dns_answering_a_bogon(clean_lab, isp_helper, bogon_listeners):
    lab = clean_lab
    accepts = bogon_listeners
    site = lab.site("vesti.kg")
    lab.dns_lie(site.host, "10.0.0.1")
    answer = measure(lab, isp_helper, request(site.url("http")))
    assert answer["dns"] == {"failure": None, "addrs": ["10.0.0.1"]}
    assert answer["ip_info"] == {"10.0.0.1": {"asn": 0, "flags": FLAG_HELPER | FLAG_BOGON}}
    assert answer["tcp_connect"] == {}
    assert answer["http_request"]["failure"] == REFUSED_BOGON
    assert answer["http_request"]["status_code"] == -1
    assert_no_connection(lab, accepts)


REDIRECTOR = """
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        print("hit", self.path, flush=True)
        self.send_response(302)
        self.send_header("Location", {location!r})
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(({ip!r}, 80), H)
print("ready", flush=True)
server.serve_forever()
"""


def test_lab_redirect_to_a_bogon_is_not_followed(lab, helper, bogon_listeners):
    # A public server of our own in net (at an unused lab address) redirects to 10.0.0.1.
    accepts = bogon_listeners
    ip = "192.88.99.90"
    lab.run(lab.net, ["ip", "addr", "add", f"{ip}/32", "dev", "lo"]).check_returncode()
    proc = lab.spawn(
        lab.net,
        [sys.executable, "-u", "-c", REDIRECTOR.format(ip=ip, location="http://10.0.0.1/")],
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout.readline().strip() == b"ready", "the redirector did not start"
        answer = measure(lab, helper, request(f"http://{ip}/start"))
    finally:
        proc.kill()
        hits = proc.stdout.read().decode()
        proc.wait(5)
        lab.run(lab.net, ["ip", "addr", "del", f"{ip}/32", "dev", "lo"])
    assert "hit /start" in hits  # the first hop was fetched ...
    assert answer["http_request"]["failure"] == REFUSED_BOGON  # ... the redirect refused
    assert answer["http_request"]["status_code"] == -1
    assert_no_connection(lab, accepts)


def test_lab_bad_requests(lab, helper, small_helper):
    reply = post(lab, helper.url, b"this is not json")
    assert reply["status"] == 400 and "JSON" in reply["json"]["error"]
    reply = post(lab, helper.url, {"http_request": "ftp://24.kg/"})
    assert reply["status"] == 400 and "http" in reply["json"]["error"]
    reply = post(lab, helper.url, [1, 2, 3])
    assert reply["status"] == 400
    reply = post(lab, helper.url, b"[" * 60000)  # deep nesting, within the size limit
    assert reply["status"] == 400
    # over the size limit: 413, before the body is read
    reply = post(lab, helper.url, {"http_request": "https://24.kg/", "pad": "x" * 70000})
    assert reply["status"] == 413, reply
    assert reply["headers"]["server"].startswith("probe-helper/")
    reply = post(lab, small_helper.url, request("https://24.kg/", pad="x" * 2000))
    assert reply["status"] == 413, reply
    # the server is still fine
    assert measure(lab, helper, request("https://24.kg/"))["http_request"]["status_code"] == 200


RAW = """
import socket, time
s = socket.create_connection(({host!r}, {port}), 5)
s.settimeout(10)
s.sendall({data!r})
out = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    out += chunk
print(repr(out))  # the whole answer, up to the server's close
"""


def raw(lab, helper: Helper, data: bytes) -> bytes:
    port = int(helper.url.rsplit(":", 1)[1].strip("/"))
    out = lab.python(lab.vantage, RAW.format(host=lab.HELPER_IP, port=port, data=data))
    return eval(out.strip())  # noqa: S307 - our own repr() of bytes


def test_lab_http_layer(lab, small_helper):
    # garbage request line
    out = raw(lab, small_helper, b"HELLO\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 ")
    # unknown path, unsupported method
    # HTTP/1.1 without Host: 400 (RFC 9112; the shared server's h11 is strict, on purpose)
    out = raw(lab, small_helper, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 ") and b"Host" in out
    out = raw(lab, small_helper, b"GET /admin HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 404 ")
    out = raw(lab, small_helper, b"DELETE / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 405 ")
    # chunked bodies are not accepted
    out = raw(
        lab, small_helper, b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    assert out.startswith(b"HTTP/1.1 411 ")
    # keep-alive: two requests on one connection, then the idle timeout closes it
    # (the client's read ends on that close: it would raise at its own 10 s timeout instead)
    out = raw(lab, small_helper, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n" * 2)
    assert out.count(b"HTTP/1.1 200 OK") == 2 and out.count(b"Hello OONItarian!") == 2
    assert b"\r\nServer: probe-helper/" in out
    # a slow client is cut off after read_timeout, with a 408
    out = raw(lab, small_helper, b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 50\r\n\r\n{")
    assert out.startswith(b"HTTP/1.1 408 "), out


def test_lab_sheds_load_beyond_max_in_flight(lab, small_helper):
    slow = lab.site("akipress.org").url("https", "/delay/3000")
    code = f"""
import httpx, json, threading, time
def ask(url, out):
    r = httpx.post({small_helper.url!r}, json={{"http_request": url, "tcp_connect": []}},
                   timeout=40)
    out.append((r.status_code, r.headers.get("retry-after"), time.monotonic()))
# The slow one started, then asked until shed; should ours take the slot first (the slow
# one is then shed itself), again. A safety bound only against a hang; "in_flight" says
# the slow one was still unanswered when ours was shed.
deadline = time.monotonic() + 60
while True:
    first, second, third = [], [], []
    t = threading.Thread(target=ask, args=({slow!r}, first))
    t.start()
    while t.is_alive() and (not second or second[-1][0] != 503):
        ask("https://24.kg/", second)
    in_flight = t.is_alive()
    t.join()
    if first[0][0] == 200 and second and second[-1][0] == 503:
        break
    assert time.monotonic() < deadline, "never shed"
ask("https://24.kg/", third)
print(json.dumps([first[0], second[-1], third[0], in_flight]))
"""
    out = lab.python(lab.vantage, code).strip().splitlines()[-1]
    first, second, third, in_flight = json.loads(out)
    assert second[:2] == [503, "1"]  # shed while the slow one was in flight
    assert in_flight  # ... at once, not after it
    assert first[0] == 200
    assert third[0] == 200  # capacity is back


def test_lab_log_lines_without_client_addresses(lab, helper):
    logged = len(helper.lines)
    measure(lab, helper, request("https://24.kg/"))
    wait_until(lambda: any("POST / 200" in line for line in helper.lines[logged:]), "its line")
    log = helper.log()
    assert "POST / 200" in log and "https://24.kg" in log
    assert lab.VANTAGE_IP not in log
    assert "192.88.99.1 " not in log and "192.88.99.1:" not in log  # nor the router's


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_lab_stops_cleanly_on_signals(lab, signum):
    h = Helper(lab, 8082, f"udp://{lab.CONTROL_RESOLVER}")
    assert h.proc.poll() is None
    h.proc.send_signal(signum)
    assert h.wait() == 0
    assert "Traceback" not in h.log()
    assert "stopping" in h.log()
    out = lab.python(
        lab.vantage,
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(({lab.HELPER_IP!r}, 8082), 3); print('open')\n"
        "except OSError as e:\n"
        "    print('closed')\n",
    )
    assert out.strip() == "closed"


def test_lab_started_from_the_command_line(lab):
    h = Helper(lab, 8083, f"udp://{lab.CONTROL_RESOLVER}", cli=True)
    try:
        site = lab.site("factcheck.kg")
        answer = measure(lab, h, request(site.url("https"), [f"{site.ip}:443"]))
        assert answer["http_request"]["title"] == "factcheck.kg — lab news"
        assert answer["ip_info"][site.ip]["asn"] == lab.outlet_asn(site.ip)
    finally:
        assert h.stop() == 0


def test_lab_serves_https(lab, tmp_path):
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert(lab.HELPER_IP)
    ca_pem, chain, key = tmp_path / "ca.pem", tmp_path / "chain.pem", tmp_path / "key.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    cert.private_key_pem.write_to_path(str(key))
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    h = Helper(lab, 8443, f"udp://{lab.CONTROL_RESOLVER}", certfile=str(chain), keyfile=str(key))
    try:
        url = f"https://{lab.HELPER_IP}:8443/"
        out = lab.python(
            lab.vantage,
            "import httpx, json\n"
            f"r = httpx.post({url!r}, json={request('https://24.kg/')!r}, "
            f"verify={str(ca_pem)!r}, timeout=40)\n"
            "print(r.status_code, r.json()['http_request']['status_code'])\n",
        )
        assert out.split() == ["200", "200"]
        # plain HTTP to the TLS port gets nothing useful
        reply = raw(lab, h, b"GET / HTTP/1.1\r\n\r\n")
        assert b"Hello OONItarian" not in reply
    finally:
        assert h.stop() == 0


# ---------------------------------------------------------------- the helper's URL (probe check)


@pytest.mark.parametrize(
    "url, reason",
    [
        ("http://192.88.99.80:0/", "bad port"),
        ("http://192.88.99.80:99999/", "bad port"),
        ("https://[2001:db8::1]:65536/", "bad port"),
        ("http://helper.example:-1/", "bad port"),
        ("http://helper.example:+80/", "bad port"),
        ("http://:80/", "no host"),
        ("https:///", "no host"),
        ("https://user:secret@helper.example/", "user names and passwords"),
        ("https://user@helper.example/", "user names and passwords"),
        ("https://helper.example\n/", "white space or control"),
        ("https://helper.exa\x00mple/", "white space or control"),
        ("https://[2001:db8::1/", "Invalid IPv6"),
        ("ftp://helper.example/", "http:// or https://"),
        ("helper.example:443", "http:// or https://"),
    ],
)
def test_bad_helper_urls_are_input_errors(url, reason):
    with pytest.raises(InputError, match=reason) as info:
        parse_helper_url(url)
    assert str(info.value).startswith(f"--helper {url!r}: ")


@pytest.mark.parametrize(
    "url", ["https://0.th.ooni.org/", "http://192.88.99.80:8080/", "https://[2001:db8::1]:443/"]
)
def test_good_helper_urls_pass(url):
    assert parse_helper_url(url) == url


def test_cli_bad_helper_url_exits_2_before_measuring(tmp_path):
    from click.testing import CliRunner

    from probe.cli import cli

    db = tmp_path / "probe.db"
    result = CliRunner().invoke(
        cli, ["check", "--input", "https://24.kg/", "--helper", "http://h.kg:0/", "--db", db]
    )
    assert result.exit_code == 2, result.output
    assert "--helper 'http://h.kg:0/': bad port" in result.output
    assert "Traceback" not in result.output
    assert not db.exists()


# ---------------------------------------------------------------- hostile sites and clients


@contextlib.contextmanager
def own_server(lab, ip: str, code: str):
    """Run ``code`` (a server listening on ``ip``) in net, ``ip`` added to net's loopback;
    yields the process (stdout piped); killed and the address removed afterwards."""
    lab.run(lab.net, ["ip", "addr", "add", f"{ip}/32", "dev", "lo"]).check_returncode()
    proc = lab.spawn(lab.net, [sys.executable, "-u", "-c", code], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"ready", "the server did not start"
        yield proc
    finally:
        proc.kill()
        proc.wait(5)
        lab.run(lab.net, ["ip", "addr", "del", f"{ip}/32", "dev", "lo"])


ENDLESS = """
import socket, threading
started = {started!r}
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(({ip!r}, 80))
srv.listen(64)
def serve(conn):
    try:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Type: text/html\\r\\n" + {head!r})
        open(started, "w").close()  # the hostile fetch is under way
        body = {body}
        while True:
            conn.sendall(body)
    except OSError:
        pass
    finally:
        conn.close()
print("ready", flush=True)
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""
# Empty stored deflate blocks: a gzip body that never decompresses to a single byte, so a
# client counting decoded bytes against its cap reads forever.
ENDLESS_BODIES = {
    "gzip-of-nothing": (
        b"Content-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"a\r\n\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff\r\n",
        'b"c350\\r\\n" + b"\\x00\\x00\\x00\\xff\\xff" * 10000 + b"\\r\\n"',
    ),
    # one chunk of 2**48 bytes, sent as fast as the socket takes it
    "huge-chunk": (b"Transfer-Encoding: chunked\r\n\r\nffffffffffff\r\n", 'b"x" * 65536'),
}

CONCURRENT = """
import httpx, json, os, threading, time
def ask(body, out):
    try:
        r = httpx.post({url!r}, json=body, timeout={timeout})
        out.append([r.status_code, r.json()])
    except httpx.HTTPError as exc:
        out.append([None, repr(exc)])
hostile, normal = [], []
t = threading.Thread(target=ask, args=({{"http_request": {hostile!r}, "tcp_connect": []}}, hostile))
t.start()
deadline = time.monotonic() + 30  # only against a hang
while not os.path.exists({started!r}):  # until the hostile fetch is under way
    assert time.monotonic() < deadline and t.is_alive(), "the hostile fetch never started"
    time.sleep(0.01)
ask({{"http_request": {normal!r}, "tcp_connect": []}}, normal)
t.join()
print(json.dumps([hostile[0], normal[0]]))
"""


@pytest.mark.parametrize(
    "kind",
    [
        "gzip-of-nothing",
        "huge-chunk",
    ],
)
def test_lab_endless_body_does_not_freeze_the_helper(lab, kind, tmp_path):
    # The helper's deadline is 8 s; the site streams a gzip body that never ends. Another
    # client's request, sent while that fetch runs, must be answered, and so must the hostile
    # one (a failure string, or a 504 at the deadline).
    ip = "192.88.99.91"
    h = Helper(lab, 8090, f"udp://{lab.CONTROL_RESOLVER}", timeout=8.0)
    try:
        head, body = ENDLESS_BODIES[kind]
        started = str(tmp_path / "started")
        code = ENDLESS.format(ip=ip, head=head, body=body, started=started)
        with own_server(lab, ip, code):
            code = CONCURRENT.format(url=h.url, timeout=30, hostile=f"http://{ip}/",
                                     normal=lab.site("24.kg").url(), started=started)  # fmt: skip
            out = lab.python(lab.vantage, code, timeout=90)
        hostile, normal = json.loads(out.strip().splitlines()[-1])
    finally:
        h.proc.kill()  # a frozen helper does not answer SIGTERM
        h.wait()
    assert normal[0] == 200, normal
    assert normal[1]["http_request"]["status_code"] == 200
    assert hostile[0] in (200, 504), hostile
    if hostile[0] == 200:  # a failure string, or the page cut at the cap
        http = hostile[1]["http_request"]
        assert http["failure"] is not None or http["status_code"] == 200, http


@pytest.mark.parametrize(
    "location", ["http://192.88.99.92:99999/", "http://24.kg:99999/x", "http://[::1/", "http://:0/"]
)
def test_lab_redirect_to_a_malformed_url_is_a_failure_string(lab, helper, location):
    ip = "192.88.99.92"
    code = REDIRECTOR.format(ip=ip, location=location)
    logged = len(helper.lines)
    with own_server(lab, ip, code):
        reply = post(lab, helper.url, request(f"http://{ip}/start"))
    assert reply["status"] == 200, reply  # not a 500
    answer = check_response(reply["json"])
    http = answer["http_request"]
    assert (http["status_code"], http["body_length"]) == (-1, -1)
    assert isinstance(http["failure"], str) and http["failure"]
    assert answer["tcp_connect"][f"{ip}:80"] == {"status": True, "failure": None}
    assert "Traceback" not in "".join(helper.lines[logged:])


def test_log_escapes_what_clients_send():
    assert printable("GET /ok?q=1") == "GET /ok?q=1"
    assert printable("Яндекс.рф") == "Яндекс.рф"  # printable text is kept
    assert printable("/\x1b[31mred\x00\nnext\r") == "/\\x1b[31mred\\x00\\nnext\\r"
    assert printable("\u2028\u202e\x85\x7f\t") == "\\u2028\\u202e\\x85\\x7f\\t"
    assert printable("a\\x1b") == "a\\\\x1b"  # a literal backslash cannot pass for an escape


def test_lab_log_lines_escape_request_paths(lab, small_helper):
    # Both request lines are malformed (a bare line feed, controls in the target, a method
    # that is no token): refused with 400, and logged by their first line, escaped.
    logged = len(small_helper.lines)
    out = raw(lab, small_helper, b"GET /\x1b[2J\x1b[31mx\x00\nFAKE-200-line HTTP/1.1\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 ")
    out = raw(lab, small_helper, b"\x1b]0;title\x07 / HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 ")
    wait_until(lambda: len(small_helper.lines) >= logged + 2, "two log lines")
    lines = small_helper.lines[logged:]
    text = "".join(lines)
    assert len(lines) == 2, lines  # one line per request, no injected one
    assert "GET /\\x1b[2J\\x1b[31mx\\x00 400 " in text
    assert "FAKE-200-line" not in text
    assert "\\x1b]0;title\\x07 / 400 " in text
    assert not any(c in text for c in "\x1b\x00\x07")


FLOOD = """
import json, resource, socket, threading, httpx
resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
host, port = {host!r}, {port}
slow = []
def measure_slowly():
    r = httpx.post({url!r}, json={{"http_request": {slow_url!r}, "tcp_connect": []}}, timeout=60)
    slow.append([r.status_code, r.json()["http_request"]["status_code"]])
worker = threading.Thread(target=measure_slowly)
worker.start()
def hello(s):
    s.sendall(b"GET / HTTP/1.1\\r\\nHost: helper\\r\\n\\r\\n")
    data = b""
    while not data.endswith(b"}}"):
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1]) if data else None
idle, statuses = [], []
for _ in range({n}):  # each answered once, then left open and idle (keep-alive)
    s = socket.create_connection((host, port), 5)
    s.settimeout(10)
    statuses.append(hello(s))
    idle.append(s)
for _ in range(8):  # and slow senders, stuck in their request head
    s = socket.create_connection((host, port), 5)
    s.sendall(b"POST / HTTP/1.1\\r\\nContent-Length: 100\\r\\n")
    idle.append(s)
r = httpx.post({url!r}, json={{"http_request": {real_url!r}, "tcp_connect": []}}, timeout=60)
real = [r.status_code, r.json()]
def closed(s):
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
worker.join()
print(json.dumps({{"statuses": statuses, "real": real, "slow": slow,
                  "first_closed": closed(idle[0]), "last_open": not closed(idle[{n} - 1])}}))
"""


def test_lab_idle_connections_do_not_starve_active_ones(lab, helper):
    # 1,030 keep-alive connections left idle plus 8 stuck mid-request, over a helper allowing
    # 1,024: every new client still gets in (the idlest connections are closed for it), and
    # a measurement in flight meanwhile is not disturbed.
    slow = lab.site("akipress.org").url("https", "/delay/4000")
    code = FLOOD.format(
        host=lab.HELPER_IP,
        port=80,
        url=helper.url,
        n=1030,
        slow_url=slow,
        real_url=lab.site("kloop.kg").url(),
    )
    out = json.loads(lab.python(lab.vantage, code, timeout=120).strip().splitlines()[-1])
    assert out["statuses"] == [200] * 1030  # before: 503 for the last 6
    assert out["real"][0] == 200, out["real"]
    assert out["real"][1]["http_request"]["status_code"] == 200
    assert out["slow"] == [[200, 200]]  # busy: never pushed out
    assert out["first_closed"] and out["last_open"]  # the oldest idle went first


SPIN_CLIENTS = """
import httpx, json, os, threading, time
def ask(body, out):
    try:
        r = httpx.post({url!r}, json=body, timeout=30)
        out.append(r.status_code)
    except httpx.HTTPError as exc:
        out.append(repr(exc))
hostile, normal = [], []
t = threading.Thread(target=ask, args=({{"http_request": {hostile!r}}}, hostile))
t.start()
deadline = time.monotonic() + 30  # only against a hang
while not os.path.exists({started!r}):  # until the hostile fetch is under way
    assert time.monotonic() < deadline and t.is_alive(), "the hostile fetch never started"
    time.sleep(0.01)
n = threading.Thread(target=ask, args=({{"http_request": {normal!r}}}, normal))
n.start()
hello = httpx.get({url!r}, timeout=10).status_code
t.join()
n.join()
print(json.dumps([hostile[0], normal[0], hello]))
"""


def test_lab_helper_answers_at_its_deadline_while_a_measurement_spins(lab, tmp_path):
    # The 2**48-byte chunk once made the HTTP client read without ever yielding; measurements
    # now run on a loop of their own, so whatever one does, the server answers every client
    # (hello at once, each measurement by its 8 s deadline) and stops on SIGTERM.
    ip = "192.88.99.91"
    h = Helper(lab, 8091, f"udp://{lab.CONTROL_RESOLVER}", timeout=8.0)
    try:
        head, body = ENDLESS_BODIES["huge-chunk"]
        started = str(tmp_path / "started")
        with own_server(lab, ip, ENDLESS.format(ip=ip, head=head, body=body, started=started)):
            code = SPIN_CLIENTS.format(url=h.url, hostile=f"http://{ip}/",
                                       normal=lab.site("24.kg").url(), started=started)  # fmt: skip
            hostile, normal, hello = json.loads(lab.python(lab.vantage, code, timeout=90))
            assert hello == 200
            assert hostile in (200, 504)  # the page cut at the cap, or the deadline
            assert normal == 200
            h.proc.send_signal(signal.SIGTERM)
            assert h.wait() == 0
    finally:
        h.proc.kill()
        h.wait()
    assert "Traceback" not in h.log()


TLS_ABUSE = """
import asyncio, contextlib, json, os, socket, ssl
from probe.measure.control import HelperClient
from probe.net.kept import KeptClient
from probe.net.connections import Clock, client_context
from probe.ooni.helper_protocol import control_request

host, port, url = {host!r}, {port}, {url!r}

def abusers():
    socks = []
    for kind in range(4):
        for _ in range(20):
            s = socket.create_connection((host, port), 5)
            if kind == 0:  # garbage where a ClientHello belongs
                s.sendall(os.urandom(2048))
            elif kind == 1:  # plain HTTP to the TLS port
                s.sendall(b"POST / HTTP/1.1\\r\\nContent-Length: 2\\r\\n\\r\\n{{}}")
            elif kind == 2:  # the start of a TLS record, then nothing
                s.sendall(bytes.fromhex("160301020001"))
            socks.append(s)  # kind 3: connect and say nothing
    return socks

async def main():
    socks = abusers()
    context = client_context({ca_file!r})
    async with contextlib.aclosing(KeptClient(context, 4)) as client:
        helpers = HelperClient([url], client, concurrency=4, timeout=40)
        requests = [control_request(u, [], {{"User-Agent": "probe-test"}})
                    for u in ({site_url!r}, {site_url2!r})]
        records = await asyncio.gather(*(helpers.control(r, Clock()) for r in requests))
    # what the abusers got: nothing useful, and no answer over plain HTTP
    got = []
    for s in socks[:40]:
        s.settimeout(15)
        try:
            got.append(s.recv(65536)[:16].hex())
        except OSError as exc:
            got.append(type(exc).__name__)
    print(json.dumps({{
        "failures": [r.failure for r in records],
        "titles": [r.response["http_request"]["title"] if r.response else None for r in records],
        "abusers": got,
    }}))
    for s in socks:
        s.close()

asyncio.run(main())
"""


def test_lab_https_helper_with_abusive_clients(lab):
    # The helper serves HTTPS with a certificate from the lab's CA; probe's own helper client
    # (httpx, trusting the lab CA) gets complete answers while 80 other connections to the
    # same port send garbage, plain HTTP, half a TLS record or nothing at all.
    cert, key = lab._leaf("probe-helper-tls", [lab.HELPER_IP])
    h = Helper(lab, 8444, f"udp://{lab.CONTROL_RESOLVER}", certfile=cert, keyfile=key)
    try:
        code = TLS_ABUSE.format(
            host=lab.HELPER_IP,
            port=8444,
            url=f"https://{lab.HELPER_IP}:8444/",
            ca_file=lab.ca_file,
            site_url=lab.site("24.kg").url(),
            site_url2=lab.site("kloop.kg").url("http"),
        )
        out = json.loads(lab.python(lab.vantage, code, timeout=120).strip().splitlines()[-1])
    finally:
        assert h.stop() == 0
    assert out["failures"] == [None, None]
    assert out["titles"] == ["24.kg — lab news", "kloop.kg — lab news"]
    # garbage and plain HTTP get a TLS alert, a close or a reset: never an HTTP answer
    assert len(out["abusers"]) == 40
    assert not any(reply.startswith(b"HTTP/".hex()) for reply in out["abusers"])
    assert "TimeoutError" not in out["abusers"]  # refused at once, not left hanging
    assert "Traceback" not in h.log()
