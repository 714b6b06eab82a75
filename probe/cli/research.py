"""The researcher's commands: ``probe timeline``, ``report``, ``export``, ``import``, ``merge``."""

from __future__ import annotations

import datetime
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import click

from ..errors import InputError, StoreError
from ..model import network
from ..model.text import printable
from ..report.escape import json_text
from ._group import BadInput, cli, db_option, db_path, existing_db, fingerprints_option, message


def _filter_options(f: Any) -> Any:
    f = click.option(
        "--until", metavar="TIME", help="Only measurements before TIME (UTC, YYYY-MM-DD[ HH:MM])."
    )(f)
    f = click.option(
        "--since", metavar="TIME", help="Only measurements from TIME (UTC, YYYY-MM-DD[ HH:MM])."
    )(f)
    f = click.option(
        "--asn", "asns", multiple=True, metavar="AS", help="Only this network (AS8449; repeatable)."
    )(f)
    f = click.option(
        "--domain", "domains", multiple=True, metavar="D", help="Only this domain (repeatable)."
    )(f)
    return f


def _event_options(f: Any) -> Any:
    f = click.option(
        "--min-vantages",
        type=click.IntRange(min=1),
        default=2,
        show_default=True,
        help="...or this many vantages agreeing, make an event.",
    )(f)
    f = click.option(
        "--min-measurements",
        type=click.IntRange(min=1),
        default=2,
        show_default=True,
        help="Blocked measurements in a row on a network that make an event...",
    )(f)
    return f


def _open(path: Path, *, readonly: bool = False) -> Any:
    from ..store import open_db

    try:
        return open_db(path, readonly=readonly)
    except StoreError as exc:
        raise BadInput(str(exc)) from None


def _filters(
    domains: tuple[str, ...], asns: tuple[str, ...], since: str | None, until: str | None
) -> Any:
    from ..model.times import parse_time
    from ..store.research import Filters

    networks = []
    for asn in asns:
        canonical = network.asn(asn)
        if canonical is None:
            raise BadInput(f"--asn {asn!r}: expected an AS number like AS8449")
        networks.append(canonical)
    try:
        return Filters(
            domains=tuple(_domain(d) for d in domains),
            asns=tuple(networks),
            since=parse_time(since) if since else None,
            until=parse_time(until) if until else None,
        )
    except InputError as exc:
        raise BadInput(str(exc)) from None


def _domain(text: str) -> str:
    """A domain as stored: lower case, punycode (``яндекс.рф`` is ``xn--d1acpjx3f.xn--p1ai``)."""
    from ..model.urls import normalise

    try:
        return normalise(text.strip().rstrip("."))[1]
    except ValueError as exc:
        raise BadInput(f"--domain {text!r}: {exc}") from None


def _options(min_measurements: int, min_vantages: int, max_gap_hours: float = 24.0) -> Any:
    from ..report import Options

    return Options(min_measurements, min_vantages, int(max_gap_hours * 3600))


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Output:
    """``--output FILE`` written whole or not at all (a temporary file renamed), else stdout."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp") if path else None
        self.stream: TextIO = sys.stdout

    def __enter__(self) -> TextIO:
        if self.tmp is not None:
            try:
                self.stream = open(self.tmp, "w", encoding="utf-8", newline="")
            except OSError as exc:
                raise BadInput(f"{self.path}: cannot write: {exc.strerror}") from None
        return self.stream

    def __exit__(self, kind: Any, *_: Any) -> None:
        if self.tmp is None or self.path is None:
            self.stream.flush()
            return
        self.stream.close()
        if kind is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


# ------------------------------------------------------------------ timeline


@cli.command()
@db_option("The SQLite database to read")
@_filter_options
@_event_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event (JSON Lines).")
@click.option("--anomalies", is_flag=True, help="Also list the isolated blocked measurements.")
def timeline(
    db: Path | None,
    domains: tuple[str, ...],
    asns: tuple[str, ...],
    since: str | None,
    until: str | None,
    min_measurements: int,
    min_vantages: int,
    as_json: bool,
    anomalies: bool,
) -> None:
    """Block events per domain and network, from every stored measurement.

    An event starts at the first blocked measurement on a network (AS number) and ends at
    the first accessible one after it (END is empty while the block goes on). It needs
    --min-measurements blocked measurements in a row, or --min-vantages vantages agreeing;
    a shorter one is an anomaly (--anomalies lists them). Inconclusive and down measurements
    neither start, end nor split an event; a time without measurements is unknown (each
    event's JSON gives its longest gap between measurements).

    Example:

        probe timeline --domain www.azattyk.org --since 2026-10-01 --json
    """
    from ..report import timeline as compute
    from ..report.wording import duration, network_name, plural, when
    from ..store.research import iter_summaries

    filters = _filters(domains, asns, since, until)
    database = _open(existing_db(db), readonly=True)
    result = compute(iter_summaries(database, filters), _options(min_measurements, min_vantages))
    shown = [*result.events, *(result.anomalies if anomalies else [])]
    if as_json:
        for event in shown:
            click.echo(json_text(event.to_dict()))
    else:
        header = (
            "KIND",
            "URL",
            "NETWORK",
            "START (UTC)",
            "END (UTC)",
            "METHOD",
            "BLOCKED",
            "VANTAGES",
            "RUNS",
            "LONGEST GAP",
        )
        rows = [
            tuple(
                printable(cell)
                for cell in (
                    e.kind,
                    e.input,
                    network_name(e.asn),
                    when(e.start),
                    when(e.end) or "-",
                    " > ".join(e.methods),
                    str(e.measurements),
                    str(e.vantages),
                    str(e.runs),
                    duration(e.longest_gap),
                )
            )
            for e in shown
        ]
        widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
        for row in [header, *rows]:
            cells = (cell.ljust(w) for cell, w in zip(row, widths, strict=True))
            click.echo("  ".join(cells).rstrip())
    click.echo(
        f"{plural(len(result.events), 'event')}, {plural(len(result.anomalies), 'anomaly')} "
        f"in {plural(result.measurements, 'measurement')}.",
        err=True,
    )


# ------------------------------------------------------------------ report


@cli.command()
@db_option("The SQLite database to read")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["md", "html", "csv", "json"]),
    default="md",
    show_default=True,
    help="md: Markdown; html: one self-contained page with a timeline chart; csv: one table "
    "whose first column, section, tells a summary per URL and network, an event and an "
    "anomaly apart; json: the whole report as one object.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the report to this file [default: stdout].",
)
@_filter_options
@_event_options
@click.option(
    "--max-gap-hours",
    type=click.FloatRange(min=0.01),
    default=24.0,
    show_default=True,
    help="Hours without a conclusive measurement drawn as unknown in the chart.",
)
@click.option(
    "--title",
    metavar="TEXT",
    help="The report's title [default: Website blocking report].",
)
def report(
    db: Path | None,
    fmt: str,
    output: Path | None,
    domains: tuple[str, ...],
    asns: tuple[str, ...],
    since: str | None,
    until: str | None,
    min_measurements: int,
    min_vantages: int,
    max_gap_hours: float,
    title: str | None,
) -> None:
    """A report to publish, with the evidence behind each block event.

    It says where its data came from (probe version, fingerprint set, test helpers,
    control resolvers, vantages and networks, time range) and what its words mean; per
    target and network the share blocked, the current state and the methods; the block
    events with the evidence a reader can check (the block page's title, size, SHA-256,
    headers and first lines beside the page the test helper fetched; each resolver's
    answer; the failed connection and what the helper saw at the same address); the
    anomalies.

    Example:

        probe report --format html --since 2026-10-01 -o kg-october.html
    """
    from ..app.reports import local_report
    from ..report.render import render

    filters = _filters(domains, asns, since, until)
    database = _open(existing_db(db), readonly=True)
    shown = {"domain": list(domains), "asn": list(filters.asns), "since": since, "until": until}
    result = local_report(
        database,
        filters,
        generated_at=_now(),
        shown_filters={k: v for k, v in shown.items() if v},
        options=_options(min_measurements, min_vantages, max_gap_hours),
        title=title,
    )
    with _Output(output) as out:
        render(result, fmt, out)
    if output is not None:
        click.echo(f"Report written to {output}.", err=True)


# ------------------------------------------------------------------ OONI export and import


@cli.command()
@db_option("The SQLite database to read")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file [default: stdout].",
)
@click.option("--since", metavar="TIME", help="Only measurements from TIME (UTC).")
@click.option("--until", metavar="TIME", help="Only measurements before TIME (UTC).")
@click.option(
    "--include-imported",
    is_flag=True,
    help="Also export measurements imported from OONI (left out by default: they are OONI's).",
)
def export(
    db: Path | None,
    output: Path | None,
    since: str | None,
    until: str | None,
    include_imported: bool,
) -> None:
    """Write stored measurements as OONI measurements (JSON Lines), for OONI's tools.

    Each line is an OONI Web Connectivity measurement: the envelope, the raw observations
    (queries, tcp_connect, tls_handshakes, requests), the control, and the verdict in OONI's
    words (our "tls" blocking is OONI's "http-failure"; ours is kept in x_probe_blocking).
    probe_ip is 127.0.0.1: your address is in none of it. `probe import` reads it back.

    Example:

        probe export --since 2026-11-01 -o november.jsonl
    """
    from ..store.exports import ooni_measurement
    from ..store.research import iter_stored

    filters = _filters((), (), since, until)
    database = _open(existing_db(db), readonly=True)
    config_name = (click.get_current_context().obj or {}).get("vantage")
    count = 0
    with _Output(output) as out:
        for stored in iter_stored(database, filters, include_imported=include_imported):
            line = ooni_measurement(stored, config_name)
            out.write(json_text(line) + "\n")
            count += 1
    click.echo(f"{count} measurements exported.", err=True)


@cli.command("import")
@db_option("The SQLite database to import into")
@click.option(
    "--json", "as_json", is_flag=True, help="Print each imported measurement as `check --json`."
)
@fingerprints_option()
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
def import_(
    db: Path | None,
    as_json: bool,
    fingerprint_files: tuple[str, ...],
    files: tuple[Path, ...],
) -> None:
    """Import OONI Web Connectivity measurements (0.4 and 0.5) and analyse them anew.

    Each measurement is stored on its probe_asn/probe_cc, in a run per OONI report, and its
    raw observations are judged by probe's own analysis: OONI's verdict is kept aside (in the
    ooni_imports table) and never copied. A measurement that is malformed or of another test
    or version is reported as FILE:LINE and skipped; the others are imported. Importing the
    same measurement twice adds nothing. Exit status 0, with the skipped ones listed on
    stderr; 2 when nothing at all could be read.

    Example:

        probe import 2022-10-kg-webconnectivity.jsonl.gz
    """
    from ..analysis import analyze
    from ..analysis.fingerprints import Fingerprints
    from ..ooni.files import read_file
    from ..store.imports import store_import
    from .measure import JSON_KEYS

    try:
        fingerprints = Fingerprints.load(extra_files=fingerprint_files)
    except InputError as exc:
        raise BadInput(str(exc)) from None
    database = _open(db_path(db))
    imported = present = skipped = 0
    for path in files:
        for source, item, raw in read_file(path):
            if isinstance(item, InputError):  # it may quote the file: escaped
                click.echo(message(f"{source}: {item}"), err=True)
                skipped += 1
                continue
            verdict = analyze(item.observations, fingerprints=fingerprints)
            stored = store_import(database, item, verdict, source=source, raw=raw)
            if not stored.added:
                present += 1
                continue
            imported += 1
            if as_json:
                row = database.table("measurements").get(stored.measurement_id)
                record = {key: row[key] for key in JSON_KEYS}
                for key in ("accessible", "confirmed"):
                    record[key] = None if row[key] is None else bool(row[key])
                record.update(
                    measurement_id=stored.measurement_id,
                    run_id=stored.run_id,
                    offline=False,
                    probe_asn=item.probe_asn,
                    probe_cc=item.probe_cc,
                    evidence=json.loads(row["evidence"] or "[]"),
                    source=source,
                )
                click.echo(json_text(record))
    click.echo(
        f"{imported} measurements imported, {present} already in the database, {skipped} skipped.",
        err=True,
    )
    if skipped and not imported and not present:
        raise BadInput("nothing could be imported (see above)")


# ------------------------------------------------------------------ merge


@cli.command()
@db_option("The SQLite database to merge into")
@click.argument("others", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
def merge(db: Path | None, others: tuple[Path, ...]) -> None:
    """Bring other volunteers' databases (OTHER.db...) into this one.

    Runs and measurements are added by their ids, so merging a file twice adds nothing; each
    run keeps the vantage (probe) that measured it, so timelines count vantages right. The
    other files are only read. A database written by a newer probe is refused.

    Example:

        probe merge --db kg-all.db bishkek-1.db osh-2.db
    """
    from ..store.merge import merge as merge_one
    from ..store.research import name_local_vantage

    path = db_path(db)
    database = _open(path)
    name_local_vantage(database, (click.get_current_context().obj or {}).get("vantage"))
    for other in others:
        try:
            merged = merge_one(database, other)
        except InputError as exc:
            raise BadInput(str(exc)) from None
        click.echo(
            f"{other}: {merged.runs} runs, {merged.measurements} measurements and "
            f"{merged.vantages} vantages added; {merged.runs_updated} runs updated."
        )
