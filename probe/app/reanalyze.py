"""Re-run today's analysis and fingerprints over stored observations, without measuring again.

Each stored measurement is loaded (:func:`probe.store.load_observations`), analysed anew and,
when its verdict changed, rewritten; what changed (before and after) is kept in the
``reanalyses`` table, so a report can say which findings moved and why. Memory stays flat:
one measurement at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlite_utils import Database

from ..analysis import analyze
from ..analysis.fingerprints import Fingerprints
from ..model.times import parse_time
from ..store import Store, load_observations

#: The verdict fields whose change is a change of finding (wording alone is not).
COMPARED = ("verdict", "blocking", "dns_consistency", "failure", "blockpage", "confirmed")


@dataclass(frozen=True, slots=True)
class Change:
    """One measurement whose verdict moved."""

    measurement_id: str
    input: str
    start_time: str
    before: dict[str, object]
    after: dict[str, object]


def reanalyze(
    db: Database,
    *,
    since: str | None = None,
    run_id: str | None = None,
    fingerprints: Fingerprints | None = None,
    on_change: Callable[[Change], None] | None = None,
) -> tuple[int, int]:
    """Re-analyse the stored measurements (from ``since``, of ``run_id``); (examined, changed)."""
    where, args = [], []
    if since is not None:
        where.append("start_time >= ?")
        args.append(parse_time(since))
    if run_id is not None:
        where.append("run_id = ?")
        args.append(run_id)
    where.append("pruned = 0")  # their observations are gone: nothing to analyse
    sql = "select id from measurements where " + " and ".join(where)
    ids = [row[0] for row in db.execute(sql + " order by start_time, rowid", args).fetchall()]
    store = Store(db)
    examined = changed = 0
    for measurement_id in ids:
        old = db.table("measurements").get(measurement_id)
        verdict = analyze(load_observations(db, measurement_id), fingerprints=fingerprints)
        examined += 1
        new = verdict.to_dict()
        for key in ("confirmed",):
            new[key] = int(new[key])
        before = {key: old[key] for key in COMPARED if old[key] != new[key]}
        if before or old["reason"] != verdict.reason:
            store.replace_verdict(measurement_id, verdict, before=before)
        if before:
            changed += 1
            if on_change is not None:
                after = {key: new[key] for key in before}
                on_change(Change(measurement_id, old["input"], old["start_time"], before, after))
    return examined, changed
