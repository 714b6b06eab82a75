"""The volunteer's own address in the lab (issue 16 §1 and §8): never a connect target, and
nowhere in what a run stores, prints or exports, in any of the spellings servers use.

A volunteer behind a NAT (``lab.home_network()``: 192.168.77.2, masqueraded by the vantage,
the "home router", to 192.88.99.2) runs ``probe check`` with our helper, whose ``/whoami``
tells the public address. Canaries on the router's public address (80 and 443 of 192.88.99.2
in the vantage) catch any connection: a site redirecting to ``http://192.88.99.2/router-admin``
and the ISP resolver answering with 192.88.99.2 used to reach them. The same run from the
vantage itself (no NAT) finds its address on its interface. A server spelling the client's
address every way (``serve_spellings``, at SPELLER_IP) checks the scrubbing end to end: the
database and its WAL, ``probe show``, ``probe export`` and the check table.

The unit half is tests/test_privacy_spellings.py.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import re
import sqlite3
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

from probe.measure.privacy import SCRUBBED, SCRUBBED_HOST
from probe.model import failures
from tests.lab import REPO_ROOT

VANTAGE_IP = "192.88.99.2"
HOME_IP = "192.168.77.2"
#: Where serve_spellings listens (in net, outside the outlets 100-250 and HOSTILE_IP .251).
SPELLER_IP = "192.88.99.253"
TIMEOUTS = ["--dns-timeout", "2", "--tcp-timeout", "2", "--tls-timeout", "3",
            "--http-timeout", "4", "--control-timeout", "8"]  # fmt: skip
HELPER_PORT = 8094

OWN_REDIRECT = "own-redirect.kg"  # 302 to http://192.88.99.2/router-admin
OWN_REDIRECT_TLS = "own-redirect-tls.kg"  # 302 to https://192.88.99.2/
MAPPED_REDIRECT = "mapped-redirect.kg"  # 302 to http://[::ffff:c058:6302]/router-admin
NAME_REDIRECT = "name-redirect.kg"  # 302 to https://host-192-88-99-2.dsl.isp.kg/
OWN_NAME = "host-192-88-99-2.dsl.isp.kg"  # the ISP resolver answers 192.88.99.2
OWN_ANSWER = "own-answer.kg"  # the ISP resolver answers 192.88.99.2


def spellings(ip: str) -> dict[str, str]:
    """The client's address as servers and ISPs write it (computed here, not by the probe)."""
    a, b, c, d = (int(x) for x in ip.split("."))
    number = int(ipaddress.IPv4Address(ip))
    hi, lo = number >> 16, number & 0xFFFF
    return {
        "dotted": ip,
        "dashed": f"{a}-{b}-{c}-{d}",
        "padded": f"{a:03}-{b:03}-{c:03}-{d:03}",
        "reversed": f"{d}.{c}.{b}.{a}.in-addr.arpa",
        "decimal": str(number),
        "hex": f"{number:08X}",
        "mapped": f"::ffff:{hi:x}:{lo:x}",
        "nat64": f"64:ff9b::{hi:x}:{lo:x}",
        "6to4": f"2002:{hi:x}:{lo:x}::1",
    }


def cookie_value(ip: str) -> str:
    return base64.b64encode(json.dumps({"visitor": 7, "ip": ip}).encode()).decode()


def page(peer: str) -> tuple[dict[str, str], bytes]:
    """What serve_spellings answers ``peer``: headers and an HTML body, the address in them
    in every spelling, and other addresses and version numbers that must be kept."""
    s = spellings(peer)
    headers = {
        "Content-Type": "text/html; charset=utf-8",
        "X-Client-Decimal": s["decimal"],
        "X-Client-Mapped": s["mapped"],
        "X-Client-Host": f"host-{s['dashed']}.dsl.isp.kg",
        "Set-Cookie": f"v={cookie_value(peer)}; Path=/",
    }
    lines = [f"<title>Blocked for host-{s['dashed']}.dsl.isp.kg</title>"]
    lines += [f"<p>{name}: {value}</p>" for name, value in s.items()]
    lines += [
        f"<p>ip.{peer} dslb-{s['padded']}.pools.isp.kg 0x{s['hex'].lower()}</p>",
        "<p>kept: upstream 192.88.99.100, nginx 1.18.0.2, OpenSSL 1.1.1.1</p>",
    ]
    return headers, "\n".join(lines).encode()


def serve_spellings(address: str, ready: str) -> None:
    """An HTTP server on ``address``:80 answering every request with ``page(peer)``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            headers, body = page(writer.get_extra_info("peername")[0])
            head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            writer.write(
                f"HTTP/1.1 200 OK\r\n{head}Content-Length: {len(body)}\r\n"
                f"Connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        await asyncio.start_server(handle, address, 80)
        Path(ready).write_text("ok")
        await asyncio.Event().wait()

    asyncio.run(main())


def _wait_file(path: Path, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 20
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.05)


class Canaries:
    """Listeners on the vantage's public address (the home router's admin ports)."""

    def __init__(self, lab: Any, workdir: Path) -> None:
        self.log = workdir / "canary.log"
        ready = workdir / "canary.ready"
        specs = [f"{VANTAGE_IP}:80", f"{VANTAGE_IP}:443"]
        argv = [sys.executable, "-m", "tests.lab.hostile", "canary", str(self.log), str(ready)]
        self.proc = lab.spawn(lab.vantage, [*argv, *specs], env={"PYTHONPATH": str(REPO_ROOT)})
        _wait_file(ready, self.proc, "the canaries")

    def caught(self) -> list[dict[str, Any]]:
        """What they caught, and forget it."""
        if not self.log.exists():
            return []
        lines = self.log.read_text().splitlines()
        self.log.unlink()
        return [json.loads(line) for line in lines]

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def world(lab, tmp_path_factory):
    """The home network, our helper (with /whoami), the canaries, the hostile sites and
    resolver answers, and the spelling server; all undone afterwards."""
    workdir = tmp_path_factory.mktemp("privacy-lab")
    lab.home_network()
    started: list[subprocess.Popen] = []
    canaries = None
    undo = []
    added: list[str] = []
    try:
        started.append(lab.start_probe_helper(port=HELPER_PORT))
        canaries = Canaries(lab, workdir)
        # The canaries work (so their silence means something): from home, through the NAT.
        code = f"import socket; socket.create_connection(('{VANTAGE_IP}', 80), timeout=5)"
        lab.python(lab.home, code)
        deadline = time.monotonic() + 10
        while not canaries.log.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [c["canary"] for c in canaries.caught()] == [f"{VANTAGE_IP}:80"]

        for name, location in [
            (OWN_REDIRECT, f"http://{VANTAGE_IP}/router-admin"),
            (OWN_REDIRECT_TLS, f"https://{VANTAGE_IP}/"),
            (MAPPED_REDIRECT, "http://[::ffff:c058:6302]/router-admin"),
            (NAME_REDIRECT, f"https://{OWN_NAME}/"),
        ]:
            lab.add_site(name, redirects={"/": (302, location)})
            added.append(name)
        undo += [lab.dns_lie(OWN_NAME, VANTAGE_IP), lab.dns_lie(OWN_ANSWER, VANTAGE_IP)]

        subprocess.run(["ip", "-n", lab.net, "addr", "add", f"{SPELLER_IP}/32", "dev", "lo"],
                       check=True)  # fmt: skip
        undo.append(
            lambda: subprocess.run(
                ["ip", "-n", lab.net, "addr", "del", f"{SPELLER_IP}/32", "dev", "lo"], check=False
            )
        )
        ready = workdir / "speller.ready"
        code = f"from tests.test_privacy_lab import serve_spellings; serve_spellings({SPELLER_IP!r}, {str(ready)!r})"  # noqa: E501
        started.append(
            lab.spawn(lab.net, [sys.executable, "-c", code], env={"PYTHONPATH": str(REPO_ROOT)})
        )
        _wait_file(ready, started[-1], "the spelling server")
        yield canaries
    finally:
        for proc in started:
            proc.kill()
            proc.wait(10)
        if canaries is not None:
            canaries.close()
        for name in added:
            lab.remove_site(name)
        for u in reversed(undo):
            u()


def probe(lab: Any, ns: str, *args: str) -> subprocess.CompletedProcess:
    result = lab.run(ns, [sys.executable, "-m", "probe.cli", *args], timeout=180)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result


def check(lab: Any, ns: str, db: Path, urls: list[str], *extra: str) -> subprocess.CompletedProcess:
    helper = f"http://{lab.HELPER_IP}:{HELPER_PORT}/"
    argv = ["check", "--db", str(db), "--helper", helper, "--control-resolver", lab.DOH_URL,
            "--ca-file", lab.ca_file, *TIMEOUTS, *extra]  # fmt: skip
    for url in urls:
        argv += ["--input", url]
    return probe(lab, ns, *argv)


def rows(db: Path, sql: str, *args: Any) -> list[tuple]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute(sql, args).fetchall()


def measurement(db: Path, url: str) -> str:
    ((mid,),) = rows(db, "select id from measurements where input = ?", url)
    return mid


def _cell(cell: Any) -> str:
    if isinstance(cell, bytes):
        try:
            cell = zlib.decompress(cell)  # bodies are stored compressed
        except zlib.error:
            pass
        return cell.decode("latin-1")
    return str(cell)


def everything(lab: Any, ns: str, db: Path, result: subprocess.CompletedProcess) -> dict[str, str]:
    """Where the address must not be: every cell of the database, the database's and its
    WAL's bytes, the run's output, `probe show` of the run and of each measurement, the OONI
    export."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        tables = [t for (t,) in conn.execute("select name from sqlite_master where type='table'")]
        cells = [
            _cell(c) for t in tables for row in conn.execute(f"select * from [{t}]") for c in row
        ]
    blobs = {"cells": "\n".join(cells), "output": result.stdout + result.stderr}
    for path in db.parent.glob(db.name + "*"):  # the WAL and shared memory too, when there
        blobs[path.name] = path.read_bytes().decode("latin-1")
    for (run_id,) in rows(db, "select id from runs"):
        blobs[f"show {run_id}"] = probe(lab, ns, "show", "--db", str(db), run_id).stdout
    for (mid,) in rows(db, "select id from measurements"):
        blobs[f"show {mid}"] = probe(lab, ns, "show", "--db", str(db), mid).stdout
        blobs[f"show --json {mid}"] = probe(lab, ns, "show", "--db", str(db), "--json", mid).stdout
    blobs["export"] = probe(lab, ns, "export", "--db", str(db)).stdout
    assert blobs["export"].count("\n") == len(rows(db, "select id from measurements"))
    return blobs


def leaks(blobs: dict[str, str], address: str) -> dict[str, list[str]]:
    """Where each spelling of ``address`` is (case-insensitive, not inside a longer number)."""
    found: dict[str, list[str]] = {}
    for name, spelling in spellings(address).items():
        pattern = re.compile(rf"(?<![0-9a-f]){re.escape(spelling)}(?![0-9a-f])", re.IGNORECASE)
        where = [blob for blob, text in blobs.items() if pattern.search(text)]
        if where:
            found[name] = where
    cookie = cookie_value(address)
    where = [blob for blob, text in blobs.items() if cookie[4:-4] in text]
    if where:
        found["base64 cookie"] = where
    return found


URLS = [
    f"http://{OWN_REDIRECT}/",
    f"http://{OWN_REDIRECT_TLS}/",
    f"http://{MAPPED_REDIRECT}/",
    f"http://{NAME_REDIRECT}/",
    f"http://{OWN_ANSWER}/",
    f"https://{OWN_ANSWER}/",
    f"http://{SPELLER_IP}/",
]


def from_the_probe(caught: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The connections the canaries caught from the vantage or the home network (the test
    helper's come from net: it follows redirects itself, which is its own business)."""
    return [c for c in caught if c["peer"].split("'")[1] in (VANTAGE_IP, HOME_IP)]


@pytest.mark.parametrize("where", ["home", "vantage"])
def test_the_vantage_address_is_never_connected_to_stored_printed_nor_exported(
    lab, world, tmp_path, where
):
    """Behind the NAT the public address comes from /whoami; on the vantage itself, from its
    interface. Either way: no connection to it, refusals recorded, and no spelling of it
    anywhere, while the address of the server the page came from is kept."""
    ns = lab.home if where == "home" else lab.vantage
    db = tmp_path / "p.db"
    # The ISP resolver answers the vantage's address: neither the probe nor the helper (which
    # is not given it as an endpoint) connects there.
    answered = check(lab, ns, db, URLS[4:6], "--json")
    assert world.caught() == []
    # Redirects to it, and the page spelling it: the check table, as a volunteer sees it.
    result = check(lab, ns, db, URLS[:4] + URLS[6:])
    assert from_the_probe(world.caught()) == []  # not the router's admin page, nor its TLS

    for url in URLS[:4]:  # a redirect to the vantage's own address, however spelled
        mid = measurement(db, url)
        hops = rows(db, "select hop, url, ip, failure from http_requests where "
                    "measurement_id = ? order by hop", mid)  # fmt: skip
        assert [h[0] for h in hops] == [0, 1], hops
        _, next_url, ip, failure = hops[1]
        assert (ip, failure) == (None, failures.REFUSED_OWN_ADDRESS), hops
        assert next_url.split("/")[2] == SCRUBBED_HOST
        refused = rows(db, "select distinct ip, failure from tcp_connects where "
                       "measurement_id = ? and depth = 1", mid)  # fmt: skip
        assert refused == [(SCRUBBED, failures.REFUSED_OWN_ADDRESS)], (url, refused)
        assert rows(db, "select count(*) from tls_handshakes where measurement_id = ? and "
                    "depth = 1", mid) == [(0,)]  # fmt: skip
        ((verdict, reason),) = rows(db, "select verdict, reason from measurements where id = ?",
                                    mid)  # fmt: skip
        assert verdict == "inconclusive" and "own address" in reason, (url, verdict, reason)
    # The redirect's name, as asked of the resolver, is scrubbed like the URL's host.
    mid = measurement(db, f"http://{NAME_REDIRECT}/")
    lookups = rows(db, "select distinct hostname, addresses from dns_queries where "
                   "measurement_id = ? and depth = 1 and query_type = 'A'", mid)  # fmt: skip
    assert lookups == [(SCRUBBED_HOST, json.dumps([SCRUBBED]))]
    for url in URLS[4:6]:  # the ISP resolver answers the vantage's own address
        mid = measurement(db, url)
        answers = rows(db, "select addresses from dns_queries where measurement_id = ? and "
                       "engine = 'system' and query_type = 'A'", mid)  # fmt: skip
        assert answers == [(json.dumps([SCRUBBED]),)]
        connects = rows(db, "select distinct ip, failure from tcp_connects where "
                        "measurement_id = ?", mid)  # fmt: skip
        assert connects == [(SCRUBBED, failures.REFUSED_OWN_ADDRESS)]

    # The page that spells the client's address every way: fetched, kept, scrubbed.
    mid = measurement(db, f"http://{SPELLER_IP}/")
    ((status, title, headers, body),) = rows(
        db, "select status_code, title, headers, body from http_requests where "
        "measurement_id = ?", mid)  # fmt: skip
    assert status == 200 and title == f"Blocked for host-{SCRUBBED}.dsl.isp.kg"
    text = zlib.decompress(body).decode()
    assert text.count(SCRUBBED) >= len(spellings(VANTAGE_IP)) + 3
    assert "upstream 192.88.99.100, nginx 1.18.0.2, OpenSSL 1.1.1.1" in text  # nothing else
    assert [v for k, v in json.loads(headers) if k == "X-Client-Decimal"] == [SCRUBBED]
    (cookie,) = [v for k, v in json.loads(headers) if k == "Set-Cookie"]
    assert SCRUBBED in cookie and cookie.endswith("; Path=/")

    blobs = everything(lab, ns, db, result) | {"output --json": answered.stdout + answered.stderr}
    assert SCRUBBED in blobs["cells"] and SCRUBBED in blobs["export"]  # this test can fail
    for address in (VANTAGE_IP, HOME_IP):
        found = leaks(blobs, address)
        assert not found, f"{address}: {found}"
