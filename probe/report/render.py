"""A :class:`~probe.report.Report` as Markdown, HTML, CSV or JSON (pure: writes to a stream).

Every string that came from the network or a user (domains, URLs, page titles, failure
strings, evidence, AS names, filters) goes through the format's escape function
(:mod:`probe.report.escape`), and nowhere else. Each starts from
:func:`~probe.model.text.printable`, the one escaping function: control characters (C0, DEL,
C1) and bidi controls (U+202E makes ``gpj.exe`` read as ``exe.jpg``) become visible escapes
such as ``\\x1b`` and ``\\u202e``; the format's own quoting comes on top:

* HTML: :func:`html_text` (``&<>"'`` as entities); the page also forbids scripts and every
  external load with a Content-Security-Policy, so it is one self-contained file, readable
  offline;
* Markdown: :func:`md_text` (HTML's entities for ``&<>``, a backslash before every character
  Markdown would read as inline markup, line breaks as spaces, so a cell stays a cell);
* CSV: :func:`csv_cell` (a text cell that a spreadsheet would run as a formula gets a
  leading ``'``);
* JSON: :func:`json_text` (JSON's own ``\\uXXXX`` escapes for what a terminal would act on,
  so that a report or a ``--json`` line printed to a terminal is safe, and parses to the
  same value).

The HTML report (:mod:`~probe.report.html_page`) draws the timeline as inline SVG
(:mod:`~probe.report.chart`): a row per (target, network), bars coloured
by method, the time between the last blocked and the first accessible measurement hatched in
the method's colour (the block ended somewhere in it), as is a long time without measurement
inside a block; other periods without measurements are hatched grey (unknown, not
accessible), anomalies are diamonds; a legend and dates on the axis. Rows and bars carry
``data-`` attributes (domain, network, method, times) so a browser test can check the
drawing through the DOM.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TextIO

from . import Report
from .data import write_csv, write_json
from .html_page import write_html
from .markdown import write_markdown

FORMATS = ("md", "html", "csv", "json")


def render(report: Report, fmt: str, out: TextIO) -> None:
    """Write ``report`` to ``out`` as ``fmt`` (one of :data:`FORMATS`)."""
    writers: dict[str, Callable[[Report, TextIO], None]] = {
        "md": write_markdown,
        "html": write_html,
        "csv": write_csv,
        "json": write_json,
    }
    writers[fmt](report, out)
