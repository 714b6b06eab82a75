"""Benchmark: the collector on a throwaway PostgreSQL cluster (fsync on, as in production).

    python -m bench.collector ingest --uploaders 50 --measurements 20000
    python -m bench.collector timeline --measurements 1000000 --vantages 100

``ingest``: measurements per second accepted by one collector (``probe collector serve``,
a process of its own) from UPLOADERS concurrent uploaders, each opening a report and
submitting its share one after the other on a keep-alive connection, as ``probe upload``
does. Every measurement is a real OONI measurement of our export (a few DNS queries, a
connect, a handshake and a 3 KB page), gzip-compressed, with an id of its own; the
collector parses, checks, re-analyses and commits each before answering. The uploaders are
an asyncio client with the requests prepared beforehand, so they take as little of the 2
cores as possible from the collector and PostgreSQL.

``timeline``: MEASUREMENTS measurements from VANTAGES vantages (on 5 networks, 200 domains,
a year: 12 month partitions) written with COPY, then ``GET /timeline`` and
``GET /report?format=html`` (and json) timed, each the median of 3. Blocking is a network's
(a third of the domains, each blocked on some networks for 10-150 days, by the network's
method), with noise: 3% inconclusive or down, 0.2% blocked at random (anomalies).

Prints one JSON line per figure. Loopback only; nothing else on the network.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gzip
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.postgres import Cluster, Collector  # noqa: E402

TEMPLATE = {
    "data_format_version": "0.2.0", "format": "json", "probe_asn": "AS8449", "probe_cc": "KG",
    "software_name": "probe", "software_version": "0.1.0", "test_name": "web_connectivity",
    "test_start_time": "2026-11-01 10:00:00", "test_version": "0.5.28",
}  # fmt: skip


def sample_measurements(workdir: Path) -> list[dict]:
    """Our export of a blocked and an accessible measurement (a volunteer's database)."""
    from probe.analysis import analyze
    from probe.store import Store, open_db
    from probe.store.exports import export_measurement
    from tests.test_collector import observations

    db = open_db(workdir / "sample.db")
    store = Store(db)
    run = store.start_run(inputs=[], settings={}, targets=2, probe_asn="AS8449", probe_cc="KG")
    ids = []
    for blocked in (True, False):
        obs = observations("news.example.kg", "2026-11-01 10:00:00", blocked=blocked)
        ids.append(store.save(run, obs, analyze(obs), probe_asn="AS8449", probe_cc="KG"))
    return [export_measurement(db, i, "bench") for i in ids]


def request(path: str, body: bytes, token: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Encoding: gzip\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return status, await reader.readexactly(length)


async def uploader(port: int, token: str, report: str, bodies: list[bytes]) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    accepted = 0
    for body in bodies:
        writer.write(request(f"/report/{report}", body, token))
        status, _ = await read_response(reader)
        if status != 200:
            raise RuntimeError(f"HTTP {status}")
        accepted += 1
    writer.close()
    return accepted


def ingest(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp, Cluster(durable=True) as pg:
        work = Path(tmp)
        samples = sample_measurements(work)
        dsn = pg.create()
        import subprocess

        made = subprocess.run([sys.executable, "-m", "probe.cli", "collector", "add-volunteer",
                               "bench", "--database", dsn], capture_output=True, text=True,
                              check=True)  # fmt: skip
        token = made.stdout.strip()
        with Collector(dsn, work / "collector.log", args=tuple(args.collector_args)) as c:
            client = httpx.Client(base_url=c.url, headers={"Authorization": f"Bearer {token}"})
            reports = []
            for _ in range(args.uploaders):
                r = client.post("/report", json=TEMPLATE)
                r.raise_for_status()
                reports.append(r.json()["report_id"])
            per = args.measurements // args.uploaders
            start = datetime.datetime(2026, 10, 1, tzinfo=datetime.UTC)
            work_lists = []
            for u, report in enumerate(reports):
                bodies = []
                for i in range(per):
                    content = json.loads(json.dumps(samples[i % len(samples)]))
                    when = start + datetime.timedelta(seconds=u * per + i)
                    content["measurement_start_time"] = when.strftime("%Y-%m-%d %H:%M:%S")
                    content["report_id"] = report
                    content["test_keys"]["x_probe_measurement_id"] = str(uuid.uuid4())
                    payload = json.dumps({"format": "json", "content": content}).encode()
                    bodies.append(gzip.compress(payload, 6))
                work_lists.append(bodies)
            size = statistics.mean(len(b) for bodies in work_lists for b in bodies)

            async def run_all() -> int:
                done = await asyncio.gather(
                    *(
                        uploader(c.port, token, r, b)
                        for r, b in zip(reports, work_lists, strict=True)
                    )
                )
                return sum(done)

            before = cpu(c.process.pid), cpu_of("postgres"), time.process_time()
            started = time.perf_counter()
            accepted = asyncio.run(run_all())
            elapsed = time.perf_counter() - started
            after = cpu(c.process.pid), cpu_of("postgres"), time.process_time()
            with psycopg.connect(dsn) as conn:
                stored = conn.execute("select count(*) from measurements").fetchone()[0]
        print(json.dumps({
            "figure": "ingest", "uploaders": args.uploaders, "accepted": accepted,
            "stored": stored, "seconds": round(elapsed, 2),
            "per_second": round(accepted / elapsed), "gzip_bytes_each": round(size),
            "collector_args": args.collector_args,
            "cpu_seconds": dict(zip(("collector", "postgres", "uploaders"),
                                    (round(b - a, 1) for a, b in zip(before, after, strict=True)),
                                    strict=True)),
        }))  # fmt: skip


def cpu(pid: int) -> float:
    """User + system CPU seconds of a process and its children (/proc)."""
    import os

    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def cpu_of(name: str) -> float:
    total = 0.0
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "comm").read_text().strip() == name:
                    total += cpu(int(proc.name))
            except (OSError, IndexError):
                pass
    return total


def fill(dsn: str, measurements: int, vantages: int) -> None:
    from probe.collector import schema
    from probe.collector.server import prepare

    prepare(dsn)
    rng = random.Random(12)
    networks = ["AS8449", "AS50223", "AS12997", "AS41750", "AS39659"]
    methods = dict(zip(networks, ["dns", "tls", "http-diff", "tcp_ip", "dns"], strict=True))
    domains = [f"site-{i}.kg" for i in range(200)]
    start = datetime.datetime(2025, 12, 1, tzinfo=datetime.UTC)
    year = 365 * 86400
    # Blocking is a network's: a third of the domains are blocked on some networks, each
    # from a day to another; every vantage on the network sees it, with some noise.
    windows: dict[tuple[str, str], tuple[int, int]] = {}
    for domain in domains[: len(domains) // 3]:
        for asn in networks:
            if rng.random() < 0.6:
                begin = rng.randrange(0, 300) * 86400
                windows[asn, domain] = (begin, begin + rng.randrange(10, 150) * 86400)
    with schema.connect(dsn) as conn:
        conn.execute("insert into volunteers (name, token_sha256) values ('bench', 'x')")
        conn.execute(
            "insert into reports (report_id, volunteer_id, test_name, test_version, "
            "software_name, software_version) values ('r', 1, 'w', 'v', 's', 'v')"
        )
        schema.ensure_partitions(
            conn, {schema.month_of(start + datetime.timedelta(days=d)) for d in range(366)}
        )
        evidence = json.dumps([{"finding": "system_resolver_failed", "step": "dns",
                                "ours": {"failure": "dns_nxdomain_error"},
                                "control": {"addresses": ["93.184.216.34"]}}])  # fmt: skip
        columns = ("id, start_time, measurement_uid, report_id, volunteer_id, vantage_id, "
                   "run_id, probe_asn, probe_cc, probe_network_name, input, url, domain, verdict, "
                   "blocking, "
                   "failure, confirmed, reason, evidence, analysis_version, submitted_verdict, "
                   "content")  # fmt: skip
        with conn.cursor() as cur, cur.copy(f"copy measurements ({columns}) from stdin") as copy:
            for i in range(measurements):
                vantage = i % vantages
                asn = networks[vantage % len(networks)]
                domain = domains[rng.randrange(len(domains))]
                offset = rng.randrange(year)
                t = start + datetime.timedelta(seconds=offset)
                begin, end = windows.get((asn, domain), (year, year))
                verdict = "blocked" if begin <= offset < end else "accessible"
                noise = rng.random()
                if noise < 0.03:
                    verdict = "inconclusive" if noise < 0.02 else "down"
                elif noise < 0.032:
                    verdict = "blocked"  # a false positive: an anomaly, not an event
                copy.write_row((
                    str(uuid.UUID(int=rng.getrandbits(128))), t, f"uid{i}", "r", 1,
                    f"vantage-{vantage}", f"run-{vantage}-{t:%Y%m%d%H}", asn, "KG",
                    f"Network {asn}",
                    f"https://{domain}/", f"https://{domain}/", domain, verdict,
                    methods[asn] if verdict == "blocked" else None,
                    "dns_nxdomain_error" if verdict == "blocked" else None, False,
                    "reason", evidence if verdict == "blocked" else "[]", "bench", "{}", "{}",
                ))  # fmt: skip
        conn.execute("vacuum analyze measurements")


def timeline(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp, Cluster(durable=True) as pg:
        dsn = pg.create()
        started = time.perf_counter()
        fill(dsn, args.measurements, args.vantages)
        filled = time.perf_counter() - started
        with Collector(dsn, Path(tmp) / "c.log", args=("--public-reads",)) as c:
            paths = ("/timeline", "/timeline?anomalies=1", "/report?format=html",
                     "/report?format=json", "/timeline?asn=AS8449&since=2026-09-01")  # fmt: skip
            for path in paths:
                times, size = [], 0
                for _ in range(3):
                    t0 = time.perf_counter()
                    r = httpx.get(c.url + path, timeout=600)
                    times.append(time.perf_counter() - t0)
                    r.raise_for_status()
                    size = len(r.content)
                print(json.dumps({
                    "figure": "read", "path": path, "measurements": args.measurements,
                    "vantages": args.vantages, "seconds": round(statistics.median(times), 2),
                    "bytes": size, "fill_seconds": round(filled, 1),
                }), flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("ingest")
    p.add_argument("--uploaders", type=int, default=50)
    p.add_argument("--measurements", type=int, default=20_000)
    p.add_argument("--collector-args", nargs="*", default=[])
    p = sub.add_parser("timeline")
    p.add_argument("--measurements", type=int, default=1_000_000)
    p.add_argument("--vantages", type=int, default=100)
    args = parser.parse_args()
    {"ingest": ingest, "timeline": timeline}[args.what](args)


if __name__ == "__main__":
    main()
