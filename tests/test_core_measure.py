"""``Measurer.measure`` over real sockets on loopback (tests/loopback.py), without root.

The probe refuses loopback addresses; these tests let it reach their servers through the
test-only ``Settings.bogons_exempt`` (exactly the servers' addresses), and check that without
it, and for every other loopback address, the refusal stays.
"""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from probe.measure.measurer import Measurer
from probe.measure.settings import Settings, Timeouts
from probe.model import failures
from probe.model.records import Observations
from probe.net.resolvers import DoHClient, parse_resolver
from tests.loopback import RESET, SILENCE, exempt, page, redirect

PAGE = "<html><head><title>Loopback news</title></head><body>" + "news " * 200 + "</body></html>"


def settings_for(loopback, dns_server, *servers, doh=None, **changes) -> Settings:
    """Settings whose system resolver is ``dns_server`` (and control resolver the DoH server
    ``doh``), allowed to connect to ``servers`` only among loopback addresses."""
    base = Settings(
        system_resolver=parse_resolver(dns_server.url, engine="system"),
        control_resolvers=[parse_resolver(doh.url("/dns-query"))] if doh else [],
        ssl_context=loopback.client_context(),
        timeouts=Timeouts(dns=3, tcp=3, tls=3, http=3),
        dns_duplicate_window=0,
        bogons_exempt=exempt(*servers),
    )
    return dataclasses.replace(base, **changes)


def target(url: str):
    from probe.app.targets import load

    [found] = load(inputs=[url])
    return found


async def measure(settings: Settings, url: str) -> Observations:
    doh = DoHClient(settings.ssl_context)
    try:
        measurer = Measurer(settings, doh_client=doh, helpers=None)
        return await measurer.measure(target(url))
    finally:
        await doh.aclose()


@pytest.mark.asyncio
async def test_an_accessible_page_over_http_with_its_dns_answer(loopback):
    web = loopback.http({"/news": page(PAGE)})
    dns = loopback.dns({"site.test": [web.host]})
    doh = loopback.doh(dns)
    obs = await measure(settings_for(loopback, dns, web, doh=doh), web.url("/news", "site.test"))

    system = [q for q in obs.dns if q.engine == "system"]
    assert {q.query_type for q in system} == {"A", "AAAA"}
    [a] = [q for q in system if q.query_type == "A"]
    assert a.failure is None and a.rcode == "NOERROR" and a.addresses == [web.host]
    assert a.resolver == dns.url
    # The control resolver (DoH, over TLS trusted through the test CA) saw the same answer.
    [control] = [q for q in obs.dns if q.engine == "https" and q.query_type == "A"]
    assert control.failure is None and control.addresses == [web.host]
    assert [(t.ip, t.port, t.failure) for t in obs.tcp] == [(web.host, web.port, None)]
    [hop] = obs.http
    assert hop.failure is None and hop.status_code == 200
    assert hop.title == "Loopback news" and hop.body_length == len(PAGE)
    assert (hop.ip, hop.port) == (web.host, web.port)
    [request] = web.requests
    assert request.headers["host"] == f"site.test:{web.port}"


@pytest.mark.asyncio
async def test_https_page_with_a_verified_certificate(loopback):
    web = loopback.https({"/": page(PAGE)}, "secure.test")
    dns = loopback.dns({"secure.test": [web.host]})
    obs = await measure(settings_for(loopback, dns, web), web.url("/", "secure.test"))
    [tls] = obs.tls
    assert tls.failure is None and tls.server_name == "secure.test" and tls.purpose == "fetch"
    assert tls.cert_sha256
    [hop] = obs.http
    assert hop.failure is None and hop.status_code == 200 and hop.title == "Loopback news"


@pytest.mark.asyncio
async def test_a_certificate_for_another_name_is_a_tls_failure(loopback):
    web = loopback.https({"/": page(PAGE)}, "other.test")
    dns = loopback.dns({"secure.test": [web.host]})
    obs = await measure(settings_for(loopback, dns, web), web.url("/", "secure.test"))
    [tls] = obs.tls
    assert tls.failure == failures.SSL_INVALID_HOSTNAME
    assert tls.cert_sha256  # the certificate presented, from a second, unverified handshake
    [hop] = obs.http
    assert hop.failure == failures.SSL_INVALID_HOSTNAME and hop.status_code is None
    assert web.requests == []


@pytest.mark.asyncio
async def test_a_redirect_is_followed_to_another_server_and_resolved_again(loopback):
    second = loopback.http({"/landing": page(PAGE)})
    first = loopback.http({"/": redirect(second.url("/landing", "www.site.test"))})
    dns = loopback.dns({"site.test": [first.host], "www.site.test": [second.host]})
    obs = await measure(settings_for(loopback, dns, first, second), first.url("/", "site.test"))

    assert [(h.depth, h.status_code, h.ip) for h in obs.http] == [
        (0, 302, first.host),
        (1, 200, second.host),
    ]
    assert obs.http[0].location == second.url("/landing", "www.site.test")
    assert obs.http[1].title == "Loopback news"
    assert ("www.site.test", 1) in {(q.hostname, q.depth) for q in obs.dns}


@pytest.mark.asyncio
async def test_a_redirect_to_a_loopback_address_not_exempt_is_refused(loopback):
    """The exemption is for the listed servers only: a redirect elsewhere on loopback (the
    volunteer's own machine) is refused as any bogon."""
    other = loopback.http({"/": page(PAGE)})  # listening, but not exempt
    first = loopback.http({"/": redirect(other.url("/"))})
    dns = loopback.dns({"site.test": [first.host]})
    obs = await measure(settings_for(loopback, dns, first), first.url("/", "site.test"))
    assert [(t.ip, t.failure) for t in obs.tcp] == [
        (first.host, None),
        (other.host, failures.REFUSED_BOGON),
    ]
    assert obs.http[-1].failure == failures.REFUSED_BOGON
    assert other.requests == []


@pytest.mark.asyncio
async def test_without_the_exemption_loopback_is_refused(loopback):
    web = loopback.http({"/": page(PAGE)})
    dns = loopback.dns({"site.test": [web.host]})
    obs = await measure(settings_for(loopback, dns), web.url("/", "site.test"))
    assert Settings.__dataclass_fields__["bogons_exempt"].default == ()
    assert [(t.ip, t.port, t.failure) for t in obs.tcp] == [
        (web.host, web.port, failures.REFUSED_BOGON)
    ]
    assert obs.http[0].failure == failures.REFUSED_BOGON
    assert web.requests == []  # not one connection reached it


@pytest.mark.asyncio
async def test_a_reset_after_the_request_is_connection_reset(loopback):
    web = loopback.http({"/": RESET})
    dns = loopback.dns({"site.test": [web.host]})
    obs = await measure(settings_for(loopback, dns, web), web.url("/", "site.test"))
    assert obs.tcp[0].failure is None
    assert obs.http[0].failure == failures.CONNECTION_RESET
    assert len(web.requests) == 1  # the request did arrive


@pytest.mark.asyncio
async def test_a_silent_server_is_a_timeout(loopback):
    web = loopback.http({"/": SILENCE})
    dns = loopback.dns({"site.test": [web.host]})
    settings = settings_for(loopback, dns, web, timeouts=Timeouts(dns=3, tcp=3, tls=3, http=0.5))
    obs = await measure(settings, web.url("/", "site.test"))
    assert obs.tcp[0].failure is None
    assert obs.http[0].failure == failures.GENERIC_TIMEOUT


@pytest.mark.asyncio
async def test_a_closed_port_is_connection_refused(loopback):
    web = loopback.http({"/": page(PAGE)})
    port = web.port
    web.close()  # nothing listens there any more
    dns = loopback.dns({"site.test": [web.host]})
    obs = await measure(settings_for(loopback, dns, web), f"http://site.test:{port}/")
    assert [(t.ip, t.failure) for t in obs.tcp] == [(web.host, failures.CONNECTION_REFUSED)]
    assert obs.http[0].failure == failures.CONNECTION_REFUSED


@pytest.mark.asyncio
async def test_nxdomain_and_a_silent_resolver(loopback):
    dns = loopback.dns({}, silent={"quiet.test"})
    settings = settings_for(loopback, dns, timeouts=Timeouts(dns=0.5, tcp=3, tls=3, http=3))
    gone = await measure(settings, "http://gone.test:8080/")
    assert {q.failure for q in gone.dns} == {failures.DNS_NXDOMAIN}
    assert gone.tcp == [] and gone.http == []
    quiet = await measure(settings, "http://quiet.test:8080/")
    assert {q.failure for q in quiet.dns} == {failures.GENERIC_TIMEOUT}
    assert ("quiet.test", "A") in dns.queries


@pytest.mark.asyncio
async def test_duplicate_dns_replies_are_listened_for(loopback):
    """With a listening window, the lookup still ends with the one reply the server sends."""
    web = loopback.http({"/": page(PAGE)})
    dns = loopback.dns({"site.test": [web.host]})
    settings = settings_for(loopback, dns, web, dns_duplicate_window=0.2)
    obs = await measure(settings, web.url("/", "site.test"))
    assert all(q.duplicate_replies == [] for q in obs.dns)
    assert obs.http[0].status_code == 200


def test_exempt_networks_are_narrow():
    from probe.measure.settings import exempt as is_exempt

    networks = (ipaddress.ip_network("127.9.0.1/32"),)
    assert is_exempt(networks, "127.9.0.1")
    assert not is_exempt(networks, "127.9.0.2")
    assert not is_exempt(networks, "::ffff:127.9.0.1")  # another spelling is not listed
    assert not is_exempt(networks, "not-an-address")
    assert not is_exempt((), "127.9.0.1")
