"""Run many targets concurrently, analyse and store each as soon as it finishes.

A fixed pool of ``concurrency`` workers pulls targets from the list, so memory stays flat in
the number of targets: only the targets in flight are held, plus a small summary per target
for the run-level offline guard. A per-address limit (in :class:`probe.measure.Measurer`)
keeps us from hammering one server, and an optional rate limit caps new network requests
per second.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import traceback
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from . import analysis
from .fingerprints import Fingerprints
from .measure import Measurer
from .records import Observations, Verdict
from .store import Store
from .targets import Target

VERDICTS = ("accessible", "blocked", "down", "inconclusive")


@dataclass
class Result:
    """One finished target, as reported to the caller."""

    target: Target
    measurement_id: str
    verdict: Verdict


@dataclass
class RunSummary:
    run_id: str
    counts: Counter[str] = field(default_factory=Counter)
    offline: bool = False
    errors: list[str] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)


def _light(obs: Observations) -> Observations:
    """A copy without bodies: enough for the offline guard, small enough to keep."""
    return dataclasses.replace(obs, http=[dataclasses.replace(hop, body=None) for hop in obs.http])


async def run(
    targets: Iterable[Target],
    measurer: Measurer,
    store: Store,
    run_id: str,
    *,
    concurrency: int = 32,
    fingerprints: Fingerprints | None = None,
    probe_asn: str | None = None,
    probe_cc: str | None = None,
    on_result: Callable[[Result], None] | None = None,
    keep_results: bool = True,
) -> RunSummary:
    """Measure every target; returns counts, the offline flag and any internal errors."""
    summary = RunSummary(run_id)
    pending = iter(targets)
    seen: list[tuple[str, Observations]] = []

    async def worker() -> None:
        for target in pending:
            try:
                obs = await measurer.measure(target)
                verdict = analysis.analyze(obs, fingerprints=fingerprints)
                measurement_id = store.save(
                    run_id, obs, verdict, probe_asn=probe_asn, probe_cc=probe_cc
                )
            except Exception as exc:  # a bug must not lose the other targets
                detail = "".join(traceback.format_exception_only(exc)).strip()
                summary.errors.append(f"{target.url}: internal error: {detail}")
                print(traceback.format_exc(), file=sys.stderr)
                continue
            seen.append((measurement_id, _light(obs)))
            summary.counts[verdict.verdict] += 1
            result = Result(target, measurement_id, verdict)
            if keep_results:
                summary.results.append(result)
            if on_result is not None:
                on_result(result)

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))

    if seen and analysis.is_offline([obs for _, obs in seen]):
        summary.offline = True
        summary.counts = Counter()
        by_id = {r.measurement_id: r for r in summary.results}
        for measurement_id, obs in seen:
            verdict = analysis.analyze(obs, fingerprints=fingerprints, offline=True)
            store.update_verdict(measurement_id, verdict)
            summary.counts[verdict.verdict] += 1
            if measurement_id in by_id:
                by_id[measurement_id].verdict = verdict
    return summary
