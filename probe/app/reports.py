"""A report over a volunteer's database: the one way ``probe report`` and ``probe bundle`` make
it (the timeline over the stored summaries, each event's evidence from the store, the
provenance), so a bundle's report is the report a reader would make of the same data."""

from __future__ import annotations

from typing import Any

from sqlite_utils import Database

from ..report import Options, Report, build_report
from ..store.evidence import details, provenance
from ..store.research import Filters, iter_summaries, network_names


def local_report(
    db: Database,
    filters: Filters,
    *,
    generated_at: str,
    shown_filters: dict[str, Any] | None = None,
    options: Options | None = None,
    title: str | None = None,
) -> Report:
    """The report over ``db``'s measurements that ``filters`` selects; ``shown_filters`` is
    how the report names them to its reader."""
    return build_report(
        iter_summaries(db, filters),
        lambda ids: details(db, ids),
        generated_at=generated_at,
        filters=shown_filters or {},
        options=options,
        network_names=network_names(db),
        provenance=provenance(db, filters),
        title=title,
    )
