"""Tests of the censorship lab itself: every primitive, observed from inside the vantage with
plain Python clients (tests/lab/clients.py run through ``lab.call``)."""

import base64
import os
import re
import signal
import subprocess
import sys
import time
import zlib

import pytest

from tests.lab import REPO_ROOT, Lab, list_lab_namespaces, sweep_stale
from tests.lab.servers import NOTICE_TITLE, cyrillic_title

SENTENCE = Lab.BLOCKPAGE_SENTENCE
UNREACHABLE = {"ENETUNREACH", "EHOSTUNREACH"}


def v(lab, func, *args, **kwargs):
    return lab.call(lab.vantage, func, *args, **kwargs)


def resolve(lab, server, name, proto="udp", **kw):
    if proto == "doh":
        kw.update(cafile=lab.ca_file, url=lab.DOH_URL)
    if proto == "dot":
        kw.update(cafile=lab.ca_file)
    return v(lab, "dns_query", server, name, proto, **kw)


# ---------------------------------------------------------------- isolation and cleanup


def host_snapshot():
    def out(argv):
        return subprocess.run(argv, capture_output=True, text=True).stdout

    ipt = out(["iptables-save"])
    ipt = "\n".join(
        re.sub(r"\[\d+:\d+\]", "", line) for line in ipt.splitlines() if not line.startswith("#")
    )
    return {
        "route": out(["ip", "route"]),
        "route6": out(["ip", "-6", "route"]),
        "iptables": ipt,
        "links": out(["ip", "-o", "link", "show"]).count("\n"),
    }


def test_outside_world_is_unreachable_at_once(lab):
    r = v(lab, "connect", "1.1.1.1", 443, timeout=5)
    assert r["result"] in UNREACHABLE, r
    r = v(lab, "connect", "2606:4700:4700::1111", 443, timeout=5)
    assert r["result"] in UNREACHABLE | {"EADDRNOTAVAIL", "EAFNOSUPPORT"}, r
    # from the internet side too
    r = lab.call(lab.net, "connect", "8.8.8.8", 53, timeout=5)
    assert r["result"] in UNREACHABLE, r


def test_host_network_untouched_by_a_lab():
    before = host_snapshot()
    with Lab(sites=["example.org"]) as other:
        names = set(other.namespaces)
        assert names <= set(list_lab_namespaces())
        assert other.call(other.vantage, "system_resolve", "example.org")["result"] == "ok"
        assert host_snapshot() == before
    assert not names & set(list_lab_namespaces())
    for ns in names:
        assert not os.path.exists(f"/etc/netns/{ns}")
    assert host_snapshot() == before


CHILD = """
import os, signal, sys, time
# Ctrl-C as a terminal's child gets it: a process started in the background by a shell
# without job control inherits SIGINT ignored, and would never see the signal at all.
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path.insert(0, {root!r})
from tests.lab import Lab
lab = Lab(sites=["example.org"]).start()
print(" ".join(lab.namespaces), flush=True)
if sys.argv[1] == "raise":
    raise RuntimeError("deliberate failure with a lab up")
time.sleep(60)
"""


@pytest.mark.parametrize("how", ["raise", "sigterm", "sigint"])
def test_lab_cleans_up_after_a_failing_or_killed_process(how):
    code = CHILD.format(root=str(REPO_ROOT))
    p = subprocess.Popen(
        [sys.executable, "-c", code, how], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    names = p.stdout.readline().split()
    assert len(names) == 3, p.stderr.read() if p.poll() is not None else names
    assert set(names) <= set(list_lab_namespaces())
    if how == "sigterm":
        p.send_signal(signal.SIGTERM)
    elif how == "sigint":
        p.send_signal(signal.SIGINT)
    p.wait(timeout=30)
    assert p.returncode != 0
    assert not set(names) & set(list_lab_namespaces())
    for ns in names:
        assert not os.path.exists(f"/etc/netns/{ns}")


def test_stale_namespaces_of_dead_owners_are_swept():
    dead = subprocess.Popen(["true"])
    dead.wait()
    ns = f"plab-{dead.pid}-1-net"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    os.makedirs(f"/etc/netns/{ns}", exist_ok=True)
    try:
        assert ns in sweep_stale()
        assert ns not in list_lab_namespaces()
        assert not os.path.exists(f"/etc/netns/{ns}")
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


# ---------------------------------------------------------------- the honest path


def test_honest_web(clean_lab):
    lab = clean_lab
    r = v(lab, "httpx_get", "http://24.kg/")
    assert r["status"] == 200 and r["headers"]["x-lab-site"] == "24.kg"
    assert "<title>24.kg — lab news</title>" in r["body"]
    r2 = v(lab, "httpx_get", "https://24.kg/", cafile=lab.ca_file)
    assert r2["status"] == 200 and r2["body"] == r["body"]
    other = v(lab, "httpx_get", "https://kloop.kg/", cafile=lab.ca_file)
    assert other["headers"]["x-lab-site"] == "kloop.kg" and other["body"] != r["body"]
    r = v(lab, "httpx_get", "https://24.kg/redirect/3", cafile=lab.ca_file)
    assert r["status"] == 200 and r["history"] == [302, 302, 302] and "lab news" in r["body"]
    r = v(lab, "httpx_get", "https://24.kg/redirect/12", cafile=lab.ca_file, max_redirects=10)
    assert r["result"] == "too_many_redirects"
    r = v(lab, "httpx_get", "https://24.kg/large", cafile=lab.ca_file)
    assert r["status"] == 200 and r["length"] == 2 * 1024 * 1024
    r = v(lab, "httpx_get", "http://24.kg/delay/50")
    assert r["status"] == 200 and "24.kg" in r["body"]
    r = v(lab, "httpx_get", "https://яндекс.рф/", cafile=lab.ca_file)
    assert r["status"] == 200 and r["headers"]["x-lab-site"] == "xn--d1acpjx3f.xn--p1ai"
    assert "яндекс.рф — lab news" in r["body"]


def test_virtual_hosts_by_sni_and_host(clean_lab):
    lab = clean_lab
    ip = lab.site("kaktus.media").ip
    r = v(lab, "http", ip, "vesti.kg", "/", port=443, sni=True, cafile=lab.ca_file)
    assert r["status"] == 200 and r["headers"]["x-lab-site"] == "vesti.kg"
    r = v(lab, "http", ip, "vesti.kg", "/")
    assert r["headers"]["x-lab-site"] == "vesti.kg"


def test_sites_added_at_run_time(lab):
    new = lab.add_site("news.lab-added.kg", extra_ips=["192.88.99.249"])
    assert new.ip not in {s.ip for s in lab.sites.values() if s is not new}
    for server in (lab.ISP_RESOLVER, lab.CONTROL_RESOLVER):
        r = resolve(lab, server, "news.lab-added.kg")
        assert r["addresses"] == sorted([new.ip, "192.88.99.249"]), r
    for ip in new.ips:
        r = v(lab, "http", ip, new.host, "/", port=443, sni=True, cafile=lab.ca_file)
        assert r["status"] == 200 and r["headers"]["x-lab-site"] == new.host

    lab.add_site("secure.lab-added.kg", https_only_redirect=True)
    r = v(lab, "httpx_get", "http://secure.lab-added.kg/x", follow_redirects=False)
    assert r["status"] == 301 and r["headers"]["location"] == "https://secure.lab-added.kg/x"
    r = v(lab, "httpx_get", "http://secure.lab-added.kg/", cafile=lab.ca_file)
    assert r["status"] == 200 and r["url"] == "https://secure.lab-added.kg/"

    for kind in ("wrong-name", "self-signed", "expired"):
        site = lab.add_site(f"{kind}.lab-added.kg", cert=kind)
        r = v(lab, "tls", site.ip, site.host, cafile=lab.ca_file)
        assert r["result"] == "cert", (kind, r)
        assert v(lab, "tls", site.ip, site.host)["result"] == "ok"  # unverified works
    lab.remove_site("wrong-name.lab-added.kg")
    r = resolve(lab, lab.CONTROL_RESOLVER, "wrong-name.lab-added.kg")
    assert r["result"] == "NXDOMAIN"


def test_honest_dns_everywhere(clean_lab):
    lab = clean_lab
    ip = lab.site("24.kg").ip
    assert v(lab, "system_resolve", "24.kg") == {"result": "ok", "addresses": [ip]}
    for server, proto in [
        (lab.ISP_RESOLVER, "udp"),
        (lab.ISP_RESOLVER, "tcp"),
        (lab.CONTROL_RESOLVER, "udp"),
        (lab.CONTROL_RESOLVER, "tcp"),
        (lab.CONTROL_RESOLVER, "dot"),
        (None, "doh"),
    ]:
        if proto == "doh":
            r = resolve(lab, server, "24.kg", proto, method="GET")
            assert r["addresses"] == [ip], r
        assert resolve(lab, server, "24.kg", proto)["addresses"] == [ip], (server, proto)
        assert resolve(lab, server, "no-such.example", proto)["result"] == "NXDOMAIN"
        r = resolve(lab, server, "24.kg", proto, rdtype="AAAA")
        assert r == {"result": "ok", "addresses": []}, (server, proto, r)


def test_asn_db(lab):
    lines = [line.split("\t") for line in open(lab.asn_db).read().splitlines()]
    assert lines[0] == ["192.88.99.0", "192.88.99.31", "64500", "KG", "Lab ISP"]
    assert lines[1] == ["192.88.99.32", "192.88.99.99", "64501", "ZZ", "Lab Internet"]
    ip = lab.site("24.kg").ip
    row = next(r for r in lines if r[0] == ip)
    assert row == [ip, ip, str(Lab.outlet_asn(ip)), "ZZ", "Lab outlet"]


def test_spawn_in_net(clean_lab):
    lab = clean_lab
    p = lab.spawn(
        lab.net,
        [sys.executable, "-m", "http.server", "--bind", lab.HELPER_IP, "80"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30  # only against a hang
        while v(lab, "connect", lab.HELPER_IP, 80)["result"] != "ok":  # until it listens
            assert time.monotonic() < deadline and p.poll() is None, "http.server never listened"
            time.sleep(0.05)
        r = v(lab, "http", lab.HELPER_IP, lab.HELPER_IP, "/")
        assert r["status"] == 200
    finally:
        p.terminate()
        p.wait(10)


# ---------------------------------------------------------------- TCP and DPI


def test_tcp_blackhole_and_refuse(clean_lab):
    lab = clean_lab
    a, b = lab.site("24.kg").ip, lab.site("kloop.kg").ip
    undo = lab.tcp_blackhole(a)
    lab.tcp_refuse(b, 443)
    assert v(lab, "connect", a, 443, timeout=1)["result"] == "timeout"
    assert v(lab, "connect", b, 443)["result"] == "ECONNREFUSED"
    assert v(lab, "connect", b, 80)["result"] == "ok"
    undo()
    assert v(lab, "connect", a, 443)["result"] == "ok"


def test_dpi_reset_on_sni_and_host(clean_lab):
    lab = clean_lab
    ip = lab.site("24.kg").ip
    lab.dpi_reset("24.kg")
    r = v(lab, "tls", ip, "24.kg", cafile=lab.ca_file)
    assert (r["result"], r["stage"]) == ("ECONNRESET", "handshake"), r
    r = v(lab, "http", ip, "24.kg", "/")
    assert r["result"] == "ECONNRESET", r
    # other names on the same address pass
    assert v(lab, "tls", ip, "kloop.kg", cafile=lab.ca_file)["result"] == "ok"  # SNI vhost
    r = v(lab, "http", lab.site("kloop.kg").ip, "kloop.kg", "/", port=443, sni=True,
          cafile=lab.ca_file)  # fmt: skip
    assert r["status"] == 200


def test_dpi_close_gives_eof(clean_lab):
    lab = clean_lab
    site = lab.site("www.azattyk.org")
    lab.dpi_close(site.host, port=443)
    r = v(lab, "tls", site.ip, site.host, cafile=lab.ca_file)
    assert (r["result"], r["stage"]) == ("eof", "handshake"), r
    assert v(lab, "http", site.ip, site.host, "/")["status"] == 200  # port 80 unaffected


def test_dpi_drop_times_out(clean_lab):
    lab = clean_lab
    site = lab.site("kaktus.media")
    lab.dpi_drop(site.host)
    r = v(lab, "tls", site.ip, site.host, cafile=lab.ca_file, timeout=1.5)
    assert (r["result"], r["stage"]) == ("timeout", "handshake"), r
    r = v(lab, "http", site.ip, site.host, "/", timeout=1.5)
    assert (r["result"], r["stage"]) == ("timeout", "response"), r


def test_inject_blockpage(clean_lab):
    lab = clean_lab
    site = lab.site("respublica.kg")
    lab.inject_blockpage(site.ip)
    r = v(lab, "httpx_get", "http://respublica.kg/some/page")
    assert r["status"] == 200 and SENTENCE in r["body"] and "<title>Access denied" in r["body"]
    assert f'<p class="error">{SENTENCE}</p>' in r["body"]
    r = v(lab, "httpx_get", "https://respublica.kg/", cafile=lab.ca_file)
    assert r["status"] == 200 and SENTENCE not in r["body"]


# ---------------------------------------------------------------- DNS censorship


def test_isp_resolver_lies_control_does_not(clean_lab):
    lab = clean_lab
    truth = {n: [lab.site(n).ip] for n in ("24.kg", "kloop.kg", "vesti.kg", "akipress.org")}
    lab.dns_lie("24.kg", lab.BLOCKPAGE_IP)
    lab.dns_lie("factcheck.kg", "10.10.34.35")
    lab.dns_nxdomain("kloop.kg")
    lab.dns_no_answer("vesti.kg")
    lab.dns_drop("akipress.org")
    lab.dns_servfail("kaktus.media")
    isp = lab.ISP_RESOLVER
    assert resolve(lab, isp, "24.kg")["addresses"] == [lab.BLOCKPAGE_IP]
    assert resolve(lab, isp, "24.kg", "tcp")["addresses"] == [lab.BLOCKPAGE_IP]
    assert v(lab, "system_resolve", "factcheck.kg")["addresses"] == ["10.10.34.35"]
    assert resolve(lab, isp, "kloop.kg")["result"] == "NXDOMAIN"
    assert resolve(lab, isp, "vesti.kg") == {"result": "ok", "addresses": []}
    assert resolve(lab, isp, "akipress.org", timeout=1)["result"] == "timeout"
    assert resolve(lab, isp, "kaktus.media")["result"] == "SERVFAIL"
    for name, ips in truth.items():
        assert resolve(lab, lab.CONTROL_RESOLVER, name)["addresses"] == ips
        assert resolve(lab, None, name, "doh")["addresses"] == ips


def test_dns_inject_forges_plain_dns_only(clean_lab):
    lab = clean_lab
    ip = lab.site("24.kg").ip
    lab.dns_inject("24.kg", "10.10.34.35")
    ctl = lab.CONTROL_RESOLVER
    assert resolve(lab, ctl, "24.kg")["addresses"] == ["10.10.34.35"]
    assert resolve(lab, ctl, "24.KG")["addresses"] == ["10.10.34.35"]
    assert resolve(lab, ctl, "24.kg", "tcp")["addresses"] == ["10.10.34.35"]
    assert resolve(lab, lab.ISP_RESOLVER, "24.kg")["addresses"] == ["10.10.34.35"]
    assert resolve(lab, ctl, "24.kg", "dot")["addresses"] == [ip]
    assert resolve(lab, None, "24.kg", "doh")["addresses"] == [ip]
    assert resolve(lab, ctl, "kloop.kg")["addresses"] == [lab.site("kloop.kg").ip]
    assert resolve(lab, ctl, "kloop.kg", "tcp")["addresses"] == [lab.site("kloop.kg").ip]
    lab.reset()
    assert resolve(lab, ctl, "24.kg")["addresses"] == [ip]
    assert resolve(lab, ctl, "24.kg", "tcp")["addresses"] == [ip]


# ---------------------------------------------------------------- throttling, outages


def test_throttle_delay_raises_rtt(clean_lab):
    lab = clean_lab
    site = lab.site("currenttime.tv")
    base = v(lab, "connect_rtt", site.ip, 443, n=3)["rtt"]
    undo = lab.throttle(site.ip, delay_ms=200)
    slow = v(lab, "connect_rtt", site.ip, 443, n=3)["rtt"]
    # Each packet is held at least half the delay each way: a lower bound no load can break
    # (how much longer a loaded machine takes is not the primitive's business).
    assert slow - base >= 0.15, (base, slow)
    r = v(lab, "httpx_get", "https://currenttime.tv/", cafile=lab.ca_file)
    assert r["status"] == 200
    assert site.ip in delay_rules(lab)
    undo()
    assert site.ip not in delay_rules(lab)  # the delay is gone: no packet of it is held
    assert v(lab, "connect", site.ip, 443)["result"] == "ok"


def delay_rules(lab) -> str:
    """The router's delay rules (the NFQUEUE daemon holds the packets they mark)."""
    listed = lab.run(lab.isp, ["iptables", "-t", "mangle", "-S", "LAB_DELAY"])
    assert listed.returncode == 0, listed.stderr
    return listed.stdout


def test_throttle_loss_and_rate(clean_lab):
    lab = clean_lab
    a, b = lab.site("example.org"), lab.site("www.wikipedia.org")
    lab.throttle(a.ip, loss=1.0)
    assert v(lab, "connect", a.ip, 80, timeout=1)["result"] == "timeout"
    lab.throttle(b.ip, rate_kbit=200_000)
    r = v(lab, "httpx_get", "https://www.wikipedia.org/large", cafile=lab.ca_file)
    assert r["length"] == 2 * 1024 * 1024
    stats = lab.run(lab.isp, ["tc", "-s", "class", "show", "dev", "i-vantage"]).stdout
    sent = [int(x) for x in re.findall(r"Sent (\d+) bytes", stats)]
    assert sent and max(sent) >= 2 * 1024 * 1024, stats


def test_site_down(clean_lab):
    lab = clean_lab
    site = lab.site("akipress.org")
    lab.site_down(site.ip)
    assert v(lab, "connect", site.ip, 443)["result"] == "ECONNREFUSED"
    assert lab.call(lab.net, "connect", site.ip, 80)["result"] == "ECONNREFUSED"
    assert resolve(lab, lab.CONTROL_RESOLVER, site.host)["addresses"] == [site.ip]


def test_offline_and_reset(clean_lab):
    lab = clean_lab
    site = lab.site("24.kg")
    lab.dpi_reset("kloop.kg")
    lab.dns_lie("vesti.kg", "127.0.0.1")
    lab.offline()
    assert v(lab, "connect", site.ip, 443)["result"] in UNREACHABLE
    assert v(lab, "connect", lab.CONTROL_RESOLVER, 853)["result"] in UNREACHABLE
    assert resolve(lab, lab.CONTROL_RESOLVER, "24.kg", timeout=1)["result"] in UNREACHABLE | {
        "timeout"
    }
    assert resolve(lab, lab.ISP_RESOLVER, "24.kg")["result"] == "SERVFAIL"
    lab.reset()
    assert v(lab, "connect", site.ip, 443)["result"] == "ok"
    assert resolve(lab, lab.ISP_RESOLVER, "24.kg")["addresses"] == [site.ip]
    assert resolve(lab, lab.ISP_RESOLVER, "vesti.kg")["addresses"] == [lab.site("vesti.kg").ip]
    r = v(lab, "tls", lab.site("kloop.kg").ip, "kloop.kg", cafile=lab.ca_file)
    assert r["result"] == "ok"
    save = lab.run(lab.isp, ["iptables-save"]).stdout
    assert "-A LAB_DPI" not in save and "-A LAB_OFFLINE" not in save


def test_undo_is_precise(clean_lab):
    lab = clean_lab
    a, b = lab.site("24.kg"), lab.site("kloop.kg")
    undo_a = lab.tcp_refuse(a.ip)
    lab.tcp_refuse(b.ip)
    undo_lie = lab.dns_lie("24.kg", "10.0.0.1")
    undo_a()
    undo_a()  # idempotent
    assert v(lab, "connect", a.ip, 443)["result"] == "ok"
    assert v(lab, "connect", b.ip, 443)["result"] == "ECONNREFUSED"
    assert resolve(lab, lab.ISP_RESOLVER, "24.kg")["addresses"] == ["10.0.0.1"]
    undo_lie()
    assert resolve(lab, lab.ISP_RESOLVER, "24.kg")["addresses"] == [a.ip]


def test_shell_runs_a_command_in_a_censored_vantage():
    code = "import socket; print(socket.gethostbyname('24.kg'), socket.gethostbyname('kloop.kg'))"
    r = subprocess.run(
        [sys.executable, "-m", "tests.lab", "shell", "--censor", "dns_lie:24.kg:10.10.34.35",
         "--censor", "dns_nxdomain:kloop.kg", "--", sys.executable, "-c", code],
        capture_output=True, text=True, timeout=60, cwd=str(REPO_ROOT),
    )  # fmt: skip
    assert r.returncode == 1, r.stderr  # kloop.kg: NXDOMAIN -> gaierror
    assert "gaierror" in r.stderr
    code = "import socket; print(socket.gethostbyname('24.kg'))"
    r = subprocess.run(
        [sys.executable, "-m", "tests.lab", "shell", "--censor", "dns_lie:24.kg:10.10.34.35",
         "--", sys.executable, "-c", code],
        capture_output=True, text=True, timeout=60, cwd=str(REPO_ROOT),
    )  # fmt: skip
    assert r.returncode == 0 and r.stdout.strip() == "10.10.34.35", r.stderr


def test_shell_spec_parsing():
    from tests.lab.__main__ import parse_spec

    assert parse_spec("dns_lie:24.kg:192.88.99.11") == ("dns_lie", ["24.kg", "192.88.99.11"], {})
    assert parse_spec("throttle:24.kg:delay_ms=200:loss=0.1") == (
        "throttle",
        ["24.kg"],
        {"delay_ms": 200, "loss": 0.1},
    )
    assert parse_spec("tcp_refuse:192.88.99.100:443") == ("tcp_refuse", ["192.88.99.100", 443], {})
    with pytest.raises(ValueError):
        parse_spec("no_such_primitive:x")


# ---------------------------------------------------------------- the ISP's own servers


def test_isp_notice_redirector_and_their_injection(clean_lab):
    lab = clean_lab
    r = v(lab, "http", lab.NOTICE_IP, "any.kg", "/")
    assert r["status"] == 200 and f"<title>{NOTICE_TITLE}</title>" in r["body"]
    names = [name for name, _ in r["header_pairs"]]
    assert names == ["Server", "Date", "Content-Type", "Content-Length", "Connection"]
    assert r["headers"]["server"] == "nginx" and SENTENCE not in r["body"]
    # notice.isp.kg resolves (at the ISP and outside) and has a valid certificate
    r = v(lab, "httpx_get", f"https://{lab.NOTICE_HOST}/anything", cafile=lab.ca_file)
    assert r["status"] == 200 and NOTICE_TITLE in r["body"]
    assert resolve(lab, lab.CONTROL_RESOLVER, lab.NOTICE_HOST)["addresses"] == [lab.NOTICE_IP]
    lab.inject_blockpage(lab.site("vesti.kg").ip, to=lab.NOTICE_IP)
    assert NOTICE_TITLE in v(lab, "httpx_get", "http://vesti.kg/")["body"]
    lab.inject_blockpage(lab.site("kloop.kg").ip, to=lab.REDIRECT_IP)
    r = v(lab, "httpx_get", "http://kloop.kg/", cafile=lab.ca_file)
    assert r["history"] == [302] and r["url"] == f"https://{lab.NOTICE_HOST}/?site=kloop.kg"
    assert NOTICE_TITLE in r["body"]
    r = v(lab, "httpx_get", "https://kloop.kg/", cafile=lab.ca_file)  # port 443 untouched
    assert r["headers"]["x-lab-site"] == "kloop.kg"
    with pytest.raises(ValueError):
        lab.inject_blockpage("kloop.kg", to=lab.ISP_RESOLVER)


def test_sni_proxy_splices_to_the_real_site_or_resets(clean_lab):
    lab = clean_lab
    proxy = lab.SNI_PROXY_IP
    lab.dns_lie("24.kg", proxy)
    r = v(lab, "httpx_get", "https://24.kg/", cafile=lab.ca_file)  # the site's own certificate
    assert r["status"] == 200 and r["headers"]["x-lab-site"] == "24.kg"
    r = v(lab, "httpx_get", "https://24.kg/large", cafile=lab.ca_file)
    assert r["length"] == 2 * 1024 * 1024
    undo = lab.sni_proxy_reset("24.kg")
    r = v(lab, "tls", proxy, "24.kg", cafile=lab.ca_file)
    assert (r["result"], r["stage"]) == ("ECONNRESET", "handshake"), r
    assert v(lab, "tls", proxy, "kloop.kg", cafile=lab.ca_file)["result"] == "ok"
    assert v(lab, "tls", proxy, "no-such.kg")["result"] == "eof"  # a name it cannot route
    undo()
    assert v(lab, "tls", proxy, "24.kg", cafile=lab.ca_file)["result"] == "ok"


def test_helper_dpi_reset_censors_only_the_helper(clean_lab):
    lab = clean_lab
    site = lab.site("kaktus.media")
    lab.helper_dpi_reset(site.host, port=443)
    r = lab.call(lab.net, "tls", site.ip, site.host, cafile=lab.ca_file)
    assert (r["result"], r["stage"]) == ("ECONNRESET", "handshake"), r
    assert v(lab, "tls", site.ip, site.host, cafile=lab.ca_file)["result"] == "ok"
    assert lab.call(lab.net, "http", site.ip, site.host)["status"] == 200  # port 80 untouched
    lab.reset()
    assert lab.call(lab.net, "tls", site.ip, site.host, cafile=lab.ca_file)["result"] == "ok"


# ---------------------------------------------------------------- site options


def test_site_paths_and_redirects(lab):
    lab.add_site("paths.lab-options.kg", pages=["/новости/2022"],
                 redirects={"/old": (308, "https://target.lab-options.kg/y")})  # fmt: skip
    lab.add_site("target.lab-options.kg", pages=["/y"])
    ip = lab.site("paths.lab-options.kg").ip
    for path in ("/новости/2022", "/%D0%BD%D0%BE%D0%B2%D0%BE%D1%81%D1%82%D0%B8/2022", "/?q=x"):
        r = v(lab, "http", ip, "paths.lab-options.kg", path)
        assert r["status"] == 200 and "paths.lab-options.kg — lab news" in r["body"], path
    assert v(lab, "http", ip, "paths.lab-options.kg", "/новости/2023")["status"] == 404
    r = v(lab, "httpx_get", "http://paths.lab-options.kg/old", cafile=lab.ca_file)
    assert r["history"] == [308] and r["url"] == "https://target.lab-options.kg/y"
    assert "target.lab-options.kg — lab news" in r["body"]
    with pytest.raises(ValueError):
        lab.add_site("bad.lab-options.kg", redirects={"/": (200, "https://x/")})
    with pytest.raises(TypeError):
        lab.add_site("bad.lab-options.kg", no_such_option=True)


def test_site_headers_and_lengths(lab):
    ip = lab.add_site("plain.lab-options.kg", plain_headers=True, varying_headers=True,
                      length_jitter=0.15).ip  # fmt: skip
    pages = [v(lab, "http", ip, "plain.lab-options.kg") for _ in range(4)]
    standard = {"server", "date", "content-type", "content-length", "connection"}
    extra = [set(p["headers"]) - standard for p in pages]
    assert all(p["headers"]["server"] == "nginx" for p in pages)
    assert all(not e & {"x-lab-site", "x-lab-page-id"} for e in extra)
    assert all(e and not e & f for e, f in zip(extra, extra[1:], strict=False)), extra
    lengths = [p["length"] for p in pages]
    assert lengths[0] == lengths[2] != lengths[1] == lengths[3]
    assert round(min(lengths) / max(lengths), 3) == round(0.85 / 1.15, 3)
    title = "<title>plain.lab-options.kg — lab news</title>"
    assert all(title in p["body"] for p in pages)
    ip = lab.add_site("untitled.lab-options.kg", untitled=True).ip
    assert "<title" not in v(lab, "http", ip, "untitled.lab-options.kg")["body"]


def test_cdn_challenge_for_everyone_outside_the_isp(lab):
    ip = lab.add_site("cdn.lab-options.kg", cdn_challenge=True).ip
    r = v(lab, "http", ip, "cdn.lab-options.kg")
    assert r["status"] == 200 and "lab news" in r["body"]
    for scheme in ("http", "https"):
        r = lab.call(lab.net, "httpx_get", f"{scheme}://cdn.lab-options.kg/", cafile=lab.ca_file)
        assert r["status"] == 403 and "<title>Just a moment...</title>" in r["body"], scheme


def test_legacy_cyrillic_charsets(lab):
    for name, charset, where in (("cp.lab-options.kg", "windows-1251", "header"),
                                 ("koi.lab-options.kg", "koi8-r", "meta")):  # fmt: skip
        ip = lab.add_site(name, charset=charset, charset_in=where).ip
        r = v(lab, "http", ip, name)
        text = base64.b64decode(r["body_b64"]).decode(charset)
        assert f"<title>{cyrillic_title(name)}</title>" in text
        declared = r["headers"]["content-type"]
        assert (declared == f"text/html; charset={charset}") is (where == "header")
        assert (f'<meta charset="{charset}">' in text) is (where == "meta")
        assert cyrillic_title(name) not in r["body"]  # not UTF-8


@pytest.mark.parametrize("coding", ["gzip", "deflate", "deflate-raw"])
def test_content_codings(lab, coding):
    name = f"{coding}.lab-options.kg"
    ip = lab.add_site(name, content_encoding=coding).ip
    r = v(lab, "http", ip, name, headers={"Accept-Encoding": "gzip, deflate"})
    body = base64.b64decode(r["body_b64"])
    assert r["headers"]["content-encoding"] == coding.split("-")[0]
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}.get(coding, -zlib.MAX_WBITS)
    assert f"{name} — lab news".encode() in zlib.decompress(body, wbits)
    r = v(lab, "http", ip, name)  # not offered: not encoded
    assert "content-encoding" not in r["headers"] and f"{name} — lab news" in r["body"]


def test_chunked_and_interim_responses(lab):
    ip = lab.add_site("chunked.lab-options.kg", chunked=True, content_encoding="gzip").ip
    r = v(lab, "httpx_get", "http://chunked.lab-options.kg/")
    assert r["headers"]["transfer-encoding"] == "chunked"
    assert r["headers"]["content-encoding"] == "gzip" and "lab news" in r["body"]
    r = v(lab, "http", ip, "chunked.lab-options.kg", version="1.1")
    assert r["headers"]["transfer-encoding"] == "chunked" and r["body"].endswith("\r\n0\r\n\r\n")
    for code in (103, 100):
        name = f"interim-{code}.lab-options.kg"
        ip = lab.add_site(name, interim=code).ip
        r = v(lab, "http", ip, name, version="1.1")
        assert (r["interim"], r["status"]) == ([code], 200) and "lab news" in r["body"]
        assert v(lab, "http", ip, name)["interim"] == []  # never to an HTTP/1.0 client
        assert v(lab, "httpx_get", f"http://{name}/")["status"] == 200
