"""The probe's own servers under the bogon rule: the network's resolver points the DoH
server's, the helper's, a /whoami lookup's or the collector's name at 192.168.1.1,
127.0.0.1 or 10.0.0.1, and the probe does not connect there (it did: the lab's canaries
caught a ClientHello, a helper request, a whoami request and an upload). A URL that names a
private address itself is connected to as written.
"""

from __future__ import annotations

import json
import sys

import pytest

from probe.errors import BogonRefused
from probe.net.guard import allowed
from tests.lab.hostile import ZONE
from tests.test_hostile import hostile, lines_of, probe_check, rows  # noqa: F401 (a fixture)

# ---------------------------------------------------------------- the rule


def test_a_names_bogons_are_dropped_and_its_public_addresses_kept_once_in_order():
    found = ["10.0.0.1", "192.88.99.54", "::ffff:127.0.0.1", "192.88.99.54", "2001:db8::1",
             "fe80::1%eth0", "::ffff:c058:6337", "2a0e:fff0:1::1"]  # fmt: skip
    assert allowed("dns.example", found) == ["192.88.99.54", "192.88.99.55", "2a0e:fff0:1::1"]


@pytest.mark.parametrize(
    "found", [["127.0.0.1"], ["192.168.1.1", "10.0.0.1"], ["169.254.169.254"], ["::1"],
              ["0.0.0.0"], ["100.64.0.1"], ["::ffff:10.0.0.1"], []],
)  # fmt: skip
def test_a_name_with_only_bogons_is_refused(found):
    with pytest.raises(BogonRefused, match=r"^th\.example resolved only to .* not connected$"):
        allowed("th.example", found)


def test_localhost_is_connected_to_on_loopback_only():
    assert allowed("localhost", ["::1", "127.0.0.1", "192.168.1.1"]) == ["::1", "127.0.0.1"]
    assert allowed("th.localhost.", ["127.0.0.2"]) == ["127.0.0.2"]
    with pytest.raises(BogonRefused):
        allowed("localhost", ["192.88.99.54"])  # the network answered for it: not loopback


# ---------------------------------------------------------------- the lab

LIES = {  # name -> where the ISP's resolver points it (a canary listens at each)
    "doh.lab.test": "10.0.0.1",  # DoH on 443
    "th.lab.test": "127.0.0.1",  # a helper on 8080
    "who.lab.test": "192.168.1.1",  # /whoami on 80
    "collector.lab.test": "192.168.1.1",  # the collector on 443
}


@pytest.fixture
def lies(lab, hostile):  # noqa: F811
    undo = [lab.dns_lie(name, address) for name, address in LIES.items()]
    try:
        yield
    finally:
        for one in undo:
            one()


def test_control_servers_whose_names_point_at_bogons_are_not_connected_to(
    lab,
    hostile,  # noqa: F811
    lies,
    tmp_path,
):
    db = tmp_path / "p.db"
    url = f"http://web.{ZONE}/"
    result = probe_check(
        lab, db, [url], "--whoami", "http://who.lab.test/whoami",
        helper="http://th.lab.test:8080/",
        controls=("https://doh.lab.test/dns-query",),
    )  # fmt: skip
    mid = lines_of(result, 1)[url]["measurement_id"]
    assert hostile.caught() == []
    refused = "unknown_failure: {} resolved only to addresses probe does not connect to"
    ((helper, failure),) = rows(db, "select helper, failure from controls where "
                                "measurement_id = ?", mid)  # fmt: skip
    assert helper == "http://th.lab.test:8080/"
    assert failure.startswith(refused.format("th.lab.test")), failure
    doh = rows(db, "select distinct failure from dns_queries where measurement_id = ? and "
               "engine = 'https'", mid)  # fmt: skip
    assert [f for (f,) in doh] == [refused.format("doh.lab.test") + " (private, loopback or "
                                   "reserved): not connected"]  # fmt: skip
    assert "who.lab.test resolved only to" in result.stderr
    # The collector's name too: the upload fails in one line and nothing reaches the canary.
    upload = lab.run(lab.vantage, [sys.executable, "-m", "probe.cli", "upload", "--db", str(db),
                                   "--collector", "https://collector.lab.test/", "--token",
                                   "t" * 32, "--retries", "0"], timeout=60)  # fmt: skip
    assert upload.returncode == 1, upload.stderr
    assert "Traceback" not in upload.stderr
    assert "collector.lab.test resolved only to addresses probe does not connect to" in (
        upload.stderr
    )
    assert hostile.caught() == []


def test_a_name_that_points_at_a_public_address_works_and_a_private_literal_is_asked(
    lab,
    hostile,  # noqa: F811
    helper,
    tmp_path,
):
    """The rule refuses bogons, not names: the helper by a name the resolver answers truly is
    asked; and one whose URL names a loopback address itself is asked there (the canary)."""
    undo = lab.dns_lie("th.lab.test", lab.HELPER_IP)
    url = lab.site("example.org").url()  # the helper fetches it (the hostile zone it cannot)
    try:
        db = tmp_path / "p.db"
        lines_of(probe_check(lab, db, [url], helper="http://th.lab.test/"), 1)
        answers = rows(db, "select failure, response from controls")
        assert [failure for failure, _ in answers] == [None]
        assert json.loads(answers[0][1])["http_request"]["status_code"] == 200
    finally:
        undo()
    lines_of(probe_check(lab, tmp_path / "q.db", [url], helper="http://127.0.0.1:8080/"), 1)
    caught = hostile.caught()  # the helper's /whoami, then the control request
    assert {c["canary"] for c in caught} == {"127.0.0.1:8080"}
    assert any(c["sent"].startswith("POST / HTTP/1.1\r\n") for c in caught), caught
