"""A network-namespace censorship lab for testing the probe.

Three namespaces, linked to each other by veth pairs and to nothing else (no packet can leave):

    vantage (192.88.99.2) --veth-- isp (router, 192.88.99.1 / .33) --veth-- net (192.88.99.34)

* ``vantage``: where the probe runs; /etc/netns/<vantage>/resolv.conf points at the ISP resolver.
* ``isp``: the censoring router (ip_forward, iptables, tc, an NFQUEUE daemon for delays and
  forged FINs), the ISP resolver 192.88.99.10 (may lie), and the ISP's servers:

  - 192.88.99.11 ``BLOCKPAGE_IP``: HTTP block page that a fingerprint knows (ElCat's sentence);
  - 192.88.99.12 ``INJECTOR_IP``: the on-path DNS injector (only reachable through the DNAT);
  - 192.88.99.13 ``NOTICE_IP``: a block notice that NO fingerprint knows, as an ISP would put
    up with stock nginx (``Server: nginx``, Date, Content-Type, Content-Length, Connection; a
    short Russian/Kyrgyz "Доступ к сайту закрыт" page, about a sixth of a site's page,
    with its own title), on HTTP 80 and on HTTPS 443 as ``NOTICE_HOST`` (notice.isp.kg, a
    lab-CA certificate; the name resolves everywhere to this address);
  - 192.88.99.14 ``REDIRECT_IP``: HTTP 80 answers every request with nginx's 302 to
    ``https://notice.isp.kg/?site=<Host>`` (a block page on another host, over valid HTTPS);
  - 192.88.99.15 ``SNI_PROXY_IP``: an SNI-routing transparent proxy on 443: it reads the
    ClientHello's SNI and splices the TCP stream to the name's real address (so the site's own
    certificate validates), or resets the connection for the names given to
    ``sni_proxy_reset``. Point names at it with ``dns_lie``/``dns_inject``.
* ``net``: the internet: control resolver 192.88.99.53 (UDP/TCP 53, DoT 853), DoH at
  https://192.88.99.54/dns-query, the helper address 192.88.99.80, and the outlets
  (192.88.99.100-250, HTTP 80 / HTTPS 443, virtual hosts by Host and SNI).

Anything outside the lab is unreachable at once (``unreachable default`` routes in isp and net).

A volunteer behind a home NAT (built by ``lab.home_network()`` on first use, kept until close)::

    home (192.168.77.2) --veth-- vantage (home router 192.168.77.1, MASQUERADE) --veth-- isp ...

* ``home``: a fourth namespace, resolv.conf pointing at the ISP resolver (as DHCP hands it out);
  its local address ``HOME_IP`` is private, and every server (the helper, the sites) sees its
  traffic come from ``VANTAGE_IP``, its public address, which the vantage masquerades it to.
  Only traffic from 192.168.77.0/24 is masqueraded: the vantage's own is unchanged, and the
  ISP's censorship applies to both alike.

Usage::

    with Lab() as lab:
        undo = lab.dns_lie("24.kg", lab.BLOCKPAGE_IP)
        print(lab.python(lab.vantage, "import socket; print(socket.gethostbyname('24.kg'))"))
        undo()

Censorship methods return an undo callable; ``lab.reset()`` undoes everything. Methods taking an
``ip`` also accept a site name (its main IP is used). Sites added with ``add_site`` persist
across ``reset()`` (remove them with ``remove_site``).

Every site serves ``/`` (its page), ``/large`` (2 MiB), ``/redirect/N`` (N 302s, then the
page), ``/delay/MS`` (the page after MS ms), and 404 otherwise. Site options (``add_site``):

* ``extra_ips``, ``cert`` (``wrong-name``, ``self-signed``, ``expired``);
* ``https_only_redirect``: cleartext HTTP answers 301 to the same URL over https;
* ``pages``: more paths (as text: ``/новости/2022``; percent-escaped or raw UTF-8 requests
  both match) that serve the page; query strings never matter;
* ``redirects``: ``{path: (status, location)}``, e.g. ``{"/": (308, "https://b.kg/")}``;
* ``plain_headers``: answer as stock nginx (``Server: nginx``, Date, Content-Type,
  Content-Length or Transfer-Encoding, Connection) without the ``X-Lab-*`` headers;
* ``varying_headers``: consecutive page responses carry disjoint non-standard headers
  (``X-Request-Id`` with a random value, then ``X-Cache``/``X-Cache-Hits``, and so on);
* ``length_jitter`` (a fraction j): consecutive page responses alternate between lengths
  N(1-j) and N(1+j) (a news ticker in a comment); the title stays the same;
* ``untitled``: the page has no ``<title>``;
* ``cdn_challenge``: clients outside the ISP's customer network 192.88.99.0/29 (the test
  helper, whatever source address it uses) get a CDN's 403 "Just a moment..." challenge; the
  vantage gets the page;
* ``charset`` (e.g. ``windows-1251``, ``koi8-r``) with ``charset_in`` ``header`` (default:
  only in Content-Type) or ``meta`` (only in a ``<meta charset>``): a Russian page whose title
  is ``servers.cyrillic_title(name)``, encoded in that charset;
* ``content_encoding``: ``gzip``, ``deflate`` (zlib), or ``deflate-raw`` (a raw DEFLATE
  stream labelled ``deflate``), when the request's Accept-Encoding offers it;
* ``chunked``: the page is sent with ``Transfer-Encoding: chunked`` (HTTP/1.1 requests);
* ``interim``: 103 (Early Hints, with a Link header) or 100 (Continue) sent before the 200.
* ``echo_ip``: the page says the client's address, as many sites do ("Your IP address: ...",
  before ``</body>``) and in an ``X-Your-IP`` header: what a probe must scrub.

Responses always carry Server and Date headers.

Approximations worth knowing:

* ``throttle`` acts on traffic *forwarded* by the router (vantage <-> net); delay is delay_ms/2
  each way (so delay_ms is the added RTT), loss is applied independently in each direction, the
  rate is an htb class in each direction. Only the first throttle on a given IP delays.
* ``offline`` rejects everything forwarded to the internet with ICMP net-unreachable (immediate
  failures rather than timeouts); the ISP resolver answers SERVFAIL.
* ``helper_dpi_reset`` acts in ``net`` on traffic that never leaves it (``-i lo``): the test
  helper's own connections to outlets, not the vantage's (which the router forwards).
* ``dns_inject`` DNATs UDP/53 queries whose wire-format QNAME contains the name (so subdomains
  match too) and, while any injection is active, all TCP/53 to the on-path injector.
* DPI patterns are matched case-insensitively, per packet (a pattern split across two TCP
  segments is not seen).
"""

from __future__ import annotations

import atexit
import codecs
import contextlib
import ctypes
import datetime
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PREFIX = "plab"
NS_RE = re.compile(rf"^{PREFIX}-(\d+)-(\d+)-(vantage|isp|net|home)$")

DEFAULT_SITES = [
    "www.azattyk.org",
    "rus.azattyk.org",
    "24.kg",
    "respublica.kg",
    "kloop.kg",
    "kaktus.media",
    "vesti.kg",
    "akipress.org",
    "factcheck.kg",
    "currenttime.tv",
    "example.org",
    "www.wikipedia.org",
    "яндекс.рф",
]

CERT_KINDS = (None, "wrong-name", "self-signed", "expired")
#: Site options beyond ip/extra_ips/cert/https_only_redirect: name -> check of the value.
PAGE_OPTIONS: dict[str, Callable[[object], bool]] = {
    "pages": lambda v: isinstance(v, (list, tuple)) and all(str(p).startswith("/") for p in v),
    "redirects": lambda v: (
        isinstance(v, dict)
        and all(
            str(p).startswith("/") and len(r) == 2 and 300 <= int(r[0]) < 400 for p, r in v.items()
        )
    ),
    "plain_headers": lambda v: isinstance(v, bool),
    "varying_headers": lambda v: isinstance(v, bool),
    "length_jitter": lambda v: isinstance(v, (int, float)) and 0 <= v < 1,
    "untitled": lambda v: isinstance(v, bool),
    "cdn_challenge": lambda v: isinstance(v, bool),
    "charset": lambda v: isinstance(v, str) and codecs.lookup(v) is not None,
    "charset_in": lambda v: v in ("header", "meta"),
    "content_encoding": lambda v: v in ("gzip", "deflate", "deflate-raw"),
    "chunked": lambda v: isinstance(v, bool),
    "interim": lambda v: v in (100, 103),
    "echo_ip": lambda v: isinstance(v, bool),
}
OUTLET_FIRST, OUTLET_LAST = 100, 250

# interface names (the same names live in different namespaces)
V_IF, I_VIF, I_NIF, N_IF = "v-isp", "i-vantage", "i-net", "n-isp"
V_HIF, H_IF = "v-home", "h-vantage"  # the home network's link (home_network())
CONNMARK_DROP = "0x1/0x1"
Undo = Callable[[], None]


def to_ascii(name: str) -> str:
    """A host name in DNS form: lower case, IDN labels as punycode."""
    name = name.strip().rstrip(".").lower()
    try:
        name.encode("ascii")
        return name
    except UnicodeEncodeError:
        pass
    try:
        import idna

        return idna.encode(name, uts46=True).decode()
    except Exception:
        return name.encode("idna").decode()


def qname_wire(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in to_ascii(name).split(".")) + b"\0"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _set_pdeathsig() -> None:  # runs in the child before exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _sh(argv: list[str], input: str | None = None, check: bool = True):
    r = subprocess.run(argv, input=input, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def list_lab_namespaces() -> list[str]:
    out = _sh(["ip", "netns", "list"], check=False).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [n for n in names if NS_RE.match(n)]


def destroy_namespace(ns: str) -> None:
    """Kill every process in ``ns``, delete it and its /etc/netns directory."""
    for _ in range(50):
        pids = _sh(["ip", "netns", "pids", ns], check=False).stdout.split()
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        time.sleep(0.02)
    _sh(["ip", "netns", "del", ns], check=False)
    shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)


def sweep_stale() -> list[str]:
    """Remove lab namespaces whose owner process is dead. Returns their names."""
    swept = []
    for ns in list_lab_namespaces():
        pid = int(NS_RE.match(ns).group(1))
        if not _pid_alive(pid):
            destroy_namespace(ns)
            swept.append(ns)
    for d in Path("/etc/netns").glob(f"{PREFIX}-*") if Path("/etc/netns").is_dir() else []:
        m = NS_RE.match(d.name)
        if m and not _pid_alive(int(m.group(1))):
            shutil.rmtree(d, ignore_errors=True)
    for d in Path(tempfile.gettempdir()).glob(f"{PREFIX}-*-*"):
        m = re.match(rf"^{PREFIX}-(\d+)-", d.name)
        if m and d.is_dir() and not _pid_alive(int(m.group(1))):
            shutil.rmtree(d, ignore_errors=True)
    return swept


@dataclass
class Site:
    name: str  # as given (may be Unicode)
    host: str  # DNS / SNI / Host form (punycode)
    ip: str
    extra_ips: list[str] = field(default_factory=list)
    https_only_redirect: bool = False
    cert: str | None = None
    options: dict = field(default_factory=dict)  # PAGE_OPTIONS

    @property
    def ips(self) -> list[str]:
        return [self.ip, *self.extra_ips]

    def url(self, scheme: str = "https", path: str = "/") -> str:
        return f"{scheme}://{self.host}{path}"


class Lab:
    ISP_RESOLVER = "192.88.99.10"
    BLOCKPAGE_IP = "192.88.99.11"
    INJECTOR_IP = "192.88.99.12"
    NOTICE_IP = "192.88.99.13"
    NOTICE_HOST = "notice.isp.kg"
    REDIRECT_IP = "192.88.99.14"
    SNI_PROXY_IP = "192.88.99.15"
    CONTROL_RESOLVER = "192.88.99.53"
    DOH_IP = "192.88.99.54"
    DOH_URL = "https://192.88.99.54/dns-query"
    DOT_SERVER = "192.88.99.53"
    HELPER_IP = "192.88.99.80"
    VANTAGE_IP = "192.88.99.2"
    HOME_IP, HOME_GATEWAY, HOME_NET = "192.168.77.2", "192.168.77.1", "192.168.77.0/24"
    ISP_ASN, INTERNET_ASN, OUTLET_ASN_BASE = 64500, 64501, 65000
    BLOCKPAGE_SENTENCE = "Access to the requested website has been blocked by judicial decision!"

    _counter = 0

    def __init__(self, sites: list[str] | None = None, workdir: str | None = None):
        Lab._counter += 1
        tag = f"{PREFIX}-{os.getpid()}-{Lab._counter}"
        self.vantage, self.isp, self.net = f"{tag}-vantage", f"{tag}-isp", f"{tag}-net"
        self.namespaces = [self.vantage, self.isp, self.net]
        self.home = f"{tag}-home"  # exists once home_network() has been called
        self._initial_sites = DEFAULT_SITES if sites is None else sites
        self._workdir_arg = workdir
        self.workdir: Path | None = None
        self.ca_file = ""
        self.asn_db = ""
        self.sites: dict[str, Site] = {}
        self._procs: list[subprocess.Popen] = []
        self._certs: dict[str, list[str]] = {}
        self._net_addrs: set[str] = set()
        self._service_procs: dict[str, subprocess.Popen] = {}
        self._undos: list[Undo] = []
        self._dns_rules: dict[int, tuple[str, dict]] = {}
        self._injects: dict[int, tuple[str, str]] = {}
        self._sni_resets: dict[int, str] = {}
        self._offline = 0
        self._tcp_dns_intercept = 0
        self._rate_classes = 0
        self._htb = False
        self._token = 0
        self._version = 0
        self._batch_depth = 0
        self._batch_dirty = False
        self._started = False
        self._closed = False
        self._lock = threading.RLock()
        self._installed: dict = {}

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> Lab:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> Lab:
        if os.geteuid() != 0:
            raise PermissionError("the censorship lab needs root (network namespaces, iptables)")
        sweep_stale()
        self._started = True
        atexit.register(self.close)
        if threading.current_thread() is threading.main_thread():
            # SIGTERM/SIGHUP unwind like an exception (finally blocks, atexit -> close()).
            for sig in (signal.SIGTERM, signal.SIGHUP):
                if signal.getsignal(sig) in (signal.SIG_DFL, None):
                    self._installed[sig] = signal.signal(sig, _sigterm_exit)
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Kill every lab process, delete the namespaces, /etc/netns dirs and the workdir.

        Idempotent; SIGINT/SIGTERM are ignored while it runs so that cleanup completes."""
        with self._lock:
            if self._closed or not self._started:
                return
            main = threading.current_thread() is threading.main_thread()
            saved = {}
            if main:
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                    saved[sig] = signal.signal(sig, signal.SIG_IGN)
            try:
                for p in reversed(self._procs):
                    self._kill(p)
                for ns in self.namespaces:
                    destroy_namespace(ns)
                if self.workdir and not os.environ.get("LAB_KEEP_WORKDIR"):
                    shutil.rmtree(self.workdir, ignore_errors=True)
                self._closed = True
            finally:
                for sig, handler in saved.items():
                    if sig in self._installed and handler is _sigterm_exit:
                        handler = self._installed[sig]
                    if handler is not None:
                        signal.signal(sig, handler)
        try:
            atexit.unregister(self.close)
        except Exception:
            pass

    @staticmethod
    def _kill(p: subprocess.Popen) -> None:
        if p.poll() is not None:
            return
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def _build(self) -> None:
        prefix = f"{PREFIX}-{os.getpid()}-"
        self.workdir = Path(self._workdir_arg or tempfile.mkdtemp(prefix=prefix))
        self.workdir.mkdir(parents=True, exist_ok=True)
        for ns in self.namespaces:
            _sh(["ip", "netns", "add", ns])
        for ns, resolver in ((self.vantage, self.ISP_RESOLVER), (self.isp, self.CONTROL_RESOLVER),
                             (self.net, self.CONTROL_RESOLVER)):  # fmt: skip
            d = Path("/etc/netns") / ns
            d.mkdir(parents=True, exist_ok=True)
            (d / "resolv.conf").write_text(f"nameserver {resolver}\n")
        # veths are created directly inside the namespaces: nothing ever touches the host's.
        _sh(["ip", "-n", self.vantage, "link", "add", V_IF, "type", "veth",
             "peer", "name", I_VIF, "netns", self.isp])  # fmt: skip
        _sh(["ip", "-n", self.isp, "link", "add", I_NIF, "type", "veth",
             "peer", "name", N_IF, "netns", self.net])  # fmt: skip
        self._sysctl(self.vantage, [f"net.ipv6.conf.{V_IF}.disable_ipv6=1"])
        self._sysctl(self.isp, ["net.ipv4.ip_forward=1", f"net.ipv6.conf.{I_VIF}.disable_ipv6=1",
                                f"net.ipv6.conf.{I_NIF}.disable_ipv6=1"])  # fmt: skip
        self._sysctl(self.net, [f"net.ipv6.conf.{N_IF}.disable_ipv6=1"])
        for ns in self.namespaces:
            # No ICMP rate limit: a censor's REJECTs and a cut uplink must answer every packet,
            # or "unreachable at once" turns into timeouts after a few dozen rejections.
            self._sysctl(ns, ["net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
                              "net.ipv4.icmp_ratelimit=0"])  # fmt: skip
        self._ip_batch(self.vantage, [
            "link set lo up", f"link set {V_IF} up",
            f"addr add {self.VANTAGE_IP}/29 dev {V_IF}",
            "route add default via 192.88.99.1",
        ])  # fmt: skip
        self._ip_batch(self.isp, [
            "link set lo up", f"link set {I_VIF} up", f"link set {I_NIF} up",
            f"addr add 192.88.99.1/29 dev {I_VIF}", f"addr add 192.88.99.33/30 dev {I_NIF}",
            f"addr add {self.ISP_RESOLVER}/32 dev lo", f"addr add {self.BLOCKPAGE_IP}/32 dev lo",
            f"addr add {self.INJECTOR_IP}/32 dev lo", f"addr add {self.NOTICE_IP}/32 dev lo",
            f"addr add {self.REDIRECT_IP}/32 dev lo", f"addr add {self.SNI_PROXY_IP}/32 dev lo",
            "route add 192.88.99.0/24 via 192.88.99.34",
            "route add unreachable default",
        ])  # fmt: skip
        net_addrs = [self.CONTROL_RESOLVER, self.DOH_IP, self.HELPER_IP]
        self._ip_batch(self.net, [
            "link set lo up", f"link set {N_IF} up",
            f"addr add 192.88.99.34/30 dev {N_IF}",
            *[f"addr add {a}/32 dev lo" for a in net_addrs],
            "route add 192.88.99.0/27 via 192.88.99.33",
            "route add unreachable default",
        ])  # fmt: skip
        _sh(["ip", "netns", "exec", self.isp, "iptables-restore"], input=ISP_RULES)
        _sh(["ip", "netns", "exec", self.net, "iptables-restore"], input=NET_RULES)
        self._make_certs()
        self._write_asn_db()
        for name in self._initial_sites:
            self._add_site(name, None, {})
        self._write_state()
        wd = str(self.workdir)
        for role, ns in (("net", self.net), ("isp", self.isp)):
            self._service_procs[role] = self._spawn_service(
                ns, role, ["-m", "tests.lab.servers", role, f"{wd}/state.json", f"{wd}/{role}.ack"]
            )
        self._service_procs["router"] = self._spawn_service(
            self.isp, "router", ["-m", "tests.lab.router", f"{wd}/router.ready"]
        )
        self._wait_file(Path(wd) / "router.ready", "router")
        self._wait_ack()

    def home_network(self) -> str:
        """The ``home`` namespace: a volunteer behind a NAT (see the module docstring); built
        on the first call, kept until close()."""
        with self._lock:
            if self.home in self.namespaces:
                return self.home
            self.namespaces.append(self.home)  # from now on, close() deletes it
            _sh(["ip", "netns", "add", self.home])
            d = Path("/etc/netns") / self.home
            d.mkdir(parents=True, exist_ok=True)
            (d / "resolv.conf").write_text(f"nameserver {self.ISP_RESOLVER}\n")
            _sh(["ip", "-n", self.vantage, "link", "add", V_HIF, "type", "veth",
                 "peer", "name", H_IF, "netns", self.home])  # fmt: skip
            self._sysctl(self.home, [f"net.ipv6.conf.{H_IF}.disable_ipv6=1",
                                     "net.ipv4.conf.all.rp_filter=0",
                                     "net.ipv4.conf.default.rp_filter=0"])  # fmt: skip
            self._sysctl(self.vantage, ["net.ipv4.ip_forward=1",
                                        f"net.ipv6.conf.{V_HIF}.disable_ipv6=1"])  # fmt: skip
            self._ip_batch(self.vantage, [
                f"link set {V_HIF} up", f"addr add {self.HOME_GATEWAY}/24 dev {V_HIF}",
            ])  # fmt: skip
            self._ip_batch(self.home, [
                "link set lo up", f"link set {H_IF} up",
                f"addr add {self.HOME_IP}/24 dev {H_IF}",
                f"route add default via {self.HOME_GATEWAY}",
            ])  # fmt: skip
            self._iptables(self.vantage, "nat", "-A", "POSTROUTING",
                           ["-s", self.HOME_NET, "-o", V_IF, "-j", "MASQUERADE"])  # fmt: skip
            return self.home

    def _sysctl(self, ns: str, settings: list[str]) -> None:
        _sh(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", *settings])

    def _ip_batch(self, ns: str, commands: list[str]) -> None:
        _sh(["ip", "-n", ns, "-batch", "-"], input="\n".join(commands) + "\n")

    def _spawn_service(self, ns: str, role: str, args: list[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{role}.log", "wb")  # noqa: SIM115
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        ), PYTHONUNBUFFERED="1")  # fmt: skip
        p = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, *args],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            cwd=str(REPO_ROOT), start_new_session=True, preexec_fn=_set_pdeathsig,
        )  # fmt: skip
        log.close()
        self._procs.append(p)
        return p

    def _check_services(self) -> None:
        for role, p in self._service_procs.items():
            if p.poll() is not None:
                log = (self.workdir / f"{role}.log").read_text(errors="replace")
                raise RuntimeError(f"lab {role} service died ({p.returncode}):\n{log[-3000:]}")

    def _wait_file(self, path: Path, what: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not path.exists():
            self._check_services()
            if time.monotonic() > deadline:
                raise RuntimeError(f"lab {what} did not become ready")
            time.sleep(0.01)

    def _wait_ack(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        for role in ("net", "isp"):
            path = self.workdir / f"{role}.ack"
            while True:
                try:
                    if json.loads(path.read_text())["version"] >= self._version:
                        break
                except (OSError, ValueError, KeyError):
                    pass
                self._check_services()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"lab {role} servers did not pick up state {self._version}")
                time.sleep(0.005)

    # ------------------------------------------------------------ certificates, ASN

    def _make_certs(self) -> None:
        import trustme

        self._ca = trustme.CA(organization_name="Probe Censorship Lab")
        self.ca_file = str(self.workdir / "ca.pem")
        self._ca.cert_pem.write_to_path(self.ca_file)
        self._doh_cert = self._leaf("doh", [self.DOH_IP])
        self._dot_cert = self._leaf("dot", [self.DOT_SERVER, "dns.lab.example"])
        self._fallback_cert = self._leaf("fallback", ["lab.invalid"])
        self._notice_cert = self._leaf("notice", [self.NOTICE_HOST])

    def _leaf(self, stem: str, names: list[str], **kw) -> list[str]:
        cert = self._ca.issue_cert(*names, **kw)
        cpath, kpath = self.workdir / f"{stem}.crt", self.workdir / f"{stem}.key"
        cert.cert_chain_pems[0].write_to_path(str(cpath))
        for extra in cert.cert_chain_pems[1:]:
            extra.write_to_path(str(cpath), append=True)
        cert.private_key_pem.write_to_path(str(kpath))
        return [str(cpath), str(kpath)]

    def _site_cert(self, site: Site) -> list[str]:
        stem = f"site-{site.host}"
        if site.cert is None:
            return self._leaf(stem, [site.host])
        if site.cert == "wrong-name":
            return self._leaf(stem, [f"wrong-name.{site.host.replace('.', '-')}.lab.invalid"])
        if site.cert == "expired":
            now = datetime.datetime.now(datetime.UTC)
            return self._leaf(stem, [site.host], not_before=now - datetime.timedelta(days=730),
                              not_after=now - datetime.timedelta(days=365))  # fmt: skip
        if site.cert == "self-signed":
            return self._self_signed(stem, site.host)
        raise ValueError(f"unknown cert option {site.cert!r}; one of {CERT_KINDS}")

    def _self_signed(self, stem: str, host: str) -> list[str]:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .sign(key, hashes.SHA256())
        )
        cpath, kpath = self.workdir / f"{stem}.crt", self.workdir / f"{stem}.key"
        cpath.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        kpath.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return [str(cpath), str(kpath)]

    def _write_asn_db(self) -> None:
        lines = [
            f"192.88.99.0\t192.88.99.31\t{self.ISP_ASN}\tKG\tLab ISP",
            f"192.88.99.32\t192.88.99.99\t{self.INTERNET_ASN}\tZZ\tLab Internet",
        ]
        for i in range(OUTLET_LAST - OUTLET_FIRST + 1):
            ip = f"192.88.99.{OUTLET_FIRST + i}"
            lines.append(f"{ip}\t{ip}\t{self.OUTLET_ASN_BASE + i}\tZZ\tLab outlet")
        self.asn_db = str(self.workdir / "ip2asn-v4.tsv")
        Path(self.asn_db).write_text("\n".join(lines) + "\n")

    @classmethod
    def outlet_asn(cls, ip: str) -> int:
        return cls.OUTLET_ASN_BASE + int(ip.rsplit(".", 1)[1]) - OUTLET_FIRST

    # ------------------------------------------------------------ sites and state

    def _used_ips(self) -> set[str]:
        return {ip for s in self.sites.values() for ip in s.ips}

    def _free_ip(self) -> str:
        used = self._used_ips()
        for i in range(OUTLET_FIRST, OUTLET_LAST + 1):
            ip = f"192.88.99.{i}"
            if ip not in used:
                return ip
        raise RuntimeError("no free outlet address left in 192.88.99.100-250")

    @staticmethod
    def _check_outlet(ip: str) -> str:
        a = ipaddress.IPv4Address(ip)
        if a not in ipaddress.IPv4Network("192.88.99.0/24") or not (
            OUTLET_FIRST <= int(a) & 0xFF <= OUTLET_LAST
        ):
            raise ValueError(f"site address {ip} outside the outlet range 192.88.99.100-250")
        return str(a)

    def _add_site(self, name: str, ip: str | None, options: dict) -> Site:
        unknown = set(options) - {"https_only_redirect", "cert", "extra_ips", *PAGE_OPTIONS}
        if unknown:
            raise TypeError(f"unknown site options {sorted(unknown)}")
        if options.get("cert") not in CERT_KINDS:
            raise ValueError(f"cert must be one of {CERT_KINDS}")
        page = {k: v for k, v in options.items() if k in PAGE_OPTIONS}
        for key, value in page.items():
            if not PAGE_OPTIONS[key](value):
                raise ValueError(f"bad value for site option {key}: {value!r}")
        host = to_ascii(name)
        old = self._site_by_any(host)
        if old is not None:
            del self.sites[old.name]
        site = Site(
            name=name,
            host=host,
            ip=self._check_outlet(ip) if ip else (old.ip if old else self._free_ip()),
            extra_ips=[self._check_outlet(x) for x in options.get("extra_ips", [])],
            https_only_redirect=bool(options.get("https_only_redirect", False)),
            cert=options.get("cert"),
            options=page,
        )
        new_ips = [x for x in site.ips if x not in self._net_addrs]
        self.sites[name] = site
        self._certs[site.host] = self._site_cert(site)
        if new_ips:
            self._ip_batch(self.net, [f"addr add {x}/32 dev lo" for x in new_ips])
            self._net_addrs.update(new_ips)
        return site

    def _site_by_any(self, name: str) -> Site | None:
        host = to_ascii(name)
        for s in self.sites.values():
            if s.host == host:
                return s
        return None

    def add_site(self, name: str, ip: str | None = None, **options) -> Site:
        """Add (or replace) a site at run time; auto-assigns a free outlet IP."""
        with self._lock:
            site = self._add_site(name, ip, options)
            self._commit()
            return site

    def add_sites(self, names: list[str], ips: list[str] | None = None, **options) -> list[Site]:
        """Add many sites at once (one state reload), all with the same ``options`` (see
        ``add_site``); ``ips`` are used round robin."""
        with self._lock:
            sites = [
                self._add_site(name, ips[i % len(ips)] if ips else None, dict(options))
                for i, name in enumerate(names)
            ]
            self._commit()
            return sites

    def remove_site(self, name: str) -> None:
        with self._lock:
            site = self.site(name)
            del self.sites[site.name]
            self._commit()
            gone = [x for x in site.ips if x not in self._used_ips()]
            if gone:
                self._ip_batch(self.net, [f"addr del {x}/32 dev lo" for x in gone])
                self._net_addrs.difference_update(gone)

    def site(self, name: str) -> Site:
        s = self._site_by_any(name)
        if s is None:
            raise KeyError(name)
        return s

    def _ip(self, target: str) -> str:
        try:
            return str(ipaddress.IPv4Address(target))
        except ValueError:
            return self.site(target).ip

    def _state(self) -> dict:
        sites, dns, ip_default = {}, {}, {}
        for s in self.sites.values():
            cert, key = self._certs[s.host]
            sites[s.host] = {
                "name": s.name, "host": s.host, "ips": s.ips, "certfile": cert, "keyfile": key,
                "https_only_redirect": s.https_only_redirect, "cert": s.cert, **s.options,
            }  # fmt: skip
            dns[s.host] = s.ips
            for ip in s.ips:
                ip_default.setdefault(ip, s.host)
        dns[self.NOTICE_HOST] = [self.NOTICE_IP]
        isp_dns = {name: rule for _, (name, rule) in sorted(self._dns_rules.items())}
        inject = {name: addr for _, (name, addr) in sorted(self._injects.items())}
        return {
            "version": self._version,
            "sites": sites,
            "dns": dns,
            "ip_default": ip_default,
            "isp": {
                "dns": isp_dns,
                "inject": inject,
                "offline": self._offline > 0,
                "sni_reset": sorted(set(self._sni_resets.values())),
            },  # fmt: skip
            "doh_cert": self._doh_cert,
            "notice_cert": self._notice_cert,
            "dot_cert": self._dot_cert,
            "fallback_cert": self._fallback_cert,
        }

    def _write_state(self) -> None:
        self._version += 1
        path = self.workdir / "state.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._state(), indent=1))
        os.replace(tmp, path)

    def _commit(self) -> None:
        if self._batch_depth:
            self._batch_dirty = True
            return
        self._write_state()
        self._wait_ack()

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Many changes (sites, censorship primitives, their undos, ``reset()``) with one state
        reload: inside the block the servers' state is written once, at its end, and the block
        returns once they have picked it up. (Each state reload rewrites every site, so one per
        change costs the square of the number of sites.) Until the end the servers may still
        act on the old state while the iptables rules are already in force; nothing must be
        measured inside the block. Blocks nest; other threads wait for the outermost to end."""
        with self._lock:
            self._batch_depth += 1
            try:
                yield
            finally:
                self._batch_depth -= 1
                if self._batch_depth == 0 and self._batch_dirty:
                    self._batch_dirty = False
                    self._commit()

    # ------------------------------------------------------------ running things

    def _env(self, env: dict | None) -> dict:
        return dict(os.environ, **(env or {}))

    def run(self, ns: str, argv: list[str], timeout: float = 60, env: dict | None = None,
            input: str | bytes | None = None) -> subprocess.CompletedProcess:  # fmt: skip
        """Run argv in namespace ns (``env`` is added to os.environ); captures text output."""
        return subprocess.run(
            ["ip", "netns", "exec", ns, *argv], capture_output=True, timeout=timeout,
            env=self._env(env), input=input, text=not isinstance(input, bytes),
        )  # fmt: skip

    def spawn(self, ns: str, argv: list[str], env: dict | None = None, **popen_kw
              ) -> subprocess.Popen:  # fmt: skip
        """Start a long-running process in ns; it is killed (with its group) at close()."""
        popen_kw.setdefault("start_new_session", True)
        p = subprocess.Popen(["ip", "netns", "exec", ns, *argv], env=self._env(env),
                             preexec_fn=_set_pdeathsig, **popen_kw)  # fmt: skip
        self._procs.append(p)
        return p

    def certificate_sha256(self, name: str) -> str:
        """SHA-256 (hex, of the DER) of the leaf certificate the site serves."""
        import hashlib
        import ssl

        pem = Path(self._certs[self.site(name).host][0]).read_text()
        first = pem[: pem.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")]
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(first)).hexdigest()

    @property
    def helper_url(self) -> str:
        return f"http://{self.HELPER_IP}/"

    def start_probe_helper(
        self, port: int = 80, args: tuple[str, ...] = (), **popen_kw
    ) -> subprocess.Popen:
        """Start probe's own test helper (`probe helper serve`) at HELPER_IP:port in net, with
        the honest resolver, the lab CA and ASN table (and ``args``); return once it accepts."""
        helper = self.spawn(
            self.net,
            [
                sys.executable, "-m", "probe.cli", "helper", "serve",
                "--listen", f"{self.HELPER_IP}:{port}",
                "--resolver", f"udp://{self.CONTROL_RESOLVER}:53",
                "--ca-file", self.ca_file,
                "--asn-db", self.asn_db,
                *args,
            ],
            **popen_kw,
        )  # fmt: skip
        code = f"import socket; socket.create_connection(('{self.HELPER_IP}', {port}), timeout=1)"
        deadline = time.monotonic() + 20
        while True:
            try:
                self.python(self.vantage, code, timeout=5)
                return helper
            except RuntimeError:
                if helper.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("probe's test helper did not start") from None
                time.sleep(0.2)

    def python(self, ns: str, code: str, timeout: float = 60, env: dict | None = None) -> str:
        """Run a Python snippet in ns with this interpreter; return its stdout.

        Raises RuntimeError (with stderr) if the snippet exits non-zero."""
        env = dict(env or {}, PYTHONPATH=str(REPO_ROOT))
        r = self.run(ns, [sys.executable, "-c", code], timeout=timeout, env=env)
        if r.returncode != 0:
            raise RuntimeError(f"snippet failed in {ns} ({r.returncode}):\n{r.stderr}\n{r.stdout}")
        return r.stdout

    def call(self, ns: str, func: str, *args, run_timeout: float = 60, **kwargs):
        """Run ``tests.lab.clients.<func>(*args, **kwargs)`` in ns; return its (JSON) result."""
        code = (
            "import json, sys\nfrom tests.lab import clients\n"
            f"r = clients.{func}(*json.loads(sys.argv[1]), **json.loads(sys.argv[2]))\n"
            "print(json.dumps(r))"
        )
        env = {"PYTHONPATH": str(REPO_ROOT)}
        argv = [sys.executable, "-c", code, json.dumps(args), json.dumps(kwargs)]
        r = self.run(ns, argv, timeout=run_timeout, env=env)
        if r.returncode != 0:
            raise RuntimeError(f"clients.{func} failed in {ns}:\n{r.stderr}\n{r.stdout}")
        return json.loads(r.stdout.strip().splitlines()[-1])

    # ------------------------------------------------------------ censorship machinery

    def _iptables(self, ns: str, table: str, op: str, chain: str, rule: list[str]) -> None:
        _sh(["ip", "netns", "exec", ns, "iptables", "-w", "-t", table, op, chain, *rule])

    def _rules(self, rules: list[tuple[str, str, str, list[str]]]) -> Undo:
        """Append (ns, table, chain, rule) rules; return their undo."""
        done = []
        try:
            for ns, table, chain, rule in rules:
                self._iptables(ns, table, "-A", chain, rule)
                done.append((ns, table, chain, rule))
        except BaseException:
            for ns, table, chain, rule in reversed(done):
                self._iptables(ns, table, "-D", chain, rule)
            raise

        def undo():
            for ns, table, chain, rule in reversed(done):
                _sh(["ip", "netns", "exec", ns, "iptables", "-w", "-t", table, "-D", chain, *rule],
                    check=False)  # fmt: skip

        return undo

    def _register(self, *undos: Undo) -> Undo:
        state = {"done": False}

        def undo() -> None:
            with self._lock:
                if state["done"]:
                    return
                state["done"] = True
                for u in reversed(undos):
                    u()
                if undo in self._undos:
                    self._undos.remove(undo)

        self._undos.append(undo)
        return undo

    def _next_token(self) -> int:
        self._token += 1
        return self._token

    def _isp_dns(self, name: str, rule: dict) -> Undo:
        with self._lock:
            tok = self._next_token()
            self._dns_rules[tok] = (to_ascii(name), rule)
            self._commit()

        def undo():
            self._dns_rules.pop(tok, None)
            self._commit()

        return self._register(undo)

    @staticmethod
    def _port(port: int | None) -> list[str]:
        return ["--dport", str(port)] if port else []

    @staticmethod
    def _pattern(pattern: str | bytes) -> list[str]:
        # KMP, not Boyer-Moore: the kernel's BM cannot find a pattern that spans two blocks of
        # a packet's data (lib/ts_bm.c says so; a GRO-merged segment has several). A censor
        # that lets the odd ClientHello through makes its miss look like the probe's: one SNI
        # in 500 went unreset in a 10,000-target benchmark run with BM.
        data = pattern.encode() if isinstance(pattern, str) else pattern
        hexs = "|" + data.hex() + "|"
        return ["-m", "string", "--hex-string", hexs, "--algo", "kmp", "--icase"]

    # ------------------------------------------------------------ censorship API

    def dns_lie(self, name: str, address: str) -> Undo:
        """The ISP resolver answers A=address for name."""
        return self._isp_dns(name, {"action": "lie", "address": str(address)})

    def dns_nxdomain(self, name: str) -> Undo:
        return self._isp_dns(name, {"action": "nxdomain"})

    def dns_no_answer(self, name: str) -> Undo:
        return self._isp_dns(name, {"action": "no_answer"})

    def dns_drop(self, name: str) -> Undo:
        return self._isp_dns(name, {"action": "drop"})

    def dns_servfail(self, name: str) -> Undo:
        return self._isp_dns(name, {"action": "servfail"})

    def dns_inject(self, name: str, address: str) -> Undo:
        """On-path injection: plain DNS (UDP and TCP) for name to any resolver gets A=address.

        The router DNATs UDP/53 queries containing the name (case-insensitive, wire format) and,
        while an injection is active, all TCP/53 connections, to the injector 192.88.99.12
        (the ISP resolver itself also honours injections); DoH and DoT are untouched."""
        with self._lock:
            tok = self._next_token()
            self._injects[tok] = (to_ascii(name), str(address))
            self._commit()
            wire = qname_wire(name)
            hexs = "|" + wire.hex() + "|"
            undo_udp = self._rules([(self.isp, "nat", "LAB_NAT", [
                "-i", I_VIF, "-p", "udp", "--dport", "53", "!", "-d", self.ISP_RESOLVER,
                "-m", "string", "--hex-string", hexs, "--algo", "kmp", "--icase",
                "-j", "DNAT", "--to-destination", f"{self.INJECTOR_IP}:53",
            ])])  # fmt: skip
            self._tcp_dns_intercept += 1
            if self._tcp_dns_intercept == 1:
                self._tcp_dns_undo = self._rules([(self.isp, "nat", "LAB_NAT", [
                    "-i", I_VIF, "-p", "tcp", "--dport", "53", "!", "-d", self.ISP_RESOLVER,
                    "-j", "DNAT", "--to-destination", f"{self.INJECTOR_IP}:53",
                ])])  # fmt: skip

        def undo_tcp():
            self._tcp_dns_intercept -= 1
            if self._tcp_dns_intercept == 0:
                self._tcp_dns_undo()

        def undo_state():
            self._injects.pop(tok, None)
            self._commit()

        return self._register(undo_state, undo_tcp, undo_udp)

    def tcp_blackhole(self, ip: str, port: int | None = None) -> Undo:
        """TCP to ip[:port] is silently dropped (connects time out)."""
        rule = ["-d", self._ip(ip), "-p", "tcp", *self._port(port), "-j", "DROP"]
        return self._register(self._rules([(self.isp, "filter", "LAB_TCP", rule)]))

    def tcp_refuse(self, ip: str, port: int | None = None) -> Undo:
        """The router answers SYNs to ip[:port] with a RST (ECONNREFUSED)."""
        rule = ["-d", self._ip(ip), "-p", "tcp", *self._port(port),
                "-j", "REJECT", "--reject-with", "tcp-reset"]  # fmt: skip
        return self._register(self._rules([(self.isp, "filter", "LAB_TCP", rule)]))

    def dpi_reset(self, pattern: str | bytes, port: int | None = None) -> Undo:
        """A client->server segment containing pattern is dropped and the client gets a RST."""
        rule = ["-i", I_VIF, "-p", "tcp", *self._port(port), *self._pattern(pattern),
                "-j", "REJECT", "--reject-with", "tcp-reset"]  # fmt: skip
        return self._register(self._rules([(self.isp, "filter", "LAB_DPI", rule)]))

    def dpi_close(self, pattern: str | bytes, port: int | None = None) -> Undo:
        """The client gets a forged FIN from the server (EOF); the rest of the flow is dropped."""
        rule = ["-i", I_VIF, "-p", "tcp", *self._port(port), *self._pattern(pattern),
                "-j", "LAB_CLOSE"]  # fmt: skip
        return self._register(self._rules([(self.isp, "filter", "LAB_DPI", rule)]))

    def dpi_drop(self, pattern: str | bytes, port: int | None = None) -> Undo:
        """The matching segment and everything after it on that connection is dropped."""
        rule = ["-i", I_VIF, "-p", "tcp", *self._port(port), *self._pattern(pattern),
                "-j", "CONNMARK", "--set-xmark", CONNMARK_DROP]  # fmt: skip
        return self._register(self._rules([(self.isp, "filter", "LAB_DPI", rule)]))

    def inject_blockpage(self, ip: str, to: str = BLOCKPAGE_IP) -> Undo:
        """Cleartext HTTP (tcp/80) to ip is DNATed to an ISP server, port 80: ``BLOCKPAGE_IP``
        (a fingerprinted block page), ``NOTICE_IP`` (an unfingerprinted notice) or
        ``REDIRECT_IP`` (a 302 to the notice over HTTPS on another host)."""
        if to not in (self.BLOCKPAGE_IP, self.NOTICE_IP, self.REDIRECT_IP):
            raise ValueError(f"no ISP HTTP server at {to}")
        rule = ["-i", I_VIF, "-p", "tcp", "-d", self._ip(ip), "--dport", "80",
                "-j", "DNAT", "--to-destination", f"{to}:80"]  # fmt: skip
        return self._register(self._rules([(self.isp, "nat", "LAB_NAT", rule)]))

    def sni_proxy_reset(self, name: str) -> Undo:
        """The ISP's SNI proxy (``SNI_PROXY_IP``) resets handshakes whose SNI is name; other
        names it splices to their real address."""
        with self._lock:
            tok = self._next_token()
            self._sni_resets[tok] = to_ascii(name)
            self._commit()

        def undo():
            self._sni_resets.pop(tok, None)
            self._commit()

        return self._register(undo)

    def helper_dpi_reset(self, pattern: str | bytes, port: int | None = None) -> Undo:
        """A censor on the helper's side: the test helper's own client->server segments that
        contain pattern are dropped and it gets a RST (the vantage's traffic is untouched)."""
        rule = ["-i", "lo", "-p", "tcp", *self._port(port), *self._pattern(pattern),
                "-j", "REJECT", "--reject-with", "tcp-reset"]  # fmt: skip
        return self._register(self._rules([(self.net, "filter", "LAB_DPI", rule)]))

    def throttle(self, ip: str, delay_ms: int = 0, loss: float = 0.0,
                 rate_kbit: int | None = None) -> Undo:  # fmt: skip
        """Degrade traffic to/from ip in the router.

        delay_ms: added round-trip time (delay_ms/2 each way, NFQUEUE daemon, max 131 s).
        loss: drop probability applied independently in each direction.
        rate_kbit: htb rate limit applied in each direction (download and upload)."""
        ip = self._ip(ip)
        rules, undos = [], []
        if delay_ms:
            half = max(1, int(delay_ms) // 2)
            if half > 0xFFFF:
                raise ValueError("delay_ms too large")
            mark = f"{half << 16:#x}/0xffff0000"
            for sel in (["-d", ip], ["-s", ip]):
                rules.append((self.isp, "mangle", "LAB_DELAY",
                              [*sel, "-j", "MARK", "--set-xmark", mark]))  # fmt: skip
                rules.append((self.isp, "mangle", "LAB_DELAY",
                              [*sel, "-j", "NFQUEUE", "--queue-num", "1"]))  # fmt: skip
        if loss:
            prob = ["-m", "statistic", "--mode", "random", "--probability", f"{float(loss):.6f}"]
            for sel in (["-d", ip], ["-s", ip]):
                rules.append((self.isp, "filter", "LAB_LOSS", [*sel, *prob, "-j", "DROP"]))
        with self._lock:
            if rate_kbit:
                undos.append(self._rate(ip, int(rate_kbit)))
            undos.append(self._rules(rules))
        return self._register(*undos)

    def _rate(self, ip: str, kbit: int) -> Undo:
        if not self._htb:
            for dev in (I_VIF, I_NIF):
                _sh(["ip", "netns", "exec", self.isp, "tc", "qdisc", "add", "dev", dev,
                     "root", "handle", "1:", "htb"])  # fmt: skip
            self._htb = True
        self._rate_classes += 1
        cls = f"1:{self._rate_classes + 16:x}"
        tc = ["ip", "netns", "exec", self.isp, "tc"]
        burst = max(2, kbit // 64)  # kbyte
        for dev in (I_VIF, I_NIF):
            _sh([*tc, "class", "add", "dev", dev, "parent", "1:", "classid", cls, "htb",
                 "rate", f"{kbit}kbit", "ceil", f"{kbit}kbit", "burst", f"{burst}k"])  # fmt: skip
        undo_rules = self._rules([
            (self.isp, "mangle", "LAB_RATE", ["-o", I_VIF, "-s", ip, "-j", "CLASSIFY",
                                              "--set-class", cls]),
            (self.isp, "mangle", "LAB_RATE", ["-o", I_NIF, "-d", ip, "-j", "CLASSIFY",
                                              "--set-class", cls]),
        ])  # fmt: skip

        def undo():
            undo_rules()
            for dev in (I_VIF, I_NIF):
                _sh([*tc, "class", "del", "dev", dev, "classid", cls], check=False)

        return undo

    def site_down(self, ip: str) -> Undo:
        """Nothing listens at ip any more: RST to SYNs, inside net (the control sees it too)."""
        # (not RSTs themselves: on lo the REJECT's own RST comes back to the same address)
        rule = ["-d", self._ip(ip), "-p", "tcp", "!", "--tcp-flags", "RST", "RST",
                "-j", "REJECT", "--reject-with", "tcp-reset"]  # fmt: skip
        return self._register(self._rules([(self.net, "filter", "LAB_DOWN", rule)]))

    def offline(self) -> Undo:
        """The uplink is cut: everything forwarded to the internet is rejected (net unreachable),
        and the ISP resolver answers SERVFAIL."""
        with self._lock:
            undo_rules = self._rules([
                (self.isp, "filter", "LAB_OFFLINE",
                 ["-o", I_NIF, "-j", "REJECT", "--reject-with", "icmp-net-unreachable"]),
                (self.isp, "filter", "LAB_OFFLINE", ["-i", I_NIF, "-j", "DROP"]),
            ])  # fmt: skip
            self._offline += 1
            self._commit()

        def undo():
            self._offline -= 1
            self._commit()
            undo_rules()

        return self._register(undo)

    def reset(self) -> None:
        """Undo every censorship primitive still in force."""
        with self._lock:
            while self._undos:
                self._undos[-1]()
            # belt and braces: nothing may survive a reset
            for chain, table in (("LAB_NAT", "nat"), ("LAB_DELAY", "mangle"),
                                 ("LAB_RATE", "mangle"), ("LAB_OFFLINE", "filter"),
                                 ("LAB_DPI", "filter"), ("LAB_TCP", "filter"),
                                 ("LAB_LOSS", "filter")):  # fmt: skip
                self._iptables(self.isp, table, "-F", chain, [])
            self._iptables(self.net, "filter", "-F", "LAB_DOWN", [])
            self._iptables(self.net, "filter", "-F", "LAB_DPI", [])
            if self._htb:
                for dev in (I_VIF, I_NIF):
                    _sh(["ip", "netns", "exec", self.isp, "tc", "qdisc", "del", "dev", dev,
                         "root"], check=False)  # fmt: skip
                self._htb = False
            self._tcp_dns_intercept = 0
            if self._dns_rules or self._injects or self._offline or self._sni_resets:
                self._dns_rules.clear()
                self._injects.clear()
                self._sni_resets.clear()
                self._offline = 0
                self._commit()


def _sigterm_exit(signum, frame):
    raise SystemExit(128 + signum)


ISP_RULES = """\
*mangle
:LAB_DELAY - [0:0]
:LAB_RATE - [0:0]
-A FORWARD -j LAB_DELAY
-A POSTROUTING -j LAB_RATE
COMMIT
*nat
:LAB_NAT - [0:0]
-A PREROUTING -j LAB_NAT
COMMIT
*filter
:LAB_OFFLINE - [0:0]
:LAB_DPI - [0:0]
:LAB_CLOSE - [0:0]
:LAB_TCP - [0:0]
:LAB_LOSS - [0:0]
-A FORWARD -j LAB_OFFLINE
-A FORWARD -j LAB_DPI
-A FORWARD -m connmark --mark 0x1/0x1 -j DROP
-A FORWARD -j LAB_TCP
-A FORWARD -j LAB_LOSS
-A LAB_CLOSE -j CONNMARK --set-xmark 0x1/0x1
-A LAB_CLOSE -j NFQUEUE --queue-num 2
COMMIT
"""

NET_RULES = """\
*filter
:LAB_DOWN - [0:0]
:LAB_DPI - [0:0]
-A INPUT -j LAB_DOWN
-A INPUT -j LAB_DPI
COMMIT
"""
