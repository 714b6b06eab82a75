"""One client cannot shut the helper for the others (issue 16, item 6).

Each client (peer address; an IPv6 client's /64) always gets a slot while it holds fewer than
half of them, and beyond that only while a quarter stay free for others; a host whose fetch
ran out of time gets a shorter deadline for a while, so a server that never answers does not
hold slots for a whole fetch deadline each. Lab tests assert outcomes (who got served, which
answer), not durations.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from probe.helper.measurement import HelperTimeouts, SlowHosts
from probe.helper.server import Slots, client_of
from tests.test_helper import Helper, measure, request

# ---------------------------------------------------------------- pure


def test_a_client_gets_half_the_slots_and_idle_ones_while_a_quarter_stays_free():
    slots = Slots(8)
    assert (slots.share, slots.reserve) == (4, 2)
    taken = [slots.take("a") for _ in range(10)]
    assert taken[:6] == [None] * 6  # alone, it uses idle capacity beyond its half ...
    assert taken[6:] == ["too many requests from your address in flight, retry later"] * 4
    assert slots.take("b") is None  # ... but another client is served at once
    assert slots.take("b") is None
    assert slots.take("c") == "too many requests in flight, retry later"  # all 8 taken
    slots.give_back("a")
    assert slots.take("a") is not None  # a holds 5: over its half, and only 1 slot is free
    assert slots.take("c") is None  # the free one goes to c
    for _ in range(5):
        slots.give_back("a")
    assert slots.held == {"b": 2, "c": 1} and slots.in_flight == 3


def test_every_client_gets_a_slot_from_a_helper_of_one():
    slots = Slots(1)
    assert slots.take("a") is None
    assert slots.take("b") == "too many requests in flight, retry later"
    slots.give_back("a")
    assert slots.take("b") is None


def test_clients_are_addresses_and_ipv6_slash_64s():
    assert client_of("192.88.99.2", {}) == "192.88.99.2"
    assert client_of("::ffff:192.88.99.2", {}) == "192.88.99.2"
    assert client_of("2001:db8:1:2::5", {}) == client_of("2001:db8:1:2:ffff::9", {})
    assert client_of("2001:db8:1:2::5", {}) == "2001:db8:1:2::/64"
    assert client_of("2001:db8:1:3::5", {}) != client_of("2001:db8:1:2::5", {})
    # Behind a local reverse proxy, the address it forwards; from elsewhere, the header lies.
    assert client_of("127.0.0.1", {"x-forwarded-for": "192.0.2.7"}) == "192.0.2.7"
    assert client_of("192.88.99.2", {"x-forwarded-for": "192.0.2.7"}) == "192.88.99.2"


def test_slow_hosts_are_remembered_for_a_while_and_forgotten_once_answered():
    now = [0.0]
    slow = SlowHosts(remember=600, max_hosts=2, clock=lambda: now[0])
    assert not slow.is_slow("a.kg")
    slow.ran_out_of_time("a.kg")
    assert slow.is_slow("a.kg")
    slow.answered("a.kg")
    assert not slow.is_slow("a.kg")
    slow.ran_out_of_time("a.kg")
    now[0] = 599.9
    assert slow.is_slow("a.kg")
    now[0] = 600.0
    assert not slow.is_slow("a.kg")
    for host in ("a.kg", "b.kg", "c.kg"):  # at most 2: the oldest goes
        slow.ran_out_of_time(host)
    assert [slow.is_slow(h) for h in ("a.kg", "b.kg", "c.kg")] == [False, True, True]


# ---------------------------------------------------------------- in the lab

GREEDY = """
import httpx, json, threading
url, slow, n = {url!r}, {slow!r}, {n}
out, done = [], threading.Condition()
def ask():
    r = httpx.post(url, json={{"http_request": slow, "tcp_connect": []}}, timeout=60)
    with done:
        out.append([r.status_code, r.json()])
        done.notify_all()
threads = [threading.Thread(target=ask) for _ in range(n)]
for t in threads:
    t.start()
with done:  # the refusals come at once; the admitted requests are then all in flight
    done.wait_for(lambda: len(out) >= {refusals}, timeout=5)  # (well within the deadline)
print("refused", len(out), flush=True)
for t in threads:
    t.join()
print(json.dumps(out), flush=True)
"""
OTHER = """
import httpx, json
r = httpx.post({url!r}, json={{"http_request": {page!r}, "tcp_connect": []}}, timeout=60)
print(json.dumps([r.status_code, r.json()]))
"""


@pytest.fixture(scope="module")
def shared_helper(lab):
    """8 slots: a client has 4 for sure, and up to 6 while 2 stay free for others; a fetch
    that never gets its page holds its slot 14 s."""
    timeouts = HelperTimeouts(dns=2.0, http=12.0)
    h = Helper(lab, 8182, f"udp://{lab.CONTROL_RESOLVER}", max_in_flight=8, timeouts=timeouts)
    yield h
    h.stop()


def test_lab_a_client_holding_slow_requests_leaves_room_for_another(lab, shared_helper):
    # The vantage sends 10 requests for a page that never comes (the site accepts, then
    # says nothing for 10 minutes); meanwhile a client elsewhere (in the ISP's namespace, so
    # another address) asks for a page, and gets it.
    site = lab.site("akipress.org")
    never = site.url("https", "/delay/600000")
    code = GREEDY.format(url=shared_helper.url, slow=never, n=10, refusals=4)
    greedy = lab.spawn(lab.vantage, [sys.executable, "-u", "-c", code], stdout=subprocess.PIPE)
    try:
        assert greedy.stdout.readline().decode().startswith("refused ")
        other = lab.python(lab.isp, OTHER.format(url=shared_helper.url, page=site.url("https")))
        status, answer = json.loads(other.strip().splitlines()[-1])
        greedy_out = json.loads(greedy.stdout.readline())
    finally:
        greedy.kill()
        greedy.wait(5)
    assert status == 200, answer
    assert answer["http_request"]["status_code"] == 200  # served while the slow ones waited
    statuses = sorted(s for s, _ in greedy_out)
    assert statuses == [200] * 6 + [503] * 4  # its share plus idle slots; not all of them
    for s, body in greedy_out:
        if s == 503:
            assert body == {"error": "too many requests from your address in flight, retry later"}
        else:
            assert body["http_request"]["failure"] == "generic_timeout_error"


@pytest.fixture(scope="module")
def impatient_helper(lab):
    """A fetch gets 8 s after DNS; 1 s for a host whose fetch ran out of time lately."""
    timeouts = HelperTimeouts(dns=1.5, http=8.0, slow=1.0)
    h = Helper(lab, 8183, f"udp://{lab.CONTROL_RESOLVER}", timeouts=timeouts)
    yield h
    h.stop()


def test_lab_a_host_that_ran_out_of_time_gets_a_shorter_deadline(lab, impatient_helper):
    slow = lab.add_site("slow.lab-helper.kg")
    other = lab.add_site("other.lab-helper.kg")
    try:

        def fetched(url: str) -> dict:
            return measure(lab, impatient_helper, request(url))["http_request"]

        # Never answers: the fetch runs out of its 8 s, and the host is remembered.
        assert fetched(slow.url("https", "/delay/600000"))["failure"] == "generic_timeout_error"
        # 3 s is within 8 s but not within the slow host's 1 s: it is cut short now ...
        assert fetched(slow.url("https", "/delay/3000"))["failure"] == "generic_timeout_error"
        # ... while another host still has its 8 s.
        assert fetched(other.url("https", "/delay/3000"))["status_code"] == 200
        # The slow host answering in time is forgotten: it has its 8 s again.
        assert fetched(slow.url("https"))["status_code"] == 200
        assert fetched(slow.url("https", "/delay/3000"))["status_code"] == 200
    finally:
        lab.remove_site(slow.name)
        lab.remove_site(other.name)
