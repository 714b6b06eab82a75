"""Benchmark: `probe check` over many targets at a given round-trip time, in the lab.

    sudo python -m bench.check_many --targets 1000 --rtt 50

Builds the censorship lab, adds TARGETS sites spread over the lab's 151 outlet addresses,
delays every packet between the vantage and the internet by RTT ms (the router's NFQUEUE
daemon, half each way), starts our test helper, and runs the real `probe check` in the vantage
against DoH + UDP control resolvers and the helper. A tenth of the sites are censored (SNI
reset, blackhole, DNS lie) so the run also exercises the failure paths. It prints one JSON
line per size: wall time, targets per second, peak RSS of the probe process and the verdict
counts. Run it at two sizes (``--targets 250 1000``) to see that memory stays flat.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.lab import OUTLET_FIRST, OUTLET_LAST, Lab  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, nargs="+", default=[1000])
    parser.add_argument("--rtt", type=int, default=50, help="added round-trip time, ms")
    parser.add_argument("--concurrency", type=int, default=32, help="probe's --concurrency")
    args = parser.parse_args()

    outlets = [f"192.88.99.{i}" for i in range(OUTLET_FIRST, OUTLET_LAST + 1)]
    most = max(args.targets)
    names = [f"outlet-{i:04d}.kg" for i in range(most)]
    with Lab(sites=[]) as lab:
        started = time.monotonic()
        sites = lab.add_sites(names, outlets)
        if args.rtt:
            for ip in [*outlets, lab.CONTROL_RESOLVER, lab.DOH_IP, lab.HELPER_IP]:
                lab.throttle(ip, delay_ms=args.rtt)
        # Every tenth site is censored, three ways.
        for i, site in enumerate(sites):
            if i % 30 == 0:
                lab.dpi_reset(site.host, port=443)
            elif i % 30 == 10:
                lab.dns_lie(site.host, lab.BLOCKPAGE_IP)
            elif i % 30 == 20:
                lab.dns_nxdomain(site.host)
        lab.start_probe_helper(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(f"# lab ready in {time.monotonic() - started:.1f} s", file=sys.stderr)
        for size in args.targets:
            print(json.dumps(run(lab, names[:size], args)), flush=True)


def run(lab: Lab, names: list[str], args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        targets = Path(tmp) / "targets.txt"
        targets.write_text("".join(f"https://{name}/\n" for name in names))
        db = Path(tmp) / "probe.db"
        rss_file = Path(tmp) / "rss"
        # Run the CLI in a wrapper that records the probe process's own peak RSS.
        wrapper = (
            "import resource, runpy, sys\n"
            "sys.argv = ['probe'] + sys.argv[1:]\n"
            "try:\n"
            "    runpy.run_module('probe.cli', run_name='__main__')\n"
            "finally:\n"
            f"    open({str(rss_file)!r}, 'w').write("
            "str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))\n"
        )
        argv = [
            sys.executable, "-c", wrapper, "check", str(targets), "--db", str(db),
            "--concurrency", str(args.concurrency),
            "--control-resolver", lab.DOH_URL,
            "--control-resolver", f"udp://{lab.CONTROL_RESOLVER}:53",
            "--helper", f"http://{lab.HELPER_IP}/",
            "--ca-file", lab.ca_file,
        ]  # fmt: skip
        started = time.monotonic()
        result = lab.run(lab.vantage, argv, timeout=600)
        elapsed = time.monotonic() - started
        if result.returncode != 0:
            raise SystemExit(f"probe check failed:\n{result.stderr[-3000:]}")
        peak = int(rss_file.read_text())
        with sqlite3.connect(db) as conn:
            counts = dict(conn.execute("select verdict, count(*) from measurements group by 1"))
            blocking = dict(conn.execute("select blocking, count(*) from measurements group by 1"))
    return {
        "targets": len(names),
        "rtt_ms": args.rtt,
        "concurrency": args.concurrency,
        "seconds": round(elapsed, 2),
        "targets_per_second": round(len(names) / elapsed, 1),
        "peak_rss_mib": round(peak / 1024, 1),
        "verdicts": counts,
        "blocking": {str(k): v for k, v in blocking.items()},
    }


if __name__ == "__main__":
    main()
