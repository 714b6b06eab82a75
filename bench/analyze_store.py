"""Benchmark: the CPU ``probe check`` spends on a target once it is measured: analysis, storing.

    python -m bench.analyze_store DB [--limit N] [--rounds R] [--profile]
    python -m bench.analyze_store --replay SOURCE.db --times N --out NEW.db [--per-kind K]

The first form loads the observations of the stored measurements of the probe database DB
(:func:`probe.store.load_observations`; not timed), then, R times, runs
:func:`probe.analysis.analyze` over each with the fingerprints ``probe check`` loads by default
(:func:`probe.app.config.check_config` without ``--fingerprints``), and
:meth:`probe.store.Store.save` of each with its verdict into a new database (one run, one
transaction per measurement, as ``probe check`` does). It prints one JSON line: CPU
milliseconds per measurement (process time) for analyze and save, the best and the median of
the R rounds (the best is the figure to compare on a shared machine), and how many verdicts
differ from the ones stored in DB (0 unless the analysis changed). ``--profile`` also prints
cProfile's top entries of one round of each.

The second form makes input without a lab: it writes the measurements of SOURCE, N times over
(one run per copy, new measurement ids unless N is 1), into a new database NEW, each with the
verdict stored in SOURCE, through :meth:`~probe.store.Store.save`. ``--per-kind K`` keeps only
the first K measurements of each kind (verdict, blocking, fingerprint, scheme, hops, stored
bodies, control): how tests/data/analyze_store.db was made from a lab run of 1,000 targets.

Pure: no lab, no network. Nothing here is asserted; tests/test_store.py checks the fixture.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlite_utils import Database  # noqa: E402

from probe import analysis  # noqa: E402
from probe.analysis.fingerprints import Fingerprints  # noqa: E402
from probe.app.config import check_config  # noqa: E402
from probe.model.records import Evidence, Observations, Verdict  # noqa: E402
from probe.store import Store, load_observations, open_db  # noqa: E402
from probe.store.locks import lock_path  # noqa: E402
from probe.store.sqlite import VERDICT_BOOLEANS, _verdict_row  # noqa: E402


def read_only(path: Path) -> Database:
    """``path`` opened read-only (a sample database is never changed)."""
    if not path.is_file():
        raise SystemExit(f"{path}: no such file")
    return Database(sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True))


def stored_verdict(row: dict[str, Any]) -> Verdict:
    """The verdict a ``measurements`` row holds, as the record :meth:`Store.save` wrote it from."""
    fields = {name: row[name] for name in Verdict.__slots__ if name != "evidence"}
    for key in VERDICT_BOOLEANS:
        if fields[key] is not None:
            fields[key] = bool(fields[key])
    evidence = [Evidence.from_dict(e) for e in json.loads(row["evidence"] or "[]")]
    return Verdict(**fields, evidence=evidence)


def kind(db: Database, row: dict[str, Any]) -> tuple[Any, ...]:
    """What makes a measurement a different case for analysis and storing."""
    (hops, bodies, raws) = db.execute(
        "select count(*), count(body), count(raw) from http_requests where measurement_id = ?",
        [row["id"]],
    ).fetchone()
    (control,) = db.execute(
        "select response is not null from controls where measurement_id = ?", [row["id"]]
    ).fetchone() or (None,)
    scheme = row["url"].split(":", 1)[0]
    return (row["verdict"], row["blocking"], row["blockpage"], scheme, hops, bodies, raws, control)


def measurements(db: Database, limit: int | None = None) -> list[dict[str, Any]]:
    """The stored, unpruned measurements, run by run in input order."""
    sql = (
        "select m.* from measurements m join runs r on r.id = m.run_id where m.pruned = 0 "
        "order by r.started_at, r.rowid, m.position, m.rowid"
    )
    rows = [dict(row) for row in db.query(sql)]
    return rows if limit is None else rows[:limit]


def replay(source: Path, out: Path, *, times: int, per_kind: int | None) -> dict[str, Any]:
    """Write SOURCE's measurements ``times`` over into a new database ``out``."""
    if out.exists():
        raise SystemExit(f"{out}: exists; give a new file")
    src = read_only(source)
    rows = measurements(src)
    if per_kind is not None:
        seen: Counter[tuple[Any, ...]] = Counter()
        kept = []
        for row in rows:
            key = kind(src, row)
            if seen[key] < per_kind:
                seen[key] += 1
                kept.append(row)
        rows = kept
    loaded = [(row, load_observations(src, row["id"]), stored_verdict(row)) for row in rows]
    db = open_db(out)
    store = Store(db)
    for copy in range(times):
        run_id = store.start_run(
            inputs=[source.name], settings={"replay": copy}, targets=len(loaded)
        )
        counts: Counter[str] = Counter()
        for row, obs, verdict in loaded:
            store.save(
                run_id,
                obs,
                verdict,
                probe_asn=row["probe_asn"],
                probe_cc=row["probe_cc"],
                position=row["position"],
                measurement_id=row["id"] if times == 1 else None,
            )
            counts[verdict.verdict] += 1
        store.finish_run(run_id, status="complete", counts=dict(counts), offline=False)
    # One small file (a fixture is committed): out of WAL mode, small pages, no lock file left.
    db.execute("pragma journal_mode = delete")
    db.execute("pragma page_size = 1024")
    db.conn.execute("vacuum")
    db.conn.close()
    lock_path(out, "migrate").unlink(missing_ok=True)
    return {"source": str(source), "out": str(out), "measurements": len(loaded) * times}


def _cpu_ms_per(items: int, run: Callable[[], None]) -> float:
    start = time.process_time()
    run()
    return (time.process_time() - start) * 1000 / items


def _profile(run: Callable[[], None], top: int) -> str:
    profiler = cProfile.Profile()
    profiler.runcall(run)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("tottime")
    stats.print_stats(top)
    return out.getvalue()


def bench(
    path: Path, *, limit: int | None, rounds: int, profile: bool, top: int = 25
) -> dict[str, Any]:
    """Time analyze and save over the measurements stored in ``path`` (see the module doc)."""
    src = read_only(path)
    rows = measurements(src, limit)
    if not rows:
        raise SystemExit(f"{path}: no stored measurements with observations")
    start = time.process_time()
    loaded: list[tuple[dict[str, Any], Observations]] = [
        (row, load_observations(src, row["id"])) for row in rows
    ]
    load_ms = (time.process_time() - start) * 1000 / len(rows)
    # The fingerprints probe check uses when no --fingerprints is given (the resolver is
    # given only so that /etc/resolv.conf is not read; nothing is sent anywhere).
    fingerprints: Fingerprints = check_config(resolver="udp://192.88.99.10").fingerprints
    n = len(loaded)
    verdicts: list[Verdict] = []

    def analyze_all() -> None:
        verdicts[:] = [analysis.analyze(obs, fingerprints=fingerprints) for _, obs in loaded]

    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        dbs = (Path(tmp) / f"round-{i}.db" for i in range(rounds + 1))

        def save_all() -> Callable[[], None]:
            store = Store(open_db(next(dbs)))
            run_id = store.start_run(inputs=["bench"], settings={}, targets=n)
            pairs = list(zip(loaded, verdicts, strict=True))

            def run() -> None:
                for (row, obs), verdict in pairs:
                    store.save(
                        run_id,
                        obs,
                        verdict,
                        probe_asn=row["probe_asn"],
                        probe_cc=row["probe_cc"],
                        position=row["position"],
                    )

            return run

        analyze_ms, save_ms = [], []
        for _ in range(rounds):
            analyze_ms.append(_cpu_ms_per(n, analyze_all))
            save_ms.append(_cpu_ms_per(n, save_all()))
        differing = sum(
            _verdict_row(verdict) != {key: row[key] for key in _verdict_row(verdict)}
            for (row, _), verdict in zip(loaded, verdicts, strict=True)
        )
        figures: dict[str, Any] = {
            "db": str(path),
            "measurements": n,
            "rounds": rounds,
            "analyze_ms": {"best": min(analyze_ms), "median": statistics.median(analyze_ms)},
            "save_ms": {"best": min(save_ms), "median": statistics.median(save_ms)},
            "load_ms": load_ms,
            "verdicts_differing_from_stored": differing,
            "verdicts": dict(Counter(v.verdict for v in verdicts)),
        }
        if profile:
            figures["profile"] = {
                "analyze": _profile(analyze_all, top),
                "save": _profile(save_all(), top),
            }
    return figures


def _rounded(figures: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    for key, value in figures.items():
        if isinstance(value, dict) and key.endswith("_ms"):
            yield key, {k: round(v, 4) for k, v in value.items()}
        elif key.endswith("_ms"):
            yield key, round(value, 4)
        elif key != "profile":
            yield key, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("db", nargs="?", type=Path, help="a probe database to read (read-only)")
    parser.add_argument("--limit", type=int, help="only the first N measurements")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--profile", action="store_true", help="print cProfile's top entries")
    parser.add_argument("--top", type=int, default=25, help="entries of --profile (25)")
    parser.add_argument("--replay", type=Path, metavar="SOURCE", help="make input from SOURCE")
    parser.add_argument("--times", type=int, default=1, help="copies of SOURCE (--replay)")
    parser.add_argument("--out", type=Path, help="the new database (--replay)")
    parser.add_argument("--per-kind", type=int, help="keep K measurements per kind (--replay)")
    args = parser.parse_args(argv)
    if args.replay is not None:
        if args.out is None:
            parser.error("--replay needs --out")
        made = replay(args.replay, args.out, times=args.times, per_kind=args.per_kind)
        print(json.dumps(made))
        return 0
    if args.db is None:
        parser.error("give a database, or --replay SOURCE --out NEW")
    figures = bench(
        args.db, limit=args.limit, rounds=args.rounds, profile=args.profile, top=args.top
    )
    for name, text in figures.get("profile", {}).items():
        print(f"--- cProfile, one round of {name} (by own time) ---\n{text}", file=sys.stderr)
    print(json.dumps(dict(_rounded(figures))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
