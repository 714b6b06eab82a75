"""Benchmark: `probe timeline` and `probe report` over a million stored measurements.

    python -m bench.report_scale                     # 1,000,000 measurements
    python -m bench.report_scale --measurements 200000 --keep /tmp/kg.db

Generates a database (schema by ``open_db``, rows inserted directly: runs of several vantages
on several networks, every few hours over months, each measuring the same targets; blocks
that start and end, change method, isolated anomalies, offline runs) and times the real
commands as subprocesses, printing wall time and peak memory (RSS) of each. The goal is
10 s for each on the 2-core CI machine. Never a test: timing is measured here only.
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from probe.store import open_db

METHODS = ("dns", "tcp_ip", "tls", "http-failure", "http-diff")
FAILURES = {
    "dns": "dns_nxdomain_error",
    "tcp_ip": "generic_timeout_error",
    "tls": "connection_reset",
    "http-failure": "connection_reset",
    "http-diff": None,
}


def generate(
    path: Path,
    *,
    measurements: int = 1_000_000,
    domains: int = 250,
    networks: int = 4,
    vantages_per_network: int = 2,
    hours_between_runs: int = 4,
    seed: int = 1,
) -> int:
    """Write a database of about ``measurements`` measurements; how many were written."""
    rng = random.Random(seed)
    db = open_db(path)
    names = [f"site{i}.kg" for i in range(domains)]
    asns = [f"AS{8440 + i}" for i in range(networks)]
    vantages = [
        (asn, str(uuid.UUID(int=rng.getrandbits(128))))
        for asn in asns
        for _ in range(vantages_per_network)
    ]
    for index, (_asn, vid) in enumerate(vantages):
        db.execute(
            "insert into vantages (id, name, kind, added_at) values (?, ?, 'remote', ?)",
            [vid, f"volunteer-{index}", "2026-01-01 00:00:00"],
        )
    # State per (domain, network): blocked method or None.
    state: dict[tuple[str, str], str | None] = {}
    runs_needed = max(1, measurements // domains)
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    written = 0
    with db.atomic():
        for run_index in range(runs_needed):
            asn, vantage = vantages[run_index % len(vantages)]
            when = start + datetime.timedelta(
                hours=hours_between_runs * (run_index // len(vantages)),
                minutes=7 * (run_index % len(vantages)),
            )
            started = when.strftime("%Y-%m-%d %H:%M:%S")
            run_id = str(uuid.UUID(int=rng.getrandbits(128)))
            offline = rng.random() < 0.02
            db.execute(
                "insert into runs (id, started_at, finished_at, status, software_version, "
                "probe_asn, probe_cc, inputs, settings, offline, targets, counts, vantage_id) "
                "values (?, ?, ?, ?, 'bench', ?, 'KG', '[]', '{}', ?, ?, '{}', ?)",
                [
                    run_id,
                    started,
                    started,
                    "offline" if offline else "complete",
                    asn,
                    int(offline),
                    domains,
                    vantage,
                ],
            )
            rows = []
            for position, domain in enumerate(names):
                key = (domain, asn)
                method = state.get(key)
                roll = rng.random()
                if method is None and roll < 0.002:
                    method = rng.choice(METHODS)
                elif method is not None and roll < 0.004:
                    method = None
                elif method is not None and roll < 0.0045:
                    method = rng.choice(METHODS)  # the censor changed its method
                state[key] = method
                verdict, blocking = ("blocked", method) if method else ("accessible", None)
                if method is None and rng.random() < 0.001:
                    verdict, blocking = "blocked", rng.choice(METHODS)  # an isolated anomaly
                if offline:
                    verdict, blocking = "inconclusive", None
                elif rng.random() < 0.01:
                    verdict, blocking = rng.choice(("inconclusive", "down")), None
                failure = FAILURES[blocking] if blocking else None
                evidence = (
                    json.dumps(
                        [
                            {
                                "finding": "bench",
                                "step": "dns",
                                "ours": {"failure": failure},
                                "control": {"addresses": ["192.0.2.1"]},
                            }
                        ]
                    )
                    if blocking
                    else "[]"
                )
                rows.append(
                    (
                        str(uuid.UUID(int=rng.getrandbits(128))),
                        run_id,
                        position,
                        f"https://{domain}/",
                        f"https://{domain}/",
                        domain,
                        # As the probe stores them: milliseconds, dozens of targets a second.
                        f"{when + datetime.timedelta(milliseconds=40 * position):%F %T.%f}"[:23],
                        asn,
                        "KG",
                        verdict,
                        blocking,
                        failure,
                        "bench measurement",
                        evidence,
                    )
                )
            db.conn.executemany(
                "insert into measurements (id, run_id, position, input, url, domain, start_time,"
                " probe_asn, probe_cc, verdict, blocking, failure, reason, evidence) "
                "values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            written += len(rows)
    db.conn.close()
    return written


#: Runs a command and prints its peak RSS (KiB) and CPU seconds on stderr: one command each.
_WRAPPER = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stderr=subprocess.DEVNULL)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(usage.ru_maxrss, usage.ru_utime + usage.ru_stime, file=sys.stderr)
"""


def timed(argv: list[str], out: Path) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS MiB) of one command, stdout to ``out``. CPU time
    says what the command costs when other processes share the machine; wall time what a
    researcher waits."""
    started = time.perf_counter()
    with open(out, "wb") as sink:
        done = subprocess.run(
            [sys.executable, "-c", _WRAPPER, *argv],
            stdout=sink,
            stderr=subprocess.PIPE,
            check=True,
        )
    elapsed = time.perf_counter() - started
    rss, cpu = done.stderr.split()[-2:]
    return elapsed, float(cpu), int(rss) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--measurements", type=int, default=1_000_000)
    parser.add_argument("--domains", type=int, default=250)
    parser.add_argument("--keep", type=Path, help="Write the database here and keep it.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "bench.db"
        if not path.exists():
            started = time.perf_counter()
            count = generate(path, measurements=args.measurements, domains=args.domains)
            print(f"generated {count:,} measurements in {time.perf_counter() - started:.1f} s")
        probe = [sys.executable, "-m", "probe.cli"]
        commands = {
            "timeline --json": [*probe, "timeline", "--db", str(path), "--json"],
            "report --format html": [*probe, "report", "--db", str(path), "--format", "html"],
            "report --format json": [*probe, "report", "--db", str(path), "--format", "json"],
        }
        for name, argv in commands.items():
            elapsed, cpu, peak = timed(argv, Path(tmp) / "out")
            size = (Path(tmp) / "out").stat().st_size
            print(
                f"probe {name}: {elapsed:.1f} s wall, {cpu:.1f} s CPU, peak RSS {peak:.0f} MiB, "
                f"{size:,} bytes out"
            )


if __name__ == "__main__":
    main()
