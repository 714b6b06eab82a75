"""``HelperClient`` against a real ``probe helper serve`` on loopback, without root.

The helper runs as a process of its own: through the CLI, which cannot exempt any bogon (so it
refuses to measure the loopback servers, and says so in its answer), or through its Python
entry point with ``HelperConfig.bogons_exempt`` listing the test's servers (so it measures
them as it would public ones). Its resolver is the test's DNS server.
"""

from __future__ import annotations

import itertools
import json

import pytest

from probe.measure.control import HelperClient
from probe.measure.measurer import Measurer
from probe.model import failures
from probe.net.connections import Clock
from probe.net.kept import KeptClient
from probe.ooni.helper_protocol import control_request
from tests.loopback import HelperProcess, Reply, exempt, page
from tests.test_core_measure import PAGE, settings_for, target

HEADERS = {"User-Agent": "probe-test", "Accept": "*/*"}


@pytest.fixture
def site(loopback):
    """A page at http://site.test:PORT/ and the DNS server that knows it."""
    web = loopback.http({"/": page(PAGE)})
    dns = loopback.dns({"site.test": [web.host]})
    return web, dns


async def ask(helpers: list[str], request, ssl_context=None, **kwargs):
    import ssl

    client = KeptClient(ssl_context or ssl.create_default_context(), 4)
    try:
        return await HelperClient(helpers, client, **kwargs).control(request, Clock())
    finally:
        await client.aclose()


@pytest.mark.asyncio
async def test_the_cli_helper_answers_but_refuses_loopback(site):
    """``probe helper serve`` has no way to exempt a bogon: its answer lists the probe's
    loopback endpoint as refused and fetches nothing, whatever the request asks."""
    web, dns = site
    url = web.url("/", "site.test")
    with HelperProcess(resolver=dns.url) as helper:
        request = control_request(url, [f"{web.host}:{web.port}"], HEADERS)
        request["bogons_exempt"] = ["127.0.0.0/8"]  # not part of the protocol: ignored
        record = await ask([helper.url], request)
    assert record.failure is None and record.helper == helper.url
    answer = record.response
    assert answer["dns"] == {"failure": None, "addrs": [web.host]}
    endpoint = f"{web.host}:{web.port}"
    assert answer["tcp_connect"][endpoint] == {"status": False, "failure": failures.REFUSED_BOGON}
    assert answer["http_request"]["status_code"] == -1
    assert answer["ip_info"][web.host]["flags"] & 4  # a bogon, flagged
    assert web.requests == []
    assert ("site.test", "A") in dns.queries


@pytest.mark.asyncio
async def test_an_exempting_helper_measures_the_page(site, certificates):
    web, dns = site
    url = web.url("/", "site.test")
    exempt_net = (f"{web.host}/32",)
    with HelperProcess(resolver=dns.url, bogons_exempt=exempt_net) as helper:
        request = control_request(url, [f"{web.host}:{web.port}"], HEADERS)
        record = await ask([helper.url], request)
    assert record.failure is None
    answer = record.response
    assert answer["tcp_connect"][f"{web.host}:{web.port}"] == {"status": True, "failure": None}
    http = answer["http_request"]
    assert http["failure"] is None and http["status_code"] == 200
    assert http["title"] == "Loopback news" and http["body_length"] == len(PAGE)
    # The helper's fetch is the one request the page got; it forwarded the probe's User-Agent.
    assert [r.headers["user-agent"] for r in web.requests] == ["probe-test"]


@pytest.mark.asyncio
async def test_helpers_are_tried_in_turn(site, loopback):
    """A helper that is down, then one answering 500, then a working one: the record names
    the one that answered; a later request starts after the failed ones."""
    web, dns = site
    down = loopback.http()
    down_url = down.url("/")
    down.close()
    broken = loopback.http({"/": Reply(500, b"oops")})
    with HelperProcess(resolver=dns.url) as helper:
        request = control_request(web.url("/", "site.test"), [], HEADERS)
        helpers = [down_url, broken.url("/"), helper.url]
        client = KeptClient(loopback.client_context(), 4)
        try:
            helper_client = HelperClient(helpers, client)
            first = await helper_client.control(request, Clock())
            second = await helper_client.control(request, Clock())
        finally:
            await client.aclose()
    assert first.failure is None and first.helper == helper.url
    assert first.response["dns"]["addrs"] == [web.host]
    assert second.helper == helper.url and second.failure is None
    assert len(broken.requests) == 1  # the second request started after the failed ones


@pytest.mark.asyncio
async def test_no_helper_answering_is_a_recorded_failure(loopback):
    broken = loopback.http({"/": Reply(500, b"oops")})
    garbage = loopback.http({"/": Reply(200, b"{not json")})
    request = control_request("http://site.test/", [], HEADERS)
    record = await ask([broken.url("/")], request)
    assert record.response is None and "HTTP 500" in record.failure
    record = await ask([garbage.url("/")], request)
    assert record.response is None and "unusable" in record.failure


@pytest.mark.asyncio
async def test_a_busy_helper_is_asked_again(site, loopback):
    """503 with Retry-After: the client waits and asks again, and takes the next answer."""
    web, dns = site
    with HelperProcess(resolver=dns.url) as helper:
        request = control_request(web.url("/", "site.test"), [], HEADERS)
        real = await ask([helper.url], request)
    busy_reply = Reply(503, b"busy", [("Retry-After", "0")])
    good_reply = Reply(200, json.dumps(real.response).encode())
    answers = itertools.chain([busy_reply] * 2, itertools.repeat(good_reply))
    busy = loopback.http({"/": lambda _request: next(answers)})
    record = await ask([busy.url("/")], request)
    assert record.failure is None and record.response == real.response
    assert len(busy.requests) == 3


@pytest.mark.asyncio
async def test_measure_with_the_control(site, loopback):
    """A whole measurement with its control from a real helper: both saw the page."""
    web, dns = site
    with HelperProcess(resolver=dns.url, bogons_exempt=(f"{web.host}/32",)) as helper:
        settings = settings_for(loopback, dns, web)
        client = KeptClient(settings.ssl_context, 4)
        try:
            helpers = HelperClient([helper.url], client, timeout=30)
            measurer = Measurer(settings, doh_client=None, helpers=helpers)
            obs = await measurer.measure(target(web.url("/", "site.test")))
        finally:
            await client.aclose()
    assert obs.http[0].status_code == 200
    control = obs.control
    assert control.failure is None and control.helper == helper.url
    assert control.response["tcp_connect"][f"{web.host}:{web.port}"]["status"] is True
    assert control.response["http_request"]["title"] == "Loopback news"
    assert len(web.requests) == 2  # the probe's fetch and the helper's


def test_exempt_lists_exactly_the_servers(site):
    web, dns = site
    assert [str(n) for n in exempt(web)] == [f"{web.host}/32"]


def test_the_harness_stops_everything_when_a_test_fails(certificates):
    """A failing test's servers stop: listeners closed, a client held in silence let go,
    every thread joined."""
    import socket
    import threading

    from tests.loopback import SILENCE, Loopback

    before = set(threading.enumerate())
    servers = Loopback(certificates)
    held = None
    try:
        with pytest.raises(RuntimeError, match="the test failed"):
            try:
                web = servers.http({"/": SILENCE})
                dns = servers.dns({"site.test": [web.host]})
                held = socket.create_connection((web.host, web.port), timeout=30)
                held.sendall(b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n")
                raise RuntimeError("the test failed")
            finally:
                servers.close()
        assert held.recv(1) == b""  # the silent server closed the connection at its stop
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((web.host, web.port), timeout=30)
        assert set(threading.enumerate()) <= before
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind((dns.host, dns.port))  # its port is free again
        probe.close()
    finally:
        if held is not None:
            held.close()
