"""The helper never reaches its own host: its addresses, its local services (issue 16, item 3).

Pure tests read /proc-like files written here; lab tests put "local services" (an admin page
with an internal token, a Redis-like port, a metrics exporter listening on every address) in the
helper's own namespace and show that a probe's request naming them, directly, by an
``::ffff:`` spelling, through a DNS name or through a redirect from a server elsewhere, is
refused and that the service saw no connection (canary).
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from probe.helper.host import (
    REFUSED_OWN_HOST,
    OwnHost,
    local_ipv4,
    local_ipv6,
    read_host,
    wildcard_ports,
)
from probe.helper.requests import REFUSED_BOGON
from tests.test_helper import Helper, measure, request

FIB_TRIE = """\
Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 192.0.2.0/24 2 0 2
        |-- 192.0.2.0
           /24 link UNICAST
        |-- 192.0.2.255
           /32 link BROADCAST
     |-- 198.51.100.0
        /24 host LOCAL
     |-- 203.0.113.7
        /32 host LOCAL
     |-- 203.0.113.8
        /32 link UNICAST
        /32 host LOCAL
Local:
  +-- 0.0.0.0/0 3 0 5
     |-- 203.0.113.7
        /32 host LOCAL
"""
IF_INET6 = """\
00000000000000000000000000000001 01 80 10 80       lo
2001067c12340000000000000000abcd 02 40 00 80     eth0
fe8000000000000000fc00fffe000001 02 40 20 80     eth0
"""
# Listeners: 0.0.0.0:22 and 0.0.0.0:9100, 203.0.113.7:8080 (one address), a connection to
# :443 (not listening); in tcp6: [::]:6379 and [2001:67c:1234::abcd]:80.
TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 00000000:238C 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1
   2: 077100CB:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1
   3: 077100CB:D431 0A0A0A0A:01BB 01 00000000:00000000 00:00000000 00000000     0        0 4 1
"""
TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue
   0: 00000000000000000000000000000000:18EB 00000000000000000000000000000000:0000 0A 0
   1: 7C0601200000341200000000CDAB0000:0050 00000000000000000000000000000000:0000 0A 0
"""


def write_proc(root: Path, fib_trie: str = FIB_TRIE, if_inet6: str | None = IF_INET6) -> Path:
    root.mkdir(exist_ok=True)
    (root / "fib_trie").write_text(fib_trie)
    (root / "tcp").write_text(TCP)
    if if_inet6 is not None:
        (root / "if_inet6").write_text(if_inet6)
        (root / "tcp6").write_text(TCP6)
    return root


def test_ipv4_addresses_are_the_local_routes_of_fib_trie():
    addresses, prefixes = local_ipv4(FIB_TRIE)
    assert addresses == {"127.0.0.1", "203.0.113.7", "203.0.113.8"}
    assert prefixes == [
        ipaddress.IPv4Network("127.0.0.0/8"),
        ipaddress.IPv4Network("198.51.100.0/24"),
    ]


def test_ipv6_addresses_from_if_inet6():
    assert local_ipv6(IF_INET6) == {"::1", "2001:67c:1234::abcd", "fe80::fc:ff:fe00:1"}


def test_wildcard_listeners_only():
    assert wildcard_ports(TCP) == {22, 9100}
    if sys.byteorder == "little":  # /proc writes each 32-bit word in host byte order
        assert wildcard_ports(TCP6) == {6379}


def test_read_host_without_ipv6(tmp_path):
    view = read_host(write_proc(tmp_path / "net", if_inet6=None))
    assert view.addresses == {"127.0.0.1", "203.0.113.7", "203.0.113.8"}
    assert view.wildcard_ports == {22, 9100}
    assert view.owns("198.51.100.99")  # in a local prefix (AnyIP)
    assert not view.owns("203.0.113.9")


def test_listening_everywhere_refuses_every_address_of_the_host_on_every_port(tmp_path):
    host = OwnHost("0.0.0.0", proc_net=write_proc(tmp_path / "net"))
    for ip in ("203.0.113.7", "203.0.113.8", "198.51.100.5", "2001:67c:1234::abcd"):
        for port in (80, 443, 22, 6379, 8080, 12345):
            assert host.refusal(ip, port) == REFUSED_OWN_HOST, (ip, port)
    # Any spelling of them: IPv4-mapped, bracketed, IPv4-compatible, 6to4 of the address.
    for spelling in ("::ffff:203.0.113.7", "::ffff:cb00:7107", "[203.0.113.7]", "::203.0.113.7",
                     "2002:cb00:7107::1", "2001:67C:1234:0:0:0:0:ABCD"):  # fmt: skip
        assert host.refusal(spelling, 80) == REFUSED_OWN_HOST, spelling
    assert host.refusal("203.0.113.9", 80) is None  # not the host's
    assert host.refusal("2001:67c:1234::abce", 80) is None
    assert OwnHost("::", proc_net=tmp_path / "net").refusal("203.0.113.8", 1) == REFUSED_OWN_HOST


def test_listening_on_one_address_refuses_it_and_services_listening_everywhere(tmp_path):
    host = OwnHost("203.0.113.7", proc_net=write_proc(tmp_path / "net"))
    for port in (80, 443, 22, 8080, 12345):
        assert host.refusal("203.0.113.7", port) == REFUSED_OWN_HOST
        assert host.refusal("::ffff:203.0.113.7", port) == REFUSED_OWN_HOST
    # The host's other addresses: refused on the ports a wildcard listener has (22, 9100,
    # 6379 in tcp6), measurable on others, as any public server.
    for ip in ("203.0.113.8", "::ffff:203.0.113.8", "2001:67c:1234::abcd", "198.51.100.5"):
        assert host.refusal(ip, 22) == REFUSED_OWN_HOST, ip
        assert host.refusal(ip, 9100) == REFUSED_OWN_HOST, ip
        assert host.refusal(ip, 443) is None, ip
    assert host.refusal("192.0.2.1", 22) is None  # another machine's sshd


def test_addresses_named_by_the_operator_are_refused_everywhere(tmp_path):
    # A cloud's 1:1 NAT: the public address is on no interface.
    host = OwnHost("203.0.113.7", named=["192.88.99.9"], proc_net=write_proc(tmp_path / "net"))
    assert host.refusal("192.88.99.9", 443) == REFUSED_OWN_HOST
    assert host.refusal("::ffff:c058:6309", 8443) == REFUSED_OWN_HOST


def test_the_host_is_read_again_after_refresh_seconds(tmp_path):
    now = [100.0]
    proc = write_proc(tmp_path / "net")
    host = OwnHost("0.0.0.0", proc_net=proc, refresh=10.0, clock=lambda: now[0])
    assert host.refusal("192.88.99.44", 80) is None
    (proc / "fib_trie").write_text(FIB_TRIE + "     |-- 192.88.99.44\n        /32 host LOCAL\n")
    now[0] += 9.9
    assert host.refusal("192.88.99.44", 80) is None  # the cached reading
    now[0] += 0.1
    assert host.refusal("192.88.99.44", 80) == REFUSED_OWN_HOST  # an address added later


def test_without_proc_the_listen_address_is_still_refused(tmp_path, caplog):
    host = OwnHost("203.0.113.7", proc_net=tmp_path / "absent")
    assert host.refusal("203.0.113.7", 6379) == REFUSED_OWN_HOST
    assert host.refusal("::ffff:203.0.113.7", 6379) == REFUSED_OWN_HOST
    assert host.refusal("203.0.113.8", 22) is None
    assert "cannot read this host's addresses" in caplog.text


# ---------------------------------------------------------------- in the lab

#: The "local services" of the helper's host (lab.net): an admin page on the helper's own
#: address (:6379, :22) and a metrics exporter on every address (:9100).
SERVICES = """
import socket, sys, threading, time
def serve(s):
    while True:
        c, peer = s.accept()
        print("accept", *c.getsockname()[:2], flush=True)  # the address it was reached at
        try:
            c.settimeout(2)
            c.recv(4096)
            c.sendall(b"HTTP/1.1 200 OK\\r\\nX-Internal-Token: s3cr3t\\r\\nContent-Length: 11\\r\\n"
                      b"Connection: close\\r\\n\\r\\nadmin page!")
        except OSError:
            pass
        c.close()
for ip, port in {listeners!r}:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, port))
    s.listen(16)
    threading.Thread(target=serve, args=(s,), daemon=True).start()
print("ready", flush=True)
time.sleep(3600)
"""
REDIRECTOR = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        print("hit", self.path, flush=True)
        self.send_response(302)
        self.send_header("Location", "http://" + self.path.lstrip("/").replace("~", "/")
                         .replace("@6", "[::ffff:").replace("@", "]"))
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer((sys.argv[1], 8000), H).serve_forever()
"""


class Canary:
    """A process in ``ns`` running ``code``, its output lines collected."""

    def __init__(self, lab, ns: str, argv: list[str]) -> None:
        self.proc = lab.spawn(ns, [sys.executable, "-u", *argv], stdout=subprocess.PIPE)
        self.lines: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        for raw in self.proc.stdout:
            line = raw.decode().strip()
            self.lines.append(line)
            if line == "ready":
                self.ready.set()

    def seen(self, prefix: str) -> list[str]:
        return [line for line in self.lines if line.startswith(prefix)]

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


@pytest.fixture(scope="module")
def services(lab):
    site_ip = lab.site("24.kg").ip  # another address of the helper's host, serving a site
    listeners = [(lab.HELPER_IP, 6379), (lab.HELPER_IP, 22), ("0.0.0.0", 9100)]
    canary = Canary(lab, lab.net, ["-c", SERVICES.format(listeners=listeners)])
    try:
        assert canary.ready.wait(10), "the local services did not start"
        # They work: a connection from the helper's host to each is seen.
        for ip, port in [(lab.HELPER_IP, 6379), (lab.HELPER_IP, 22), (site_ip, 9100)]:
            lab.python(lab.net, f"import socket; socket.create_connection(({ip!r}, {port}), 5)")
        deadline = time.monotonic() + 5
        while len(canary.seen("accept")) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(canary.seen("accept")) == sorted(
            [f"accept {lab.HELPER_IP} 6379", f"accept {lab.HELPER_IP} 22", f"accept {site_ip} 9100"]
        )
        canary.lines.clear()
        yield canary
    finally:
        canary.stop()


@pytest.fixture(scope="module")
def redirector(lab):
    """A server outside the helper's host (in the vantage, 192.88.99.2:8000) redirecting
    ``/PATH`` to ``http://PATH`` (``~`` for ``/``, ``@6`` for ``[::ffff:``, ``@`` for ``]``)."""
    canary = Canary(lab, lab.vantage, ["-c", REDIRECTOR, lab.VANTAGE_IP])
    deadline = time.monotonic() + 10
    while True:  # (no "ready" line: the server is up once it accepts)
        try:
            lab.python(
                lab.vantage,
                f"import socket; socket.create_connection(({lab.VANTAGE_IP!r}, 8000), 1)",
            )
            break
        except RuntimeError:
            assert time.monotonic() < deadline, "the redirector did not start"
            time.sleep(0.1)
    yield canary
    canary.stop()


@pytest.fixture(scope="module")
def one_address_helper(lab):
    """A helper listening on its address only (as the lab's helper does), asking the ISP's
    resolver (which lab.dns_lie makes point names at the helper's own address)."""
    h = Helper(lab, 8180, f"udp://{lab.ISP_RESOLVER}")
    yield h
    h.stop()


@pytest.fixture(scope="module")
def everywhere_helper(lab):
    """A helper listening on 0.0.0.0 (the default), reading its host's addresses at each
    check (host_refresh=0), so an address added while it runs is refused at once."""
    h = Helper(lab, 8181, f"udp://{lab.ISP_RESOLVER}", host="0.0.0.0", host_refresh=0.0)
    yield h
    h.stop()


def refused(answer: dict) -> bool:
    http = answer["http_request"]
    return http["failure"] == REFUSED_OWN_HOST and http["status_code"] == -1


def test_lab_the_helpers_own_address_and_services_are_refused(lab, services, redirector,
                                                              one_address_helper):  # fmt: skip
    helper, me = one_address_helper, lab.HELPER_IP
    site = lab.site("24.kg")
    redirector.lines.clear()
    undo = lab.dns_lie("admin.lab-own-host.kg", me)
    try:
        urls = [
            f"http://{me}:6379/",  # the helper's address, another port
            f"http://{me}:22/",
            f"http://[::ffff:{me}]:6379/",  # its IPv4-mapped spellings
            "http://[::ffff:c058:6350]:6379/",
            "http://admin.lab-own-host.kg:6379/",  # a name pointing at it
            f"http://{site.ip}:9100/",  # a service listening on every address of the host
            f"http://[::ffff:{site.ip}]:9100/",
            f"http://{lab.VANTAGE_IP}:8000/{me}:6379~",  # redirects from elsewhere to them
            f"http://{lab.VANTAGE_IP}:8000/@6{me}@:6379~",
            f"http://{lab.VANTAGE_IP}:8000/admin.lab-own-host.kg:6379~",
            f"http://{lab.VANTAGE_IP}:8000/{site.ip}:9100~",
        ]
        answers = {url: measure(lab, helper, request(url)) for url in urls}
        assert [url for url, answer in answers.items() if not refused(answer)] == []
        assert "s3cr3t" not in str(answers)
        # The probe's own tcp_connect list naming them: answered, refused (in any spelling).
        for endpoint in (f"{me}:6379", f"[::ffff:{me}]:6379"):
            answer = measure(lab, helper, request(f"http://{site.ip}:6379/", [endpoint]))
            assert answer["tcp_connect"][endpoint] == {"status": False, "failure": REFUSED_OWN_HOST}
    finally:
        undo()
    assert len(redirector.seen("hit")) == 4  # the redirects were fetched ...
    assert services.seen("accept") == []  # ... and not one connection reached a service
    # The host's other addresses still serve their sites (the lab's outlets are there).
    assert measure(lab, helper, request(site.url("https")))["http_request"]["status_code"] == 200


def test_lab_listening_everywhere_refuses_every_address_of_the_host(lab, services, redirector,
                                                                    everywhere_helper):  # fmt: skip
    helper, me = everywhere_helper, lab.HELPER_IP
    site = lab.site("24.kg")
    extra = "192.88.99.96"  # an address the host gets after the helper started
    lab.run(lab.net, ["ip", "addr", "add", f"{extra}/32", "dev", "lo"]).check_returncode()
    try:
        urls = [
            f"http://{me}:6379/",
            f"http://[::ffff:{me}]:22/",
            f"http://{site.ip}:9100/",
            site.url("https"),  # a site on the host is the host's too, on any port
            f"http://{extra}:9100/",
            f"http://{lab.VANTAGE_IP}:8000/{me}:6379~",
            f"http://{lab.VANTAGE_IP}:8000/{extra}:9100~",
        ]
        answers = {url: measure(lab, helper, request(url)) for url in urls}
        assert [url for url, answer in answers.items() if not refused(answer)] == []
        answer = measure(
            lab, helper, request(f"http://{me}:9100/", [f"{extra}:9100", f"{me}:9100"])
        )
        assert answer["tcp_connect"][f"{extra}:9100"]["failure"] == REFUSED_OWN_HOST
        assert answer["tcp_connect"][f"{me}:9100"]["failure"] == REFUSED_OWN_HOST
        # Bogons are still refused as bogons.
        assert (
            measure(lab, helper, request("http://127.0.0.1:9100/"))["http_request"]["failure"]
            == REFUSED_BOGON
        )
    finally:
        lab.run(lab.net, ["ip", "addr", "del", f"{extra}/32", "dev", "lo"])
    assert services.seen("accept") == []
    # A server elsewhere is still measured (the redirector in the vantage answers 302s).
    answer = measure(lab, helper, request(f"http://{lab.VANTAGE_IP}:8000/"))
    assert answer["http_request"]["failure"] is not None  # its redirect to "http://" is bad
    assert answer["tcp_connect"][f"{lab.VANTAGE_IP}:8000"] == {"status": True, "failure": None}
