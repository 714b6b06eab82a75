"""Verdict analysis on hand-built observations (no network)."""

from __future__ import annotations

import json

import pytest

from probe.analysis import analyze, dns_consistency, http_diff, is_offline
from probe.analysis.fingerprints import Fingerprints
from probe.analysis.fingerprints import default as default_fingerprints
from probe.model import failures as F
from probe.model.addresses import is_bogon, is_ip_literal, is_loopback
from probe.model.records import (
    Control,
    DNSQuery,
    HTTPRequest,
    Observations,
    TCPConnect,
    TLSHandshake,
)

DOMAIN = "news.example.kg"
IP = "93.184.216.34"  # the site, AS 15133
IP_B = "93.184.216.99"  # another address of the same CDN / AS
LIE = "192.88.99.10"  # the ISP's block-page server (public, AS 64501)
BODY = b"<html><head><title>Example news portal front page</title></head><body>" + b"x" * 4000
TITLE = "Example news portal front page"
SITE_HEADERS = [["Content-Type", "text/html"], ["X-Site-Id", "42"], ["Server", "nginx"]]
ASN = {IP: 15133, IP_B: 15133, LIE: 64501}


# ---------------------------------------------------------------------------------------------
# builders


def sys_dns(addrs=(IP,), failure=None, host=DOMAIN, depth=0, qtype="A", rcode="NOERROR"):
    if failure == F.DNS_NXDOMAIN:
        rcode = "NXDOMAIN"
    elif failure and failure not in (F.DNS_NO_ANSWER,):
        rcode = None
    return DNSQuery(
        host, qtype, "system", "udp://192.0.2.53:53", failure, rcode, list(addrs), depth=depth
    )


def ctl_dns(engine, addrs=(IP,), failure=None, host=DOMAIN, rcode="NOERROR"):
    resolver = {
        "udp": "udp://8.8.8.8:53",
        "tcp": "tcp://8.8.8.8:53",
        "tls": "tls://1.1.1.1:853",
        "https": "https://dns.google/dns-query",
    }[engine]
    if failure == F.DNS_NXDOMAIN:
        rcode = "NXDOMAIN"
    elif failure:
        rcode = None
    return DNSQuery(host, "A", engine, resolver, failure, rcode, list(addrs))


def helper(
    addrs=(IP,),
    *,
    dns_failure=None,
    tcp=None,
    tls=None,
    http=None,
    ip_info=None,
) -> Control:
    """A test-helper answer; by default everything succeeded for ``addrs`` on 80 and 443."""
    tcp = (
        tcp
        if tcp is not None
        else {f"{a}:{p}": {"status": True, "failure": None} for a in addrs for p in (80, 443)}
    )
    tls = (
        tls
        if tls is not None
        else {f"{a}:443": {"server_name": DOMAIN, "status": True, "failure": None} for a in addrs}
    )
    if http is None:
        http = {
            "body_length": len(BODY),
            "failure": None,
            "title": TITLE,
            "headers": {"Content-Type": "text/html", "X-Site-Id": "42"},
            "status_code": 200,
        }
    if ip_info is None:
        ip_info = {a: {"asn": ASN.get(a, 0), "flags": 2 | 8} for a in addrs}
    response = {
        "tcp_connect": tcp,
        "tls_handshake": tls,
        "quic_handshake": {},
        "http_request": http,
        "http3_request": None,
        "dns": {"failure": dns_failure, "addrs": list(addrs)},
        "ip_info": ip_info,
    }
    return Control("https://th.example.org/", None, response)


HELPER_HTTP_FAILED = {
    "body_length": -1,
    "failure": "unknown_error",
    "title": "",
    "headers": {},
    "status_code": -1,
}

NO_HELPER = Control("https://th.example.org/", F.GENERIC_TIMEOUT, None)


def page(url, ip=IP, status=200, body=BODY, title=TITLE, headers=None, depth=0, **kw):
    headers = SITE_HEADERS if headers is None else headers
    return HTTPRequest(
        url=url,
        ip=ip,
        port=443 if url.startswith("https") else 80,
        status_code=status,
        headers=[list(h) for h in headers],
        title=title,
        body=body,
        body_length=len(body) if body is not None else None,
        depth=depth,
        **kw,
    )


def redirect(url, location, ip=IP, depth=0, status=301):
    return HTTPRequest(
        url=url,
        ip=ip,
        port=443 if url.startswith("https") else 80,
        status_code=status,
        headers=[["Location", location]],
        body=b"",
        body_length=0,
        location=location,
        depth=depth,
    )


def no_connection(url, failure, depth=0):
    return HTTPRequest(url=url, failure=failure, depth=depth)


def site(url=f"https://{DOMAIN}/", *, addrs=(IP,), http=None, control=None, doh=True, **kw):
    """A target that worked: system DNS, DoH, TCP, TLS and one page."""
    https = url.startswith("https")
    port = 443 if https else 80
    dns = [sys_dns(addrs), sys_dns((), F.DNS_NO_ANSWER, qtype="AAAA")]
    if doh:
        dns.append(ctl_dns("https", addrs))
    tcp = [TCPConnect(a, port) for a in addrs]
    tls = [TLSHandshake(a, 443, DOMAIN, purpose="fetch" if https else "validate") for a in addrs]
    return Observations(
        input=url,
        url=url,
        domain=DOMAIN,
        dns=kw.pop("dns", dns),
        tcp=kw.pop("tcp", tcp),
        tls=kw.pop("tls", tls),
        http=http if http is not None else [page(url, ip=addrs[0])],
        control=control if control is not None else helper(addrs),
        **kw,
    )


def assert_verdict(v, verdict, blocking=None):
    assert (v.verdict, v.blocking) == (verdict, blocking), v.reason
    assert v.accessible is {"accessible": True, "blocked": False, "down": False}.get(verdict)
    assert v.reason


# ---------------------------------------------------------------------------------------------
# scenarios


def test_https_success():
    v = analyze(site())
    assert_verdict(v, "accessible")
    assert v.dns_consistency == "consistent"
    assert v.blockpage is None and not v.confirmed


def test_http_success():
    v = analyze(site(f"http://{DOMAIN}/"))
    assert_verdict(v, "accessible")
    assert v.status_code_match is True
    assert v.body_length_match is True and v.body_proportion == 1.0
    assert v.headers_match is True and v.title_match is True


def test_http_to_https_redirect_success():
    url = f"http://{DOMAIN}/"
    obs = site(url, http=[redirect(url, f"https://{DOMAIN}/"), page(f"https://{DOMAIN}/", depth=1)])
    obs.tcp.append(TCPConnect(IP, 443, depth=1))
    obs.tls.append(TLSHandshake(IP, 443, DOMAIN, depth=1))
    assert_verdict(analyze(obs), "accessible")


def test_dns_lie_to_blockpage_ip_is_dns():
    url = f"http://{DOMAIN}/"
    blockpage = b"<html><title>Forbidden</title><body>This resource is not available</body></html>"
    obs = site(
        url,
        addrs=(LIE,),
        dns=[sys_dns((LIE,)), ctl_dns("https", (IP,))],
        tls=[TLSHandshake(LIE, 443, DOMAIN, F.SSL_INVALID_HOSTNAME, purpose="validate")],
        http=[page(url, ip=LIE, body=blockpage, title="Forbidden", headers=[["Server", "x"]])],
        control=helper(
            (IP,),
            ip_info={IP: {"asn": 15133, "flags": 2 | 8}, LIE: {"asn": 64501, "flags": 1}},
        ),
    )
    v = analyze(obs)
    assert_verdict(v, "blocked", "dns")
    assert v.dns_consistency == "inconsistent"
    assert LIE in v.reason


def test_nxdomain_at_system_resolver_is_dns():
    obs = site(
        dns=[
            sys_dns((), F.DNS_NXDOMAIN),
            sys_dns((), F.DNS_NXDOMAIN, qtype="AAAA"),
            ctl_dns("https"),
        ],
        tcp=[],
        tls=[],
        http=[no_connection(f"https://{DOMAIN}/", F.DNS_NXDOMAIN)],
    )
    v = analyze(obs)
    assert_verdict(v, "blocked", "dns")
    assert v.failure == F.DNS_NXDOMAIN
    assert v.dns_consistency == "inconsistent"


def test_bogon_answer_is_dns():
    bogon = "172.16.20.1"
    obs = site(
        addrs=(bogon,),
        dns=[sys_dns((bogon,)), ctl_dns("https")],
        tcp=[TCPConnect(bogon, 443, F.GENERIC_TIMEOUT)],
        tls=[],
        http=[no_connection(f"https://{DOMAIN}/", F.GENERIC_TIMEOUT)],
        control=helper((IP,)),
    )
    v = analyze(obs)
    assert_verdict(v, "blocked", "dns")
    assert "bogon" in v.reason
    assert v.blockpage is None and not v.confirmed


def test_iran_dns_blockpage_address_is_confirmed():
    answer = "10.10.34.36"
    obs = site(
        addrs=(answer,),
        dns=[sys_dns((answer,)), ctl_dns("https")],
        tcp=[TCPConnect(answer, 443, F.GENERIC_TIMEOUT)],
        tls=[],
        http=[no_connection(f"https://{DOMAIN}/", F.GENERIC_TIMEOUT)],
        control=helper((IP,)),
    )
    v = analyze(obs)
    assert_verdict(v, "blocked", "dns")
    assert (v.blockpage, v.confirmed) == ("probe.ir_dns_36", True)


def test_loopback_answer_is_dns():
    obs = site(
        addrs=("127.0.0.1",),
        dns=[sys_dns(("127.0.0.1",)), ctl_dns("https")],
        tcp=[],  # the probe never connects to loopback
        tls=[],
        http=[no_connection(f"https://{DOMAIN}/", F.unknown("refusing to connect to loopback"))],
        control=helper((IP,)),
    )
    v = analyze(obs)
    assert_verdict(v, "blocked", "dns")
    assert "loopback" in v.reason


def test_on_path_injection_forging_udp_control_is_dns():
    url = f"http://{DOMAIN}/"
    blockpage = b"<html><title>Blocked</title><body>blocked</body></html>"
    obs = site(
        url,
        addrs=(LIE,),
        dns=[sys_dns((LIE,)), ctl_dns("udp", (LIE,)), ctl_dns("https", (IP,))],
        tls=[TLSHandshake(LIE, 443, DOMAIN, F.SSL_INVALID_HOSTNAME, purpose="validate")],
        http=[page(url, ip=LIE, body=blockpage, title="Blocked", headers=[])],
        control=helper((IP,), ip_info={IP: {"asn": 15133, "flags": 10}, LIE: {"asn": 64501}}),
    )
    v = analyze(obs)
    assert_verdict(v, "blocked", "dns")
    assert "inject" in v.reason


def test_injection_without_trusted_control_looks_consistent():
    # Without DoH or helper, a forged UDP control agrees with the forged system answer.
    obs = site(
        f"http://{DOMAIN}/",
        addrs=(LIE,),
        dns=[sys_dns((LIE,)), ctl_dns("udp", (LIE,))],
        control=NO_HELPER,
    )
    assert dns_consistency(obs) == "consistent"


@pytest.mark.parametrize("failure", [F.GENERIC_TIMEOUT, F.CONNECTION_REFUSED])
def test_tcp_blocking(failure):
    obs = site(
        tcp=[TCPConnect(IP, 443, failure)],
        tls=[],
        http=[no_connection(f"https://{DOMAIN}/", failure)],
    )
    v = analyze(obs)
    assert_verdict(v, "blocked", "tcp_ip")
    assert v.failure == failure
    assert v.dns_consistency == "consistent"


@pytest.mark.parametrize("failure", [F.CONNECTION_RESET, F.EOF_ERROR, F.GENERIC_TIMEOUT])
def test_tls_sni_blocking(failure):
    obs = site(
        tls=[TLSHandshake(IP, 443, DOMAIN, failure)],
        http=[no_connection(f"https://{DOMAIN}/", failure)],
    )
    v = analyze(obs)
    assert_verdict(v, "blocked", "tls")
    assert v.failure == failure
    assert f"SNI {DOMAIN}" in v.reason and failure in v.reason


def test_tls_blocking_on_redirect_hop_uses_helper_fetch():
    url = f"http://{DOMAIN}/"
    target = f"https://{DOMAIN}/"
    obs = site(url, http=[redirect(url, target), no_connection(target, F.CONNECTION_RESET, 1)])
    obs.tcp.append(TCPConnect(IP_B, 443, depth=1))
    obs.tls.append(TLSHandshake(IP_B, 443, DOMAIN, F.CONNECTION_RESET, depth=1))
    assert_verdict(analyze(obs), "blocked", "tls")


def test_cleartext_host_header_reset_is_http_failure():
    url = f"http://{DOMAIN}/"
    hop = HTTPRequest(url=url, ip=IP, port=80, failure=F.CONNECTION_RESET)
    v = analyze(site(url, http=[hop]))
    assert_verdict(v, "blocked", "http-failure")
    assert v.failure == F.CONNECTION_RESET


def test_injected_elcat_blockpage_is_confirmed_http_diff():
    url = f"http://{DOMAIN}/"
    body = (
        b'<html><head><title>Blocked</title></head><body><p class="error">Access to the '
        b"requested website has been blocked by judicial decision!</p></body></html>"
    )
    v = analyze(site(url, http=[page(url, body=body, title="Blocked", headers=[])]))
    assert_verdict(v, "blocked", "http-diff")
    assert v.confirmed is True
    assert v.blockpage == "probe.kg_elcat_judicial"


def test_homeline_redirect_is_confirmed_even_when_the_blockpage_is_unreachable():
    url = f"http://{DOMAIN}/"
    target = "http://homeline.kg/access/blockpage.html"
    obs = site(
        url,
        http=[redirect(url, target, status=302), no_connection(target, F.GENERIC_TIMEOUT, 1)],
    )
    obs.dns.append(sys_dns(("192.88.99.20",), host="homeline.kg", depth=1))
    obs.tcp.append(TCPConnect("192.88.99.20", 80, F.GENERIC_TIMEOUT, depth=1))
    v = analyze(obs)
    assert_verdict(v, "blocked", "http-diff")
    assert v.blockpage == "probe.kg_homeline_location" and v.confirmed


def test_different_page_without_fingerprint_is_unconfirmed_http_diff():
    url = f"http://{DOMAIN}/"
    body = b"<html><title>Something else entirely</title>" + b"y" * 100 + b"</html>"
    v = analyze(
        site(
            url,
            http=[page(url, body=body, title="Something else entirely", headers=[["Server", "x"]])],
        )
    )
    assert_verdict(v, "blocked", "http-diff")
    assert v.confirmed is False and v.blockpage is None
    assert v.body_length_match is False and v.title_match is False and v.headers_match is False


def test_site_down_everywhere():
    refused = {"status": False, "failure": "connection_refused_error"}
    control = helper(
        tcp={f"{IP}:443": refused, f"{IP}:80": refused},
        tls={},
        http=dict(HELPER_HTTP_FAILED, failure="connection_refused_error"),
    )
    obs = site(
        tcp=[TCPConnect(IP, 443, F.CONNECTION_REFUSED)],
        tls=[],
        http=[no_connection(f"https://{DOMAIN}/", F.CONNECTION_REFUSED)],
        control=control,
    )
    v = analyze(obs)
    assert_verdict(v, "down")
    assert v.failure == F.CONNECTION_REFUSED


def test_bad_certificate_at_the_site_itself_is_down():
    control = helper(
        tls={
            f"{IP}:443": {"server_name": DOMAIN, "status": False, "failure": F.SSL_INVALID_HOSTNAME}
        },
        http=HELPER_HTTP_FAILED,
        ip_info={IP: {"asn": 15133, "flags": 2}},
    )
    obs = site(
        tls=[TLSHandshake(IP, 443, DOMAIN, F.SSL_INVALID_HOSTNAME)],
        http=[no_connection(f"https://{DOMAIN}/", F.SSL_INVALID_HOSTNAME)],
        control=control,
    )
    v = analyze(obs)
    assert_verdict(v, "down")
    assert v.failure == F.SSL_INVALID_HOSTNAME


def test_certificate_error_only_at_vantage_is_tls_interception():
    obs = site(
        tls=[TLSHandshake(IP, 443, DOMAIN, F.SSL_UNKNOWN_AUTHORITY)],
        http=[no_connection(f"https://{DOMAIN}/", F.SSL_UNKNOWN_AUTHORITY)],
    )
    v = analyze(obs)
    assert_verdict(v, "blocked", "tls")
    assert "interception" in v.reason


def test_helper_unreachable_http_url_is_inconclusive():
    url = f"http://{DOMAIN}/"
    obs = site(
        url,
        dns=[sys_dns(), ctl_dns("https", (), F.GENERIC_TIMEOUT)],
        control=NO_HELPER,
    )
    v = analyze(obs)
    assert_verdict(v, "inconclusive")
    assert v.dns_consistency is None


def test_helper_unreachable_with_blockpage_stays_inconclusive():
    url = f"http://{DOMAIN}/"
    body = b"<p>Access to the requested website has been blocked by judicial decision!</p>"
    obs = site(url, dns=[sys_dns()], control=NO_HELPER, http=[page(url, body=body)])
    v = analyze(obs)
    assert_verdict(v, "inconclusive")
    assert v.blockpage == "probe.kg_elcat_judicial" and v.confirmed
    assert "stays inconclusive" in v.reason


def test_helper_unreachable_https_success_is_accessible():
    v = analyze(site(dns=[sys_dns()], control=NO_HELPER))
    assert_verdict(v, "accessible")


def test_dead_network_is_inconclusive():
    # Nothing answered: no helper, no control resolver, no connection (an offline vantage).
    v = analyze(_dead())
    assert_verdict(v, "inconclusive")
    assert "no test helper or control resolver answered" in v.reason.lower()


def test_too_many_redirects_on_both_sides_is_down():
    url = f"http://{DOMAIN}/"
    hops = [redirect(url, f"{url}?n={i + 1}", depth=i) for i in range(11)]
    hops[-1].failure = F.TOO_MANY_REDIRECTS
    obs = site(url, http=hops, control=helper(http=HELPER_HTTP_FAILED))
    v = analyze(obs)
    assert_verdict(v, "down")
    assert v.failure == F.TOO_MANY_REDIRECTS


def test_too_many_redirects_only_at_vantage_is_http_failure():
    url = f"http://{DOMAIN}/"
    hops = [redirect(url, f"{url}?n={i + 1}", depth=i) for i in range(11)]
    hops[-1].failure = F.TOO_MANY_REDIRECTS
    assert_verdict(analyze(site(url, http=hops)), "blocked", "http-failure")


def test_truncated_large_body_is_accessible_without_proportion():
    url = f"http://{DOMAIN}/"
    big = b"<html>" + b"z" * (512 * 1024)
    hop = page(url, body=big, body_truncated=True)
    v = analyze(
        site(
            url,
            http=[hop],
            control=helper(
                http={
                    "body_length": 3_000_000,
                    "failure": None,
                    "title": TITLE,
                    "headers": {"X-Site-Id": "1"},
                    "status_code": 200,
                }
            ),
        )
    )
    assert_verdict(v, "accessible")
    assert v.body_proportion is None and v.body_length_match is None


def test_idn_domain():
    domain = "кыргыз-эл.kg".encode("idna").decode()
    url = f"https://{domain}/"
    obs = Observations(
        input="https://кыргыз-эл.kg/",
        url=url,
        domain=domain,
        dns=[
            DNSQuery(
                domain.upper() + ".",
                "A",
                "system",
                "udp://192.0.2.53:53",
                rcode="NOERROR",
                addresses=[IP],
            ),
            DNSQuery(
                domain,
                "A",
                "https",
                "https://dns.google/dns-query",
                rcode="NOERROR",
                addresses=[IP],
            ),
        ],
        tcp=[TCPConnect(IP, 443)],
        tls=[TLSHandshake(IP, 443, domain)],
        http=[page(url)],
        control=helper(),
    )
    v = analyze(obs)
    assert_verdict(v, "accessible")
    assert v.dns_consistency == "consistent"


def test_cdn_different_ips_same_asn_is_consistent():
    obs = site(
        addrs=(IP_B,),
        dns=[sys_dns((IP_B,))],
        control=helper(
            (IP,), ip_info={IP: {"asn": 15133, "flags": 2}, IP_B: {"asn": 15133, "flags": 1}}
        ),
        tls=[TLSHandshake(IP_B, 443, "other.example", F.SSL_INVALID_HOSTNAME)],
        http=[page(f"https://{DOMAIN}/", ip=IP_B)],
    )
    v = analyze(obs)
    assert_verdict(v, "accessible")
    assert v.dns_consistency == "consistent"


def test_aaaa_no_answer_is_ignored():
    obs = site()
    assert any(q.query_type == "AAAA" and q.failure == F.DNS_NO_ANSWER for q in obs.dns)
    assert dns_consistency(obs) == "consistent"
    assert_verdict(analyze(obs), "accessible")


def test_ipv6_unreachable_is_not_tcp_blocking():
    v6 = "2606:2800:220:1::1"
    obs = site(
        addrs=(IP, v6),
        dns=[sys_dns((IP,)), sys_dns((v6,), qtype="AAAA"), ctl_dns("https", (IP,))],
        tcp=[TCPConnect(IP, 443, F.CONNECTION_REFUSED), TCPConnect(v6, 443, F.NETWORK_UNREACHABLE)],
        tls=[],
        http=[no_connection(f"https://{DOMAIN}/", F.CONNECTION_REFUSED)],
        control=helper(
            (IP, v6),
            tcp={
                f"{IP}:443": {"status": False, "failure": "connection_refused_error"},
                f"[{v6}]:443": {"status": True, "failure": None},
            },
            http=HELPER_HTTP_FAILED,
        ),
    )
    assert_verdict(analyze(obs), "down")


def test_accessible_outcome_is_not_overridden_by_inconsistent_dns():
    # DNS points elsewhere but the page is served over validated HTTPS (e.g. a proxy).
    obs = site(
        addrs=(LIE,),
        dns=[sys_dns((LIE,)), ctl_dns("https", (IP,))],
        tls=[TLSHandshake(LIE, 443, DOMAIN, F.CONNECTION_RESET)],  # not a validation
        http=[page(f"https://{DOMAIN}/", ip=LIE)],
        control=helper((IP,), ip_info={IP: {"asn": 15133, "flags": 2}, LIE: {"asn": 64501}}),
    )
    v = analyze(obs)
    assert v.dns_consistency == "inconsistent"
    assert_verdict(v, "accessible")


def test_redirect_hop_tcp_failure_is_http_failure():
    url = f"http://{DOMAIN}/"
    target = "https://cdn.example.kg/"
    obs = site(url, http=[redirect(url, target), no_connection(target, F.GENERIC_TIMEOUT, 1)])
    obs.dns.append(sys_dns((IP_B,), host="cdn.example.kg", depth=1))
    obs.tcp.append(TCPConnect(IP_B, 443, F.GENERIC_TIMEOUT, depth=1))
    assert_verdict(analyze(obs), "blocked", "http-failure")


def test_nxdomain_everywhere_is_down():
    obs = site(
        dns=[sys_dns((), F.DNS_NXDOMAIN), ctl_dns("https", (), F.DNS_NXDOMAIN)],
        tcp=[],
        tls=[],
        http=[no_connection(f"https://{DOMAIN}/", F.DNS_NXDOMAIN)],
        control=helper(
            (),
            dns_failure="dns_name_error",
            tcp={},
            tls={},
            http=dict(HELPER_HTTP_FAILED, failure="dns_lookup_error"),
            ip_info={},
        ),
    )
    v = analyze(obs)
    assert v.dns_consistency == "consistent"
    assert_verdict(v, "down")


# ---------------------------------------------------------------------------------------------
# http_diff rules


def control_http(status=200, length=1000, title=TITLE, headers=None):
    return {
        "body_length": length,
        "failure": None if status > 0 else "unknown_error",
        "title": title,
        "headers": headers if headers is not None else {"X-Site-Id": "1", "Date": "x"},
        "status_code": status,
    }


def hop(length=1000, status=200, title=TITLE, headers=(("X-Site-Id", "1"),), truncated=False):
    return HTTPRequest(
        url=f"http://{DOMAIN}/",
        ip=IP,
        status_code=status,
        title=title,
        headers=[list(h) for h in headers],
        body=b"a" * length,
        body_length=length,
        body_truncated=truncated,
    )


def test_body_proportion_boundary_is_strict():
    d = http_diff(hop(700), control_http(length=1000))
    assert d["body_proportion"] == pytest.approx(0.7)
    assert d["body_length_match"] is False
    d = http_diff(hop(701), control_http(length=1000))
    assert d["body_length_match"] is True
    assert http_diff(hop(1000), control_http(length=700))["body_length_match"] is False


@pytest.mark.parametrize(
    "probe_len, truncated, control_len",
    [(0, False, 1000), (1000, True, 1000), (1000, False, 0), (1000, False, -1)],
)
def test_body_proportion_not_computed(probe_len, truncated, control_len):
    d = http_diff(hop(probe_len, truncated=truncated), control_http(length=control_len))
    assert d["body_proportion"] is None and d["body_length_match"] is None


def test_status_code_match_rules():
    assert http_diff(hop(status=200), control_http(200))["status_code_match"] is True
    assert http_diff(hop(status=403), control_http(200))["status_code_match"] is False
    assert http_diff(hop(status=200), control_http(404))["status_code_match"] is None
    assert http_diff(hop(status=200), control_http(503))["status_code_match"] is None
    assert http_diff(hop(status=404), control_http(404))["status_code_match"] is True
    assert http_diff(hop(status=200), control_http(-1))["status_code_match"] is None


def test_headers_match_uses_uncommon_names_only():
    common_only = (("Date", "x"), ("Server", "y"), ("Content-Type", "text/html"))
    c = control_http(headers={"Date": "x", "Server": "y", "Content-Type": "text/html"})
    assert http_diff(hop(headers=common_only), c)["headers_match"] is False
    assert http_diff(hop(headers=(("x-site-id", "2"),)), control_http())["headers_match"] is True
    assert http_diff(hop(headers=(("X-Other", "1"),)), control_http())["headers_match"] is False
    assert http_diff(hop(), control_http(-1))["headers_match"] is None


def test_title_match_rules():
    def tm(ours, theirs):
        return http_diff(hop(title=ours), control_http(title=theirs))["title_match"]

    assert tm("Example News", "example news") is True  # case-insensitive
    assert tm("The big News", "A big News") is True  # short words ignored
    assert tm("Example News Portal", "Example News") is False  # "portal" only in ours
    assert tm("Example", "Example Portal") is False  # "portal" only in theirs
    assert tm("", "") is True
    assert tm("Кыр", "Кыргыз") is False  # "Кыр" is 6 bytes: a long word
    assert tm(None, "Home") is True  # "Home" is 4 bytes


def test_http_diff_without_control():
    assert all(v is None for v in http_diff(hop(), None).values())


# ---------------------------------------------------------------------------------------------
# dns_consistency edge cases


def test_ip_literal_is_consistent():
    obs = Observations(input=f"http://{IP}/", url=f"http://{IP}/", domain=IP, control=helper())
    assert dns_consistency(obs) == "consistent"


def test_no_control_is_none():
    obs = site(dns=[sys_dns(), ctl_dns("udp", (), F.GENERIC_TIMEOUT)], control=NO_HELPER)
    assert dns_consistency(obs) is None


def test_ghost_answer_for_dead_domain_is_inconsistent():
    obs = site(dns=[sys_dns((LIE,))], control=helper((), ip_info={}))
    assert dns_consistency(obs) == "inconsistent"


def test_validated_tls_makes_other_as_consistent():
    obs = site(
        addrs=(LIE,),
        dns=[sys_dns((LIE,)), ctl_dns("https", (IP,))],
        tls=[TLSHandshake(LIE, 443, DOMAIN)],
        control=helper((IP,), ip_info={IP: {"asn": 15133, "flags": 2}, LIE: {"asn": 64501}}),
    )
    assert dns_consistency(obs) == "consistent"


def test_helper_tls_flag_makes_other_as_consistent():
    obs = site(
        addrs=(LIE,),
        dns=[sys_dns((LIE,))],
        tls=[],
        control=helper((IP,), ip_info={IP: {"asn": 1, "flags": 2}, LIE: {"asn": 2, "flags": 9}}),
    )
    assert dns_consistency(obs) == "consistent"


def test_different_as_without_validation_is_inconsistent():
    obs = site(
        addrs=(LIE,),
        dns=[sys_dns((LIE,))],
        tls=[],
        control=helper((IP,), ip_info={IP: {"asn": 1, "flags": 2}, LIE: {"asn": 2, "flags": 1}}),
    )
    assert dns_consistency(obs) == "inconsistent"


def test_plain_resolver_counts_only_without_trusted_answer():
    base = dict(control=NO_HELPER, tls=[])
    agree = site(dns=[sys_dns(), ctl_dns("https", (), F.GENERIC_TIMEOUT), ctl_dns("udp")], **base)
    assert dns_consistency(agree) == "consistent"
    differ = site(dns=[sys_dns(), ctl_dns("udp", (LIE,))], **base)
    assert dns_consistency(differ) == "inconsistent"
    # With a trusted answer present, the udp resolver's opinion is ignored.
    trusted = site(dns=[sys_dns(), ctl_dns("https"), ctl_dns("udp", (LIE,))], **base)
    assert dns_consistency(trusted) == "consistent"


def test_dns_fingerprint_from_extra_file(tmp_path):
    extra = tmp_path / "lab.json"
    extra.write_text(
        json.dumps(
            [
                {
                    "id": "lab.isp_blockpage_ip",
                    "location": "dns",
                    "type": "full",
                    "pattern": LIE,
                    "scope": "isp",
                    "countries": ["KG"],
                    "source": "lab",
                    "notes": "",
                }
            ]
        )
    )
    fps = Fingerprints.load([extra])
    # Same AS as the control, so without the fingerprint it would be consistent.
    obs = site(
        f"http://{DOMAIN}/",
        addrs=(LIE,),
        dns=[sys_dns((LIE,)), ctl_dns("https", (IP,))],
        http=[page(f"http://{DOMAIN}/", ip=LIE, body=b"<b>no</b>", title="Denied", headers=[])],
        control=helper((IP,), ip_info={IP: {"asn": 7, "flags": 2}, LIE: {"asn": 7, "flags": 1}}),
    )
    assert dns_consistency(obs) == "consistent"
    assert dns_consistency(obs, fps) == "inconsistent"
    v = analyze(obs, fingerprints=fps)
    assert_verdict(v, "blocked", "dns")
    assert v.blockpage == "lab.isp_blockpage_ip" and v.confirmed


# ---------------------------------------------------------------------------------------------
# is_offline


def _failing(failure, step="tcp"):
    if step == "dns":
        return site(
            dns=[sys_dns((), failure), ctl_dns("https")],
            tcp=[],
            tls=[],
            http=[no_connection(f"https://{DOMAIN}/", failure)],
        )
    return site(
        tcp=[TCPConnect(IP, 443, failure)],
        tls=[],
        http=[no_connection(f"https://{DOMAIN}/", failure)],
    )


def test_is_offline_empty_and_healthy():
    assert is_offline([]) is False
    assert is_offline([site() for _ in range(10)]) is False


def _dead():
    return site(
        dns=[sys_dns((), F.NETWORK_UNREACHABLE), ctl_dns("udp", (), F.NETWORK_UNREACHABLE)],
        tcp=[],
        tls=[],
        http=[no_connection(f"https://{DOMAIN}/", F.NETWORK_UNREACHABLE)],
        control=Control(None, F.NETWORK_UNREACHABLE, None),
    )


def test_is_offline_when_no_control_answered_and_nothing_connected():
    assert is_offline([_dead(), _dead()]) is True
    assert is_offline([_dead(), site()]) is False
    # The helper is unreachable, but a site was fetched: the vantage is online.
    no_helper = site(control=Control(None, F.GENERIC_TIMEOUT, None), doh=False)
    assert is_offline([_dead(), no_helper]) is False


def test_is_not_offline_when_the_control_answered():
    # Issue 7 #2: a volunteer checking a list of blackholed outlets is online (the helper
    # answered for every one of them), and the verdicts must say blocked.
    timeouts = [_failing(F.GENERIC_TIMEOUT) for _ in range(9)]
    assert is_offline(timeouts) is False
    assert all(analyze(obs).blocking == "tcp_ip" for obs in timeouts)
    runs = [_failing(F.NETWORK_UNREACHABLE, "dns") for _ in range(9)] + [site()]
    assert is_offline(runs) is False


def test_is_offline_not_for_partial_or_small_or_block_like_failures():
    assert is_offline([_failing(F.GENERIC_TIMEOUT) for _ in range(8)] + [site(), site()]) is False
    assert is_offline([_failing(F.NETWORK_UNREACHABLE) for _ in range(4)]) is False
    assert is_offline([_failing(F.CONNECTION_RESET) for _ in range(10)]) is False


# ---------------------------------------------------------------------------------------------
# addresses


@pytest.mark.parametrize(
    "ip",
    [
        "10.1.2.3",
        "127.0.0.1",
        "169.254.1.1",
        "100.64.0.1",
        "0.1.2.3",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "192.0.2.1",
        "198.51.100.7",
        "203.0.113.9",
        "198.19.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "::1",
        "::",
        "fc00::1",
        "fd12::1",
        "fe80::1",
        "2001:db8::1",
        "64:ff9b::1",
        "::ffff:10.0.0.1",
        "ff02::1",
    ],
)
def test_bogons(ip):
    assert is_bogon(ip) is True


@pytest.mark.parametrize(
    "ip",
    ["192.88.99.1", "8.8.8.8", IP, "2606:4700::1111", "::ffff:8.8.8.8", "100.128.0.1", "not-an-ip"],
)
def test_not_bogons(ip):
    assert is_bogon(ip) is False


def test_loopback_and_literals():
    assert is_loopback("127.3.4.5") and is_loopback("::1") and is_loopback("::ffff:127.0.0.1")
    assert not is_loopback("10.0.0.1") and not is_loopback("example.kg")
    assert is_ip_literal("1.2.3.4") and is_ip_literal("[2001:db8::1]") and is_ip_literal("::1")
    assert not is_ip_literal("example.kg") and not is_ip_literal("1.2.3")


# ---------------------------------------------------------------------------------------------
# Issue 7: verdicts a researcher can publish (each failed before the fix)

NGINX = [
    ["Server", "nginx"],
    ["Date", "Sun, 29 Nov 2026 18:00:00 GMT"],
    ["Content-Type", "text/html; charset=utf-8"],
    ["Content-Length", "690"],
    ["Connection", "keep-alive"],
]
NOTICE_TITLE = "Бул ресурска кирүү чектелген"  # Kyrgyz; in no public fingerprint list
NOTICE = f"<html><head><title>{NOTICE_TITLE}</title></head><body>{'Чектелген. ' * 40}</body>"
NOTICE_BODY = NOTICE.encode()


def _cleartext_control(length=None, title=TITLE, status=200, headers=None):
    length = len(BODY) if length is None else length
    return {
        "body_length": length,
        "failure": None,
        "title": title,
        "headers": headers or {"Content-Length": str(length), "Connection": "keep-alive"},
        "status_code": status,
    }


def test_unfingerprinted_block_page_sharing_framing_headers_is_http_diff():
    # OONI's rule: same status + any shared header name outside its list (Content-Length,
    # Connection) = same page. The notice's title differs and its body is a sixth of the site's.
    url = f"http://{DOMAIN}/"
    notice = page(url, body=NOTICE_BODY, title=NOTICE_TITLE, headers=NGINX)
    control = helper(http=_cleartext_control(len(NOTICE_BODY) * 6))
    assert default_fingerprints().match_http(notice) is None
    v = analyze(site(url, http=[notice], control=control))
    assert_verdict(v, "blocked", "http-diff")
    assert v.confirmed is False and v.blockpage is None
    assert v.headers_match is False  # framing headers no longer count
    assert v.evidence[0].finding == "page_differs"
    assert v.evidence[0].control["title"] == TITLE


def test_dns_elsewhere_and_a_different_page_is_dns():
    url = f"http://{DOMAIN}/"
    obs = site(
        url,
        addrs=(LIE,),
        dns=[sys_dns((LIE,)), ctl_dns("https", (IP,))],
        tls=[TLSHandshake(LIE, 443, DOMAIN, F.SSL_INVALID_HOSTNAME, purpose="validate")],
        http=[page(url, ip=LIE, body=NOTICE_BODY, title=NOTICE_TITLE, headers=NGINX)],
        control=helper((IP,), http=_cleartext_control(len(NOTICE_BODY) * 6)),
    )
    v = analyze(obs)
    assert_verdict(v, "blocked", "dns")
    assert [e.finding for e in v.evidence] == ["dns_answer_differs", "page_differs"]


@pytest.mark.parametrize(
    "ours, theirs",
    [
        # A dynamic page: same title, body 15 % shorter, different ad-hoc headers.
        (dict(title=TITLE, length=3400, headers=[["X-Request-Id", "a1"]]), dict(title=TITLE)),
        # No title on either side, bodies 10 % apart.
        (dict(title=None, length=3600, headers=[]), dict(title="")),
        # The headline in the title changes, most words stay, body similar.
        (
            dict(title="Example news portal: elections today", length=3900, headers=[]),
            dict(title="Example news portal: weather tomorrow"),
        ),
    ],
)
def test_same_site_page_that_varies_is_accessible(ours, theirs):
    url = f"http://{DOMAIN}/"
    body = b"z" * ours["length"]
    hop = page(url, body=body, title=ours["title"], headers=ours["headers"])
    control = helper(http=_cleartext_control(len(BODY), title=theirs["title"]))
    assert_verdict(analyze(site(url, http=[hop], control=control)), "accessible")


def test_block_page_without_title_is_http_diff_even_at_similar_size():
    url = f"http://{DOMAIN}/"
    hop = page(url, body=b"q" * len(BODY), title=None, headers=NGINX)
    v = analyze(site(url, http=[hop], control=helper(http=_cleartext_control())))
    assert_verdict(v, "blocked", "http-diff")


def test_redirect_target_nxdomain_is_dns_not_the_redirect():
    # https://site/ → 308 → https://www.other.kg/, whose name the ISP's resolver NXDOMAINs.
    url, target = f"https://{DOMAIN}/", "https://www.other.kg/"
    obs = site(
        url,
        http=[redirect(url, target, status=308)],
        dns=[
            sys_dns((IP,)),
            ctl_dns("https", (IP,)),
            sys_dns((), F.DNS_NXDOMAIN, host="www.other.kg", depth=1),
        ],
    )
    v = analyze(obs)
    assert_verdict(v, "blocked", "dns")
    assert v.failure == F.DNS_NXDOMAIN
    assert v.evidence[0].finding == "redirect_dns_failed"


def test_redirect_not_followed_for_another_reason_is_inconclusive():
    url = f"https://{DOMAIN}/"
    v = analyze(site(url, http=[redirect(url, "https://www.other.kg/", status=308)]))
    assert_verdict(v, "inconclusive")


def test_injected_redirect_to_an_https_notice_on_another_host_is_http_diff():
    # http://site/ answered by an injector with a 302 to a valid-HTTPS notice elsewhere.
    url, notice_url = f"http://{DOMAIN}/", "https://notice.isp.kg/"
    obs = site(
        url,
        http=[
            redirect(url, notice_url, status=302),
            page(notice_url, ip=LIE, body=NOTICE_BODY, title=NOTICE_TITLE, depth=1),
        ],
        control=helper(http=_cleartext_control()),
    )
    v = analyze(obs)
    assert_verdict(v, "blocked", "http-diff")


def test_cleartext_redirect_to_https_on_the_same_site_is_accessible_without_helper_fetch():
    url, final = f"http://{DOMAIN}/", f"https://www.{DOMAIN}/"
    obs = site(
        url,
        http=[redirect(url, final), page(final, depth=1)],
        control=helper(http=HELPER_HTTP_FAILED),
    )
    assert_verdict(analyze(obs), "accessible")


def test_cross_domain_redirect_chain_with_the_same_final_page_is_accessible():
    url = "http://a.example.kg/"
    obs = site(
        url,
        http=[
            redirect(url, "https://b.example.org/x"),
            redirect("https://b.example.org/x", "https://c.example.net/y", depth=1),
            page("https://c.example.net/y", depth=2),
        ],
    )
    assert_verdict(analyze(obs), "accessible")


def test_sni_proxy_passing_tls_through_keeps_the_dns_tampering():
    # ISP resolver and the forged plain-DNS control answer LIE (a proxy that splices TLS to the
    # real site): the page is real, but the DNS answer was injected.
    obs = site(
        addrs=(LIE,),
        dns=[sys_dns((LIE,)), ctl_dns("udp", (LIE,)), ctl_dns("https", (IP,))],
        tls=[TLSHandshake(LIE, 443, DOMAIN)],
        http=[page(f"https://{DOMAIN}/", ip=LIE)],
        control=helper((IP,), ip_info={IP: {"asn": 15133, "flags": 2}, LIE: {"asn": 64501}}),
    )
    v = analyze(obs)
    assert_verdict(v, "accessible")
    assert v.dns_consistency == "inconsistent"
    assert "inject" in v.reason and "tampered" in v.reason


def test_sni_proxy_that_resets_is_dns():
    obs = site(
        addrs=(LIE,),
        dns=[sys_dns((LIE,)), ctl_dns("udp", (LIE,)), ctl_dns("https", (IP,))],
        tls=[TLSHandshake(LIE, 443, DOMAIN, F.CONNECTION_RESET)],
        http=[no_connection(f"https://{DOMAIN}/", F.CONNECTION_RESET)],
        control=helper((IP,), ip_info={IP: {"asn": 15133, "flags": 2}, LIE: {"asn": 64501}}),
    )
    v = analyze(obs)
    assert_verdict(v, "blocked", "dns")
    assert v.failure == F.CONNECTION_RESET


@pytest.mark.parametrize("scheme, verdict", [("http", "inconclusive"), ("https", "accessible")])
def test_cdn_challenge_to_the_helper_is_not_blocking(scheme, verdict):
    url = f"{scheme}://{DOMAIN}/"
    challenge = _cleartext_control(5000, title="Just a moment...", status=403)
    v = analyze(site(url, control=helper(http=challenge)))
    assert_verdict(v, verdict)


def test_our_error_status_against_the_control_page_is_http_diff():
    url = f"http://{DOMAIN}/"
    hop = page(url, status=451, body=b"Unavailable For Legal Reasons", title=None)
    v = analyze(site(url, http=[hop], control=helper(http=_cleartext_control())))
    assert_verdict(v, "blocked", "http-diff")


def test_unreachable_system_resolver_is_inconclusive_not_dns():
    obs = site(
        dns=[sys_dns((), F.NETWORK_UNREACHABLE), ctl_dns("https")],
        tcp=[],
        tls=[],
        http=[],
    )
    v = analyze(obs)
    assert_verdict(v, "inconclusive")
    assert v.dns_consistency is None


def test_evidence_is_structured_and_explains_the_reason():
    obs = site(
        tcp=[TCPConnect(IP, 443)],
        tls=[TLSHandshake(IP, 443, DOMAIN, F.CONNECTION_RESET)],
        http=[no_connection(f"https://{DOMAIN}/", F.CONNECTION_RESET)],
    )
    v = analyze(obs)
    assert_verdict(v, "blocked", "tls")
    (evidence,) = v.evidence
    assert (evidence.finding, evidence.step) == ("tls_failed", "tls")
    assert evidence.ours["sni"] == DOMAIN and evidence.ours["failure"] == F.CONNECTION_RESET
    assert evidence.control == {"tls": "ok", "points_to": "sni_filtering"}
    assert json.loads(json.dumps(v.to_dict()))["evidence"][0]["finding"] == "tls_failed"
