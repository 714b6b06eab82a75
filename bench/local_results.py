"""Benchmark: the volunteer's read commands on a database of a million measurements.

    python -m bench.local_results --measurements 1000000

Builds a probe database with the real schema (``probe.store.open_db``) and fills it with
RUNS runs of MEASUREMENTS/RUNS measurements each (verdict rows, as a year of hourly runs would
leave them, most of their observations pruned; the newest run keeps its observations), then
times `probe runs`, `probe status`, `probe show RUN`, `probe show MEASUREMENT` and
`probe prune --older-than 90d` as whole processes, each the median of a few runs. Prints one JSON
line per command. Nothing here touches the network.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from probe.store import open_db  # noqa: E402

VERDICTS = [("accessible", None), ("blocked", "dns"), ("blocked", "tls"), ("inconclusive", None)]


def fill(path: Path, measurements: int, runs: int) -> tuple[str, str]:
    db = open_db(path)
    per_run = measurements // runs
    start = datetime.datetime(2025, 11, 29, tzinfo=datetime.UTC)
    conn = db.conn
    conn.execute("pragma synchronous = off")
    last_run = last_measurement = ""
    for r in range(runs):
        run_id = str(uuid.uuid4())
        when = (start + datetime.timedelta(hours=r)).strftime("%Y-%m-%d %H:%M:%S")
        conn.execute(
            "insert into runs (id, started_at, finished_at, status, probe_asn, probe_cc, "
            "inputs, settings, offline, targets, counts) values (?,?,?,?,?,?,?,?,?,?,?)",
            [run_id, when, when, "complete", "AS8449", "KG", "[]", "{}", 0, per_run,
             json.dumps({"accessible": per_run})],
        )  # fmt: skip
        rows = []
        for i in range(per_run):
            verdict, blocking = VERDICTS[i % len(VERDICTS)]
            mid = str(uuid.uuid4())
            rows.append((mid, run_id, i, f"https://site-{i}.kg/", f"https://site-{i}.kg/",
                         f"site-{i}.kg", when, 1.0, "AS8449", "KG", verdict, blocking,
                         "[]", "evidence", 0 if r == runs - 1 else 1))  # fmt: skip
            last_measurement = mid
        conn.executemany(
            "insert into measurements (id, run_id, position, input, url, domain, start_time, "
            "runtime, probe_asn, probe_cc, verdict, blocking, evidence, reason, pruned) values "
            "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            rows,
        )
        conn.commit()
        last_run = run_id
    return last_run, last_measurement


def timed(argv: list[str], env: dict[str, str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--measurements", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.db"
        started = time.perf_counter()
        run_id, measurement_id = fill(path, args.measurements, args.runs)
        print(json.dumps({"filled": args.measurements, "seconds": round(
            time.perf_counter() - started, 1), "bytes": path.stat().st_size}))  # fmt: skip
        env = dict(os.environ, PROBE_DB=str(path), PROBE_CONFIG=str(Path(tmp) / "none.toml"))
        probe = [sys.executable, "-m", "probe.cli"]
        commands = {
            "runs": ["runs"],
            "status": ["status"],
            "show run": ["show", run_id[:8]],
            "show measurement": ["show", measurement_id[:10]],
            "prune --older-than 90d": ["prune", "--older-than", "90d"],
        }
        for name, argv in commands.items():
            seconds = timed([*probe, *argv], env, args.repeat)
            print(json.dumps({"command": f"probe {name}", "median_seconds": round(seconds, 3)}))


if __name__ == "__main__":
    main()
