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
import re
import socket
import sqlite3
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from probe.app.config import check_config
from probe.app.identity import (
    Found,
    NetworkIdentity,
    _notice,
    decide,
    parse_answer,
    resolver_to_look_up,
    whoami_urls,
)
from probe.errors import BadRequest, HelperAnswerError, InputError
from probe.helper import whoami
from probe.helper.asn import AsInfo, AsnDB
from probe.measure.privacy import SCRUBBED, Scrubber
from tests.lab.hostile import HOSTILE_IP, Hostile

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
    assert found == Found(
        asn="AS8449", cc="KG", name=f"ElCat, you are {SCRUBBED}", address_seen=True
    )
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
    assert parse_answer(json.dumps(data).encode(), scrub) == Found(address_seen=True)
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


def test_what_the_notice_says():
    known = decide(None, probe_asn="AS1", probe_cc="KG")
    nat = Scrubber(["192.168.1.2"], discover=False)
    no_nat = Scrubber(["192.168.1.2", "2.0.0.7"], discover=False)
    why = (["http://h/whoami: connection_refused"], ["http://h/whoami"])
    # Overrides give the AS, but behind a NAT no one told the probe its public address.
    line = _notice(known, None, *why, nat)
    assert line and line.startswith("probe: your public address is unknown")
    assert "connection_refused" in line
    assert _notice(known, None, *why, no_nat) is None  # the address is an interface's
    assert _notice(known, Found(address_seen=True), *why, nat) is None
    # Nothing known: one line for both; with OONI's helpers only, it says so.
    both = _notice(decide(None), None, [], [], nat)
    assert both and "AS number and country are unknown" in both and "OONI's do not" in both
    assert "public address is unknown" in both


def test_nothing_found():
    nothing = decide(None)
    assert nothing == NetworkIdentity()
    assert nothing.unknown() == ["AS number", "country"]
    assert decide(None, probe_asn="AS1").unknown() == ["country"]
    assert decide(None, probe_asn="AS1", probe_cc="KG").identity_source == "override"


# ---------------------------------------------------------------- in the lab, behind a NAT

# Short step timeouts keep runs quick; nothing here depends on them.
TIMEOUTS = [
    "--dns-timeout", "2", "--tcp-timeout", "2", "--tls-timeout", "2",
    "--http-timeout", "4", "--control-timeout", "20",
]  # fmt: skip
ECHO = "echo.kg"  # a site that tells every client its address, in its page and a header


def start_helper(lab, host: str, port: int, *args: str, log=None) -> subprocess.Popen:
    """`probe helper serve` in net at host:port (lab resolver and CA; ``args`` added), its
    output to ``log``; returns once it accepts connections from inside net."""
    argv = [
        sys.executable, "-m", "probe.cli", "helper", "serve", "--listen", f"{host}:{port}",
        "--resolver", f"udp://{lab.CONTROL_RESOLVER}:53", "--ca-file", lab.ca_file, *args,
    ]  # fmt: skip
    proc = lab.spawn(lab.net, argv, stdout=log, stderr=subprocess.STDOUT)
    code = f"import socket; socket.create_connection(({host!r}, {port}), timeout=1)"
    deadline = time.monotonic() + 20
    while True:
        try:
            lab.python(lab.net, code, timeout=5)
            return proc
        except RuntimeError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("probe's test helper did not start") from None
            time.sleep(0.2)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def nat(lab, tmp_path_factory):
    """The home network behind the NAT, the echoing site, and our helper (with the lab's ASN
    table: 192.88.99.0-31 is AS64500 "Lab ISP", KG) logging to a file: (url, log path)."""
    lab.home_network()
    lab.add_site(ECHO, echo_ip=True)
    log = tmp_path_factory.mktemp("helper") / "helper.log"
    with open(log, "wb") as out:
        proc = start_helper(lab, lab.HELPER_IP, 8090, "--asn-db", lab.asn_db, log=out)
    try:
        yield f"http://{lab.HELPER_IP}:8090/", log
    finally:
        stop(proc)
        lab.remove_site(ECHO)


@pytest.fixture
def volunteer(tmp_path):
    """A volunteer's home directory who gave consent: configuration and data in it."""
    home = tmp_path / "volunteer"
    (home / "config" / "probe").mkdir(parents=True)
    (home / "config" / "probe" / "config.toml").write_text('consent = "2026-11-29 00:00:00"\n')
    return home


def env_of(home: Path) -> dict[str, str]:
    return {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_DATA_HOME": str(home / "data"),
        "PROBE_CONFIG": str(home / "config" / "probe" / "config.toml"),
    }


def probe(lab, home: Path, *args: str) -> subprocess.CompletedProcess:
    """`probe ARGS` in the home network, as the volunteer whose home is ``home``."""
    argv = [sys.executable, "-m", "probe.cli", *args]
    return lab.run(lab.home, argv, env=env_of(home), timeout=180)


def check(lab, home: Path, helper: str, *args: str) -> subprocess.CompletedProcess:
    result = probe(
        lab, home, "check", "--json", "--helper", helper, "--control-resolver", lab.DOH_URL,
        "--ca-file", lab.ca_file, *TIMEOUTS, *args,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result


def lines(result: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def database(home: Path) -> Path:
    (db,) = (home / "data").rglob("*.db")
    return db


def run_row(home: Path) -> dict:
    with sqlite3.connect(database(home)) as conn:
        conn.row_factory = sqlite3.Row
        (row,) = conn.execute("select * from runs").fetchall()
        return dict(row)


def echoed(home: Path) -> tuple[list[str], bytes]:
    """What was stored of the echo site's cleartext page: its X-Your-IP header values and
    its body."""
    with sqlite3.connect(database(home)) as conn:
        ((headers, body),) = conn.execute(
            "select headers, body from http_requests where url = ?", [f"http://{ECHO}/"]
        ).fetchall()
    values = [value for name, value in json.loads(headers) if name.lower() == "x-your-ip"]
    return values, zlib.decompress(body)


def occurrences(data: bytes, address: str) -> int:
    """How often ``address`` is in ``data``: dotted (not as part of a longer address) or as
    its four raw bytes."""
    dotted = rb"(?<![0-9.])" + re.escape(address.encode()) + rb"(?![0-9]|\.[0-9])"
    return len(re.findall(dotted, data)) + data.count(socket.inet_aton(address))


def test_occurrences_sees_the_address_and_only_it():
    assert occurrences(b"Your IP is 192.88.99.2.", "192.88.99.2") == 1
    assert occurrences(b"\xc0\x58\x63\x02", "192.88.99.2") == 1
    assert occurrences(b"ip=::ffff:192.88.99.2&", "192.88.99.2") == 1
    for other in (b"192.88.99.20", b"192.88.99.254", b"1192.88.99.2", b"192.88.99.2.1"):
        assert occurrences(other, "192.88.99.2") == 0


def test_the_nat_hides_the_home_address_from_servers(lab, nat):
    """The lab itself: from home, a site sees the public (router's) address only."""
    page = lab.python(
        lab.home,
        f"import urllib.request; print(urllib.request.urlopen('http://{ECHO}/').read().decode())",
    )
    assert f"Your IP address: {lab.VANTAGE_IP}</p>" in page
    assert lab.HOME_IP not in page


def test_identity_found_through_our_helper_behind_a_nat_and_no_address_anywhere(
    lab, nat, volunteer
):
    helper, helper_log = nat
    init = probe(lab, volunteer, "init", "--yes", "--vantage", "nat-test")
    assert init.returncode == 0, init.stderr
    run = check(lab, volunteer, helper, "--input", f"http://{ECHO}/", "--input",
                f"https://{ECHO}/", "--input", "http://kaktus.media/")  # fmt: skip

    # Found without any flag, through our helper: the --json lines, measurements and the run.
    assert "unknown" not in run.stderr
    for line in lines(run):
        assert (line["probe_asn"], line["probe_cc"]) == (f"AS{lab.ISP_ASN}", "KG"), line
    with sqlite3.connect(database(volunteer)) as conn:
        stored = set(conn.execute("select probe_asn, probe_cc from measurements"))
    assert stored == {(f"AS{lab.ISP_ASN}", "KG")}
    row = run_row(volunteer)
    assert (row["probe_asn"], row["probe_cc"], row["probe_network_name"]) == (
        f"AS{lab.ISP_ASN}", "KG", "Lab ISP",
    )  # fmt: skip
    # The resolver from resolv.conf (the ISP's, a public address), and its AS.
    assert (row["resolver_ip"], row["resolver_asn"], row["resolver_network_name"]) == (
        lab.ISP_RESOLVER, f"AS{lab.ISP_ASN}", "Lab ISP",
    )  # fmt: skip
    assert row["identity_source"] == "lookup"
    runs = probe(lab, volunteer, "runs", "--json")
    assert runs.returncode == 0, runs.stderr
    ((listed,),) = [lines(runs)]
    assert (listed["probe_asn"], listed["probe_cc"]) == (f"AS{lab.ISP_ASN}", "KG")

    # The site echoed the public address; it was scrubbed although no interface of the
    # volunteer's machine has it: the helper's /whoami told the probe.
    values, body = echoed(volunteer)
    assert values == [SCRUBBED]
    assert f"Your IP address: {SCRUBBED}</p>".encode() in body

    # Neither address anywhere: the database, its WAL and shared memory (when there), the
    # configuration, the rest of the data directory, the output, the helper's log.
    files = [p for p in volunteer.rglob("*") if p.is_file()]
    assert database(volunteer) in files and (volunteer / "config/probe/config.toml") in files
    blobs = {str(p): p.read_bytes() for p in files}
    blobs |= {
        "probe init output": (init.stdout + init.stderr).encode(),
        "probe check output": (run.stdout + run.stderr).encode(),
        "probe runs output": (runs.stdout + runs.stderr).encode(),
        "helper log": helper_log.read_bytes(),
    }
    for address in (lab.HOME_IP, lab.VANTAGE_IP):
        leaks = {where: n for where, data in blobs.items() if (n := occurrences(data, address))}
        assert not leaks, f"{address} found in {leaks}"
    log = helper_log.read_text()
    # One line for the lookup, saying neither who asked, from which network, nor even the
    # answer's length (it depends on the AS name).
    (lookup,) = [line for line in log.splitlines() if "/whoami" in line]
    assert re.search(r"GET /whoami 200 [0-9.]+s 0B\s*$", lookup), lookup
    assert "Lab ISP" not in log and "resolver" not in log  # nor who asked from where


def test_overrides_win_over_what_was_found(lab, nat, volunteer):
    helper, _ = nat
    config = volunteer / "config" / "probe" / "config.toml"
    config.write_text('consent = "2026-11-29 00:00:00"\nprobe_asn = "AS12345"\nprobe_cc = "DE"\n')
    # The configuration wins over the lookup ...
    run = check(lab, volunteer, helper, "--input", "http://kaktus.media/")
    assert [(x["probe_asn"], x["probe_cc"]) for x in lines(run)] == [("AS12345", "DE")]
    row = run_row(volunteer)
    assert (row["probe_asn"], row["probe_cc"], row["identity_source"]) == (
        "AS12345", "DE", "override",
    )  # fmt: skip
    assert row["probe_network_name"] is None  # "Lab ISP" is AS64500's name, not AS12345's
    assert row["resolver_asn"] == f"AS{lab.ISP_ASN}"  # the resolver is still looked up
    assert "unknown" not in run.stderr

    # ... and a flag over the configuration, field by field.
    database(volunteer).unlink()
    run = check(lab, volunteer, helper, "--input", "http://kaktus.media/", "--probe-asn", "8449")
    assert [(x["probe_asn"], x["probe_cc"]) for x in lines(run)] == [("AS8449", "DE")]
    assert run_row(volunteer)["probe_asn"] == "AS8449"

    # Overridden or not, the public address is still learned and scrubbed.
    echo_db = volunteer / "data" / "echo.db"
    check(lab, volunteer, helper, "--input", f"http://{ECHO}/", "--db", str(echo_db))
    with sqlite3.connect(echo_db) as conn:
        ((headers,),) = conn.execute("select headers from http_requests").fetchall()
    assert ["X-Your-IP", SCRUBBED] in json.loads(headers)


def test_a_helper_without_an_asn_table_still_tells_the_address(lab, nat, volunteer, tmp_path):
    with open(tmp_path / "helper.log", "wb") as out:
        bare = start_helper(lab, lab.HELPER_IP, 8091, log=out)
    try:
        run = check(lab, volunteer, f"http://{lab.HELPER_IP}:8091/", "--input", f"http://{ECHO}/")
    finally:
        stop(bare)
    said = [line for line in run.stderr.splitlines() if "unknown" in line]
    assert len(said) == 1, run.stderr
    assert "AS number and country are unknown" in said[0] and "8091/whoami" in said[0]
    assert "public address" not in said[0]  # the helper said it
    assert [(x["probe_asn"], x["probe_cc"]) for x in lines(run)] == [(None, None)]
    row = run_row(volunteer)
    assert (row["probe_asn"], row["probe_network_name"], row["identity_source"]) == (
        None, None, None,
    )  # fmt: skip
    values, _ = echoed(volunteer)
    assert values == [SCRUBBED]


def test_no_lookup_works_the_run_goes_ahead_and_says_so_once(lab, nat, volunteer):
    """A "helper" that offers no /whoami (the echo site itself: 404): the run happens with the
    AS unknown, one line says so. It also shows what the lookup is for: without it the
    public address of a volunteer behind a NAT is known to no one here, and a page that
    echoes it is stored as it came (the local address is still scrubbed)."""
    run = check(lab, volunteer, f"http://{ECHO}/", "--input", f"http://{ECHO}/")
    said = [line for line in run.stderr.splitlines() if "unknown" in line]
    assert len(said) == 1, run.stderr
    assert f"http://{ECHO}/whoami: " in said[0] and "--probe-asn" in said[0]
    assert "your public address is unknown" in said[0]
    (line,) = lines(run)
    assert (line["probe_asn"], line["probe_cc"]) == (None, None)
    assert run_row(volunteer)["status"] == "complete"
    values, _ = echoed(volunteer)
    assert values == [lab.VANTAGE_IP]  # the known limitation, documented here
    assert occurrences(database(volunteer).read_bytes(), lab.HOME_IP) == 0


def test_forwarded_for_counts_only_from_a_local_proxy(lab, nat):
    helper, _ = nat
    get = (
        "import httpx, json; r = httpx.get({url!r}, headers={{'X-Forwarded-For': {xff!r}}}, "
        "params={params!r}); print(json.dumps([r.status_code, r.json()]))"
    )
    # From the home network, through the NAT: the header is the client's own word, ignored.
    out = lab.python(
        lab.home,
        get.format(url=helper + "whoami", xff="1.0.0.1", params={"resolver": lab.ISP_RESOLVER}),
    )
    status, answer = json.loads(out)
    assert status == 200
    assert answer == {
        "probe_ip": lab.VANTAGE_IP,
        "probe_asn": f"AS{lab.ISP_ASN}",
        "probe_cc": "KG",
        "probe_network_name": "Lab ISP",
        "resolver_ip": lab.ISP_RESOLVER,
        "resolver_asn": f"AS{lab.ISP_ASN}",
        "resolver_cc": "KG",
        "resolver_network_name": "Lab ISP",
    }
    # A helper behind a reverse proxy on its own machine: the proxy's last entry counts.
    proxied = start_helper(lab, "127.0.0.1", 8092, "--asn-db", lab.asn_db)
    try:
        out = lab.python(
            lab.net,
            get.format(url="http://127.0.0.1:8092/whoami", xff="1.0.0.1, 192.88.99.3", params={}),
        )
    finally:
        stop(proxied)
    status, answer = json.loads(out)
    assert (status, answer["probe_ip"], answer["probe_asn"]) == (
        200, "192.88.99.3", f"AS{lab.ISP_ASN}",
    )  # fmt: skip


def test_a_lookup_of_its_own_when_the_helper_offers_none(lab, nat, volunteer):
    """The configuration's ``whoami`` lookups are asked first: here the only one that works."""
    helper, _ = nat
    config = volunteer / "config" / "probe" / "config.toml"
    config.write_text(f'consent = "2026-11-29 00:00:00"\nwhoami = ["{helper}whoami"]\n')
    run = check(lab, volunteer, f"http://{ECHO}/", "--input", f"http://{ECHO}/")
    assert "unknown" not in run.stderr
    assert [(x["probe_asn"], x["probe_cc"]) for x in lines(run)] == [(f"AS{lab.ISP_ASN}", "KG")]
    assert json.loads(run_row(volunteer)["settings"])["whoami"] == [f"{helper}whoami"]
    values, _ = echoed(volunteer)
    assert values == [SCRUBBED]


def test_bad_lookup_urls_are_input_errors():
    with pytest.raises(InputError, match=r"--whoami 'ftp://who.example/': must be an http"):
        check_config(resolver="udp://192.0.2.1", whoami=["ftp://who.example/"])
    config = check_config(resolver="udp://192.0.2.1", whoami=["https://who.example/whoami"])
    assert config.whoami == ("https://who.example/whoami",)


def test_hostile_lookups_cost_little_and_the_next_one_is_asked(lab, nat, volunteer):
    """Lookups that never end, bomb, drip or are not JSON: each gives up within its time and
    size, and the next lookup (our helper's) still finds the network."""
    helper, _ = nat
    cases = ("endless", "gzipbomb", "drip", "notjson", "types/not-an-object", "types/title-number")
    with Hostile(lab) as hostile:
        lookups = [x for case in cases for x in ("--whoami", f"http://{HOSTILE_IP}:8080/{case}")]
        run = check(lab, volunteer, helper, "--input", "http://kaktus.media/",
                    "--control-timeout", "3", *lookups)  # fmt: skip
        sent = hostile.endless_sent()
    assert "unknown" not in run.stderr
    assert [(x["probe_asn"], x["probe_cc"]) for x in lines(run)] == [(f"AS{lab.ISP_ASN}", "KG")]
    assert sent and all(n < 64 << 20 for n in sent)  # stopped at the cap, not at 1 GiB


def test_unknown_said_once_on_stderr_or_only_in_the_log_when_quiet(tmp_path):
    """With no network at all: the run happens; the line is on stderr, or with --quiet only
    in --log-file."""
    nowhere = [
        "--input", "http://192.88.99.1/", "--resolver", "udp://192.88.99.1",
        "--control-resolver", "udp://192.88.99.1", "--helper", "http://192.88.99.1/",
    ]  # fmt: skip

    def offline(*args: str) -> subprocess.CompletedProcess[str]:
        argv = ["unshare", "-n", sys.executable, "-m", "probe.cli", "check", *nowhere, *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120)

    loud = offline("--db", str(tmp_path / "loud.db"))
    assert loud.returncode == 0, loud.stderr
    said = [line for line in loud.stderr.splitlines() if "unknown" in line]
    assert len(said) == 1 and "http://192.88.99.1/whoami: " in said[0], loud.stderr
    log = tmp_path / "probe.log"
    quiet = offline("--db", str(tmp_path / "quiet.db"), "--quiet", "--log-file", str(log))
    assert (quiet.returncode, quiet.stderr) == (0, "")
    assert sum("AS number and country are unknown" in line for line in log.open()) == 1
