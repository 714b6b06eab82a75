"""The ``probe`` command line: one click group, thin over the library.

Commands live by family: :mod:`~probe.cli.measure` (check, reanalyze),
:mod:`~probe.cli.volunteer` (init), :mod:`~probe.cli.helper` (helper serve),
:mod:`~probe.cli.collector` (collector, upload).
"""

from . import collector, helper, measure, volunteer
from ._group import cli

__all__ = ["cli", "collector", "helper", "main", "measure", "volunteer"]


def main() -> None:
    cli()
