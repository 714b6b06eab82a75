"""The ``probe`` command line: one click group, thin over the library.

Commands live by family: :mod:`~probe.cli.measure` (check, reanalyze),
:mod:`~probe.cli.volunteer` (init, runs, show, status, prune, schedule),
:mod:`~probe.cli.helper` (helper serve), :mod:`~probe.cli.research` (timeline, report, export,
import, merge), :mod:`~probe.cli.collector` (collector serve, migrate, add-volunteer, revoke,
volunteers; upload), :mod:`~probe.cli.bundle` (bundle, verify-bundle). The README lists
the same (a test compares). Each command composes :mod:`probe.app` and the libraries; none
holds a rule of its own.
"""

from . import bundle, collector, helper, measure, research, volunteer
from ._group import cli

__all__ = ["bundle", "cli", "collector", "helper", "main", "measure", "research", "volunteer"]


def main() -> None:
    cli()
