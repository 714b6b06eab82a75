"""Benchmark: `probe check` over a realistic list in the lab, against a bare parallel curl.

    sudo python -m bench.check_many --targets 1000 --rtt 50 --concurrency 64

Builds the censorship lab and adds TARGETS sites in a shuffled mix close to real lists (see
:data:`KINDS`): accessible https and http sites, http->https redirects, DNS-blocked sites (a lie
to the ISP's block page, NXDOMAIN), SNI resets, an injected block page, sites down everywhere,
and TCP-blackholed sites. Several sites share each server address (as on shared hosting and
CDNs); the blackholed, block-page and down sites sit on only a handful of addresses of their
own (a censor blocks an address, not a name). Every packet between the vantage and the
internet is delayed by RTT ms (the router's NFQUEUE daemon, half each way); the ISP's own
resolver and block page are near. Our own test helper runs in the lab.

Then, in the same lab, over the same URLs, it runs:

1. ``probe check --concurrency C`` with the DEFAULT timeouts, and checks every verdict against
   the expected one (a run with a wrong verdict is no result: the exit status is 1);
2. the baseline, a bare parallel fetch: ``xargs -P C curl`` (fetch only: no control, no
   helper, no TLS validation of http sites), with curl's connect timeout at probe's default
   TCP timeout (10 s).

It prints one JSON line per size: wall times, targets/s, CPU per target and peak RSS of the
probe process, database bytes per measurement, the share of verdicts right, the most
connections one server address saw at once from the vantage (sampled), the critical-path
bound (:func:`critical_path`), and the ratios probe/bound and probe/curl.

``--profile FILE`` runs the probe under py-spy (``--py-spy PATH``) and writes a flame graph
(``.svg``) or collapsed stacks (``.txt``); ``--cprofile FILE`` writes cProfile stats instead.
``--helper-rps N`` measures requests/s of ``probe helper serve`` alone: N control requests for
accessible https sites from a client in the vantage, :data:`HELPER_CLIENTS` at once, after the
runs (the RTT is lifted then).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.lab import OUTLET_FIRST, OUTLET_LAST, Lab  # noqa: E402

#: probe's default timeouts (probe check --help), used for the bound and curl's limits.
TCP_TIMEOUT = 10.0
DNS_TIMEOUT = 4.0


@dataclass(frozen=True)
class Kind:
    """One kind of site in the mix: its share, URL scheme, expected verdict and how many round
    trips between vantage and internet its measurement needs at least (the probe's critical
    path: connect, TLS, GET; the control's DoH lookup then the helper's answer, in parallel)."""

    share: float
    scheme: str
    verdict: str
    blocking: str | None
    round_trips: int
    #: Sites of this kind have addresses of their own (the censorship acts on the address).
    own_addresses: bool = False


KINDS: dict[str, Kind] = {
    "https": Kind(0.45, "https", "accessible", None, 3),
    "http": Kind(0.15, "http", "accessible", None, 2),
    "redirect": Kind(0.10, "http", "accessible", None, 5),  # http -> 301 -> https
    "dns-lie": Kind(0.05, "http", "blocked", "dns", 2),  # the ISP's block page, near
    "nxdomain": Kind(0.05, "https", "blocked", "dns", 2),
    "sni-reset": Kind(0.05, "https", "blocked", "tls", 2),
    "blockpage": Kind(0.05, "http", "blocked", "http-diff", 2, own_addresses=True),
    "down": Kind(0.05, "https", "down", None, 2, own_addresses=True),
    "blackhole": Kind(0.05, "https", "blocked", "tcp_ip", 0, own_addresses=True),
}
#: Sites per address for the kinds with addresses of their own (blackholes: 50 sites over 5
#: addresses at 1,000 targets, as when a censor blocks an address range), on at most
#: :data:`MAX_OWN_ADDRESSES` addresses (a handful: the censor's rules do not grow with the list,
#: and the outlets' other addresses stay for the shared sites).
SITES_PER_OWN_ADDRESS = 10
MAX_OWN_ADDRESSES = 5
#: The SNI-reset sites are names under this many blocked zones (``*.tls0.bench.kg`` ...): the
#: censor's DPI matches a zone, one rule each, whatever the number of sites (one rule per site
#: would make every forwarded packet scan hundreds of patterns at 10,000 targets).
SNI_ZONES = 5


@dataclass(frozen=True)
class BenchSite:
    name: str
    kind: str
    ip: str

    @property
    def url(self) -> str:
        return f"{KINDS[self.kind].scheme}://{self.name}/"

    @property
    def expected(self) -> tuple[str, str | None]:
        return KINDS[self.kind].verdict, KINDS[self.kind].blocking


def plan(n: int, seed: int = 11) -> list[BenchSite]:
    """``n`` sites in the mix of :data:`KINDS` (at least one of each), shuffled, with their
    addresses: the kinds with addresses of their own get a few each, every other site shares
    the remaining outlet addresses round robin."""
    counts = {kind: max(1, round(n * k.share)) for kind, k in KINDS.items()}
    counts["https"] += n - sum(counts.values())
    if counts["https"] < 1:
        raise SystemExit(f"--targets {n}: too few for the mix ({len(KINDS)} kinds)")
    outlets = [f"192.88.99.{i}" for i in range(OUTLET_FIRST, OUTLET_LAST + 1)]
    own: dict[str, list[str]] = {}
    for kind, k in KINDS.items():
        if k.own_addresses:
            wanted = min(MAX_OWN_ADDRESSES, max(1, -(-counts[kind] // SITES_PER_OWN_ADDRESS)))
            own[kind], outlets = outlets[:wanted], outlets[wanted:]
    kinds = [kind for kind, count in counts.items() for _ in range(count)]
    random.Random(seed).shuffle(kinds)
    sites, shared, used = [], 0, Counter[str]()
    for i, kind in enumerate(kinds):
        if kind in own:
            ip = own[kind][used[kind] % len(own[kind])]
            used[kind] += 1
        else:
            ip, shared = outlets[shared % len(outlets)], shared + 1
        zone = f".tls{used[kind] % SNI_ZONES}" if kind == "sni-reset" else ""
        if kind == "sni-reset":
            used[kind] += 1
        sites.append(BenchSite(f"s{i:05d}{zone}.bench.kg", kind, ip))
    return sites


def censor(lab: Lab, sites: list[BenchSite]) -> None:
    """Add the sites to the lab and censor them as their kinds say (undone by lab.reset();
    the sites stay until :func:`remove`), with one state reload (:meth:`Lab.batch`)."""
    with lab.batch():
        _censor(lab, sites)


def _censor(lab: Lab, sites: list[BenchSite]) -> None:
    by_kind: dict[str, list[BenchSite]] = {}
    for site in sites:
        by_kind.setdefault(site.kind, []).append(site)
    plain = [s for s in sites if s.kind != "redirect"]
    lab.add_sites([s.name for s in plain], [s.ip for s in plain])
    redirects = by_kind.get("redirect", [])
    lab.add_sites([s.name for s in redirects], [s.ip for s in redirects], https_only_redirect=True)
    for site in by_kind.get("dns-lie", []):
        lab.dns_lie(site.name, lab.BLOCKPAGE_IP)
    for site in by_kind.get("nxdomain", []):
        lab.dns_nxdomain(site.name)
    for zone in sorted({s.name.split(".", 1)[1] for s in by_kind.get("sni-reset", [])}):
        lab.dpi_reset(f".{zone}", port=443)
    for kind, act in (("blockpage", lab.inject_blockpage), ("down", lab.site_down),
                      ("blackhole", lab.tcp_blackhole)):  # fmt: skip
        for ip in sorted({s.ip for s in by_kind.get(kind, [])}):
            act(ip)


def remove(lab: Lab, sites: list[BenchSite]) -> None:
    with lab.batch():
        for site in sites:
            lab.remove_site(site.name)


def delay(lab: Lab, sites: list[BenchSite], rtt: int) -> None:
    """Every address the vantage talks to across the border gets ``rtt`` ms more."""
    if rtt:
        for ip in sorted({s.ip for s in sites}) + [lab.CONTROL_RESOLVER, lab.DOH_IP, lab.HELPER_IP]:
            lab.throttle(ip, delay_ms=rtt)


def critical_path(sites: list[BenchSite], rtt: float, concurrency: int) -> float:
    """Seconds no implementation can beat: the slowest target (a blackholed connect waits for
    the whole TCP timeout), or the sum of the other targets' minimal times spread over
    ``concurrency`` workers, whichever is longer. (A connect waiting on a blackhole need not
    hold a worker: curl's do, probe's do not.)"""
    minimal = [KINDS[s.kind].round_trips * rtt / 1000 for s in sites if s.kind != "blackhole"]
    slowest = TCP_TIMEOUT if any(s.kind == "blackhole" for s in sites) else max(minimal, default=0)
    return max(slowest, sum(minimal) / concurrency)


class ConnectionPeaks:
    """Samples, in the vantage, how many TCP connections it holds open to each server address
    at once (its /proc/net/tcp, every 20 ms, read without starting a process); the highest
    count seen per address. (Counted at the client: a server keeps the flows a censor reset
    on the client's side open until it times out.)"""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.peaks: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ConnectionPeaks:
        self._witness = self.lab.spawn(self.lab.vantage, ["sleep", "infinity"])
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._witness.kill()
        self._witness.wait()

    def _run(self) -> None:
        table = Path(f"/proc/{self._witness.pid}/net/tcp")
        while not self._stop.wait(0.02):
            # (The file is not read atomically: a socket may show twice, so count each once.)
            established = set()
            for line in table.read_text().splitlines()[1:]:
                _, local, remote, state = line.split(None, 4)[:4]
                if state == "01":  # ESTABLISHED
                    established.add((local, remote))
            now = Counter(remote.split(":")[0] for _, remote in established)
            for hex_ip, count in now.items():
                ip = ".".join(str(b) for b in reversed(bytes.fromhex(hex_ip)))
                self.peaks[ip] = max(self.peaks[ip], count)

    def worst(self, excluded: set[str]) -> int:
        """The most connections at once to one server address (not counting ``excluded``)."""
        return max((c for ip, c in self.peaks.items() if ip not in excluded), default=0)


WRAPPER = """\
import asyncio, os, resource, runpy, sys
out = sys.argv.pop(1)
sys.argv[0] = 'probe'
if os.environ.get("BENCH_UVLOOP"):
    import uvloop
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
try:
    runpy.run_module('probe.cli', run_name='__main__')
finally:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with open(out, 'w') as f:
        f.write(f'{usage.ru_utime + usage.ru_stime} {usage.ru_maxrss}')
"""


def run_probe(
    lab: Lab, sites: list[BenchSite], concurrency: int, helper_url: str, tmp: Path,
    profile: str | None = None, py_spy: str | None = None, cprofile: str | None = None,
    keep_db: str | None = None, uvloop: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """One ``probe check`` run over the sites' URLs; its figures and verdicts."""
    targets = tmp / "targets.txt"
    targets.write_text("".join(f"{s.url}\n" for s in sites))
    db = tmp / "probe.db"
    usage_file = tmp / "usage"
    python = [sys.executable]
    if cprofile:
        python += ["-m", "cProfile", "-o", cprofile]
    argv = [
        *python, "-c", WRAPPER, str(usage_file), "check", str(targets), "--db", str(db),
        "--quiet", "--concurrency", str(concurrency),
        "--control-resolver", lab.DOH_URL,
        "--control-resolver", f"udp://{lab.CONTROL_RESOLVER}:53",
        "--helper", helper_url,
        "--ca-file", lab.ca_file,
    ]  # fmt: skip
    if profile:
        fmt = "flamegraph" if profile.endswith(".svg") else "raw"
        argv = [py_spy or "py-spy", "record", "-r", "200", "-f", fmt, "-o", profile,
                "--", *argv]  # fmt: skip
    # A volunteer who gave consent (probe measures nothing without it), in a config of its own.
    config = tmp / "config.toml"
    config.write_text('consent = "2026-01-01 00:00:00"\nvantage = "bench"\n')
    env = {"PYTHONPATH": str(REPO), "PROBE_CONFIG": str(config)}
    if uvloop:
        env["BENCH_UVLOOP"] = "1"
    with ConnectionPeaks(lab) as peaks:
        started, before, lab_before = time.monotonic(), _cpu_times(), _lab_cpu(lab)
        result = lab.run(lab.vantage, argv, timeout=1800, env=env)
        elapsed, after, lab_after = time.monotonic() - started, _cpu_times(), _lab_cpu(lab)
    busy, total = (a - b for a, b in zip(after, before, strict=True))
    if result.returncode != 0:
        raise SystemExit(f"probe check failed ({result.returncode}):\n{result.stderr[-3000:]}")
    if keep_db:
        shutil.copy(db, keep_db)
    cpu, peak_kib = usage_file.read_text().split()
    with sqlite3.connect(db) as conn:
        got, runtimes = {}, {}
        for url, verdict, blocking, runtime in conn.execute(
            "select url, verdict, blocking, runtime from measurements"
        ):
            got[url], runtimes[url] = (verdict, blocking), runtime
        (measured,) = conn.execute("select count(*) from measurements").fetchone()
    wal = db.with_name(db.name + "-wal")
    size = db.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    wrong = {s.url: {"expected": s.expected, "got": got.get(s.url)}
             for s in sites if got.get(s.url) != s.expected}  # fmt: skip
    excluded = {lab.HELPER_IP, lab.DOH_IP, lab.CONTROL_RESOLVER}
    by_kind: dict[str, list[float]] = {}
    for s in sites:
        if runtimes.get(s.url) is not None:
            by_kind.setdefault(s.kind, []).append(runtimes[s.url])
    return {
        "seconds": round(elapsed, 2),
        "cpu_ms_per_target": round(float(cpu) * 1000 / len(sites), 2),
        "peak_rss_mib": round(int(peak_kib) / 1024, 1),
        "db_bytes_per_measurement": round(size / max(measured, 1)),
        "right": round((len(sites) - len(wrong)) / len(sites), 4),
        "wrong": dict(list(wrong.items())[:10]),
        "most_connections_to_one_site_address": peaks.worst(excluded),
        "verdicts": dict(Counter(v for v, _ in got.values())),
        # How busy the machine's cores were during the run (probe, helper, lab, router).
        "machine_busy": round(busy / total, 2),
        "cpu_seconds": {
            "probe": round(float(cpu), 1),
            **{role: round(lab_after[role] - lab_before[role], 1) for role in sorted(lab_after)},
        },
        # Each kind's stored runtimes (seconds): mean and most.
        "runtime_by_kind": {
            kind: [round(sum(r) / len(r), 2), round(max(r), 2)] for kind, r in by_kind.items()
        },
    }


def _lab_cpu(lab: Lab) -> Counter[str]:
    """CPU seconds used so far by the lab's long-running processes, by role: the helper, the
    internet's servers, the ISP's servers and its router daemon."""
    roles = {"helper serve": "helper", "servers net": "lab_internet", "servers isp": "lab_isp",
             "tests.lab.router": "lab_router"}  # fmt: skip
    used: Counter[str] = Counter()
    tick = os.sysconf("SC_CLK_TCK")
    for ns in (lab.net, lab.isp):
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
        for pid in pids.stdout.split():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            for needle, role in roles.items():
                if needle in cmdline:
                    used[role] += (int(stat[11]) + int(stat[12])) / tick  # utime + stime
    return used


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


def run_curl(lab: Lab, sites: list[BenchSite], concurrency: int, tmp: Path) -> dict[str, Any]:
    """The baseline: ``xargs -P C curl`` over the same URLs (following redirects, verifying
    certificates against the lab CA, connect timeout = probe's TCP timeout)."""
    urls = tmp / "urls.txt"
    urls.write_text("".join(f"{s.url}\n" for s in sites))
    script = (
        f"xargs -P {concurrency} -n 1 curl -s -o /dev/null -L --max-redirs 10 "
        f"--cacert {lab.ca_file} --connect-timeout {TCP_TIMEOUT:g} --max-time 40 "
        "-w '%{http_code} %{exitcode}\\n' < " + str(urls) + "; true"
    )
    started = time.monotonic()
    result = lab.run(lab.vantage, ["sh", "-c", script], timeout=1800)
    elapsed = time.monotonic() - started
    codes = Counter(line.split()[0] for line in result.stdout.splitlines() if line.strip())
    return {"seconds": round(elapsed, 2), "status_codes": dict(codes)}


#: Requests at once to the helper alone: below its default --max-in-flight (25), beyond which
#: it sheds load (503).
HELPER_CLIENTS = 24
HELPER_CLIENT = """\
import asyncio, json, sys, time
import httpx
url, n, concurrency, sites = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
async def main():
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    statuses = {}
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        todo = iter(range(n))
        async def worker():
            for i in todo:
                name, ip = sites[i % len(sites)].split("=")
                body = {"http_request": f"https://{name}/", "http_request_headers": {},
                        "tcp_connect": [f"{ip}:443"]}
                r = await client.post(url, json=body)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        print(json.dumps({"seconds": time.monotonic() - started, "statuses": statuses}))
asyncio.run(main())
"""


def helper_rps(lab: Lab, sites: list[BenchSite], n: int, concurrency: int,
               helper_url: str) -> dict[str, Any]:  # fmt: skip
    """Requests/s of ``probe helper serve`` alone: N control requests for accessible https
    sites, ``concurrency`` at once, from the vantage (the helper measures from the internet)."""
    https = [f"{s.name}={s.ip}" for s in sites if s.kind == "https"]
    argv = [sys.executable, "-c", HELPER_CLIENT, helper_url, str(n), str(concurrency), *https]
    before = _lab_cpu(lab)
    result = lab.run(lab.vantage, argv, timeout=1800, env={"PYTHONPATH": str(REPO)})
    after = _lab_cpu(lab)
    if result.returncode != 0:
        raise SystemExit(f"helper client failed:\n{result.stderr[-3000:]}")
    out = json.loads(result.stdout)
    return {
        "requests": n,
        "seconds": round(out["seconds"], 2),
        "requests_per_second": round(n / out["seconds"], 1),
        "statuses": out["statuses"],
        # CPU per request of the helper, and of the sites it connects to (their side of it).
        "cpu_ms_per_request": {
            role: round((after[role] - before[role]) * 1000 / n, 2)
            for role in ("helper", "lab_internet")
        },
    }


def bench(lab: Lab, n: int, rtt: int, concurrency: int, helper_url: str,
          **profiling: str | None) -> dict[str, Any]:  # fmt: skip
    """Censor the lab for ``n`` sites, run probe and curl over them; the figures. The lab
    must have a helper at ``helper_url`` and no censorship in force; it is reset after (the
    sites stay: :func:`remove` them)."""
    sites = plan(n)
    try:
        censor(lab, sites)
        delay(lab, sites, rtt)
        with tempfile.TemporaryDirectory() as tmp:
            # curl before and after the probe; the faster of its two runs is the baseline.
            curls = [run_curl(lab, sites, concurrency, Path(tmp))]
            probe = run_probe(lab, sites, concurrency, helper_url, Path(tmp), **profiling)
            curls.append(run_curl(lab, sites, concurrency, Path(tmp)))
    finally:
        with lab.batch():
            lab.reset()
    curl = min(curls, key=lambda c: c["seconds"])
    curl["runs"] = [c["seconds"] for c in curls]
    bound = critical_path(sites, rtt, concurrency)
    return {
        "targets": n,
        "rtt_ms": rtt,
        "concurrency": concurrency,
        "kinds": dict(Counter(s.kind for s in sites)),
        "site_addresses": len({s.ip for s in sites}),
        "probe": probe,
        "curl": curl,
        "bound_seconds": round(bound, 2),
        "targets_per_second": round(n / probe["seconds"], 1),
        "probe_over_bound": round(probe["seconds"] / bound, 2),
        "probe_over_curl": round(probe["seconds"] / curl["seconds"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, nargs="+", default=[1000])
    parser.add_argument("--rtt", type=int, default=50, help="added round-trip time, ms")
    parser.add_argument("--concurrency", type=int, default=64, help="probe's --concurrency")
    parser.add_argument("--profile", help="py-spy output: FILE.svg (flame graph) or FILE.txt")
    parser.add_argument("--py-spy", default=shutil.which("py-spy"), help="py-spy's path")
    parser.add_argument("--helper-profile", help="py-spy output for the helper (--helper-rps)")
    parser.add_argument("--uvloop", action="store_true", help="run the probe on uvloop")
    parser.add_argument("--keep-db", help="copy the probe's database here (after a checkpoint)")
    parser.add_argument("--cprofile", help="write cProfile stats of the probe to this file")
    parser.add_argument(
        "--helper-rps", type=int, default=0, metavar="N",
        help="also measure requests/s of the helper alone (N requests)",
    )  # fmt: skip
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the lab needs root")
    with Lab(sites=[]) as lab:
        helper = lab.start_probe_helper(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for size in args.targets:
            started = time.monotonic()
            figures = bench(lab, size, args.rtt, args.concurrency, lab.helper_url,
                            profile=args.profile, py_spy=args.py_spy,
                            cprofile=args.cprofile, keep_db=args.keep_db,
                            uvloop=args.uvloop)  # fmt: skip
            figures["bench_seconds"] = round(time.monotonic() - started, 1)
            print(json.dumps(figures), flush=True)
            if figures["probe"]["right"] < 1:
                raise SystemExit(f"wrong verdicts: no result ({figures['probe']['wrong']})")
        if args.helper_rps:
            sites = plan(max(args.targets))  # in the lab since its run, uncensored now
            spy = None
            if args.helper_profile:
                fmt = "flamegraph" if args.helper_profile.endswith(".svg") else "raw"
                spy = subprocess.Popen([
                    args.py_spy or "py-spy", "record", "-r", "200", "-f", fmt,
                    "-o", args.helper_profile, "--pid", str(helper.pid),
                ])  # fmt: skip
            rps = helper_rps(lab, sites, args.helper_rps, HELPER_CLIENTS, lab.helper_url)
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(60)
            print(json.dumps({"helper": rps}), flush=True)


if __name__ == "__main__":
    main()
