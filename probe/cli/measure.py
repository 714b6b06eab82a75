"""Measuring: ``probe check`` and ``probe reanalyze``."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import click

from ..app import targets
from ..app.config import CONCURRENCY
from ..errors import InputError, StoreError
from ..measure.settings import Timeouts
from ..model.records import utc_now
from ..model.text import one_line, printable
from ..report.escape import json_text
from ..store.locks import Busy, file_lock, lock_path
from ._group import (
    BadInput,
    HungUp,
    Interrupted,
    Terminated,
    cli,
    config_keys,
    db_option,
    db_path,
    existing_db,
    fingerprints_option,
    message,
)

STOPPED = "interrupted; measurements finished so far are stored"


def _timeout_options(f: Any) -> Any:
    for name, default, what in reversed(
        (
            ("dns", Timeouts.dns, "each DNS query"),
            ("tcp", Timeouts.tcp, "each TCP connect"),
            ("tls", Timeouts.tls, "each TLS handshake"),
            ("http", Timeouts.http, "each HTTP request and response"),
            ("control", Timeouts.control, "the test helper's answer"),
        )
    ):
        f = click.option(
            f"--{name}-timeout",
            type=click.FloatRange(min=0.1),
            default=default,
            show_default=True,
            help=f"Seconds for {what}.",
        )(f)
    return f


def _require_consent(settings: dict[str, Any], db: Path, files: tuple[Path, ...]) -> None:
    """No measurement without recorded consent: ask once on a terminal, else say how."""
    from ..app.config import config_path, consent_text, record_consent

    if settings.get("consent"):
        return
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise BadInput(
            f"no consent recorded in {config_path()}: run `probe init` once (or "
            "`probe init --yes` in scripts and containers)"
        )
    click.echo(consent_text(db))
    if not click.confirm("Do you understand this and want to measure?", default=False):
        raise BadInput("nothing measured: consent was not given")
    existing = tuple(f for f in files if f.is_file())
    click.echo(f"Consent recorded in {record_consent(db, config_keys(), existing)}.")


@cli.command()
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--input", "inputs", multiple=True, metavar="URL", help="A URL to measure (repeatable)."
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object per target (JSON Lines)."
)
@db_option("The SQLite database to write")
@click.option(
    "--resolver",
    metavar="URL",
    help="The network's resolver to test, e.g. udp://192.0.2.1 [default: first nameserver "
    "in /etc/resolv.conf].",
)
@click.option(
    "--control-resolver",
    "control_resolvers",
    multiple=True,
    metavar="URL",
    help="A control resolver (repeatable): udp://IP[:PORT], tcp://IP[:PORT], tls://HOST[:PORT] "
    "(DoT) or https://HOST/PATH (DoH). Default: DoH at Cloudflare "
    "(https://cloudflare-dns.com/dns-query) and Google (https://dns.google/dns-query), and "
    "udp://8.8.8.8.",
)
@click.option(
    "--helper",
    "helpers",
    multiple=True,
    metavar="URL",
    help="A test helper speaking OONI's protocol (repeatable, tried in turn). Default: OONI's "
    "public helpers https://{0,1,2,3}.th.ooni.org/.",
)
@click.option(
    "--helper-concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="Requests in flight to the helpers [default: 4 for OONI's, 16 for your own].",
)
@click.option(
    "--ca-file",
    type=click.Path(exists=True, dir_okay=False),
    help="Trust anchors (PEM) for TLS checks, DoT/DoH and helpers [default: $SSL_CERT_FILE, "
    "else the Mozilla bundle].",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1, max=4096),
    default=CONCURRENCY,
    show_default=True,
    help=(
        "Targets measured at once (those resolved ahead of their turn, or waiting on a "
        "connect that goes unanswered, do not count)."
    ),
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0.1),
    default=None,
    help="At most this many new network requests (DNS queries, connections) per second.",
)
@click.option(
    "--probe-asn",
    metavar="ASN",
    help="The network's AS number, e.g. AS8449, stored with results [default: found through "
    "the helper's /whoami].",
)
@click.option(
    "--probe-cc",
    metavar="CC",
    help="The network's country code, e.g. KG [default: found through the helper's /whoami].",
)
@click.option(
    "--whoami",
    multiple=True,
    metavar="URL",
    help="A network-identity lookup (probe's helper's GET /whoami), repeatable, asked before "
    "each --helper's own /whoami. They find the AS number, country and AS name unless "
    "--probe-asn/--probe-cc say them.",
)
@fingerprints_option()
@click.option(
    "--max-runtime",
    type=click.FloatRange(min=1),
    metavar="SECONDS",
    help="Start no target after this long; cancel those in flight after one step timeout "
    "more. The run is then 'partial' (exit 0).",
)
@click.option(
    "--jitter",
    type=click.FloatRange(min=0),
    default=0,
    metavar="SECONDS",
    help="Wait a random time up to this long before starting, so a fleet on one schedule "
    "does not start at once.",
)
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=0,
    metavar="SECONDS",
    help="When another run holds the database, wait up to this long for it [default: do "
    "nothing and exit 0].",
)
@click.option("--quiet", is_flag=True, help="Print errors only (for cron).")
@click.option(
    "--upload/--no-upload",
    default=False,
    help="Upload to the configured collector after the run (config: upload = true).",
)
@click.option(
    "--log-file", metavar="FILE", help="Append a log line per target and the summary (UTC)."
)
@_timeout_options
def check(
    files: tuple[Path, ...],
    inputs: tuple[str, ...],
    as_json: bool,
    db: Path | None,
    **options: Any,
) -> None:
    """Measure the targets in FILES (and --input URLs) and store the verdicts.

    FILES are plain-text lists (one URL or bare domain a line, # comments) or Citizen Lab
    CSV lists. For each target probe compares the network's resolver with control resolvers,
    connects to every address, does TLS with the real SNI, fetches the page, asks a test
    helper outside the network for the same, and gives a verdict: accessible, blocked (dns,
    tcp_ip, tls, http-failure, http-diff), down, or inconclusive.

    Exit status: 0 when the run completed (whatever it found), 2 for bad usage or input,
    1 for an internal error; 130, 143 or 129 when Ctrl-C, SIGTERM or SIGHUP stopped it
    (the run is then marked "interrupted"; finished measurements are kept).

    Example:

        probe check targets/kg.txt --json > kg.jsonl
    """
    from ..app.config import check_config
    from ..measure.settings import Timeouts
    from ..store import Store, open_db

    settings = click.get_current_context().obj or {}
    db = db_path(db)
    _require_consent(settings, db, files)
    if not files and not inputs:
        files = tuple(Path(p) for p in settings.get("targets") or ())
    if not files and not inputs:
        raise click.UsageError("give at least one target FILE or --input URL")
    quiet, wait, jitter = options.pop("quiet"), options.pop("wait"), options.pop("jitter")
    for flag, seconds in (("--wait", wait), ("--jitter", jitter)):
        if not math.isfinite(seconds):  # sleep(nan) raises; no time is past a NaN deadline
            raise BadInput(f"{flag}: {seconds!r} is not a finite number of seconds")
    upload = options.pop("upload")
    log = _logger(options.pop("log_file"))
    steps = ("dns", "tcp", "tls", "http", "control")
    timeouts = Timeouts(**{step: options.pop(f"{step}_timeout") for step in steps})
    lists = targets.TargetLists(files, inputs)  # each list read once: a pipe cannot be twice
    click.get_current_context().call_on_close(lists.close)
    try:
        config = check_config(timeouts=timeouts, **options)
        total = lists.count()  # every line checked before anything is stored
    except InputError as exc:
        raise BadInput(str(exc)) from None
    if not total:
        raise BadInput("no targets: the lists are empty")
    if jitter:
        time.sleep(random.uniform(0, jitter))  # a fleet on one schedule does not start at once
    try:
        with file_lock(lock_path(db, "run"), wait=wait, note={"since": utc_now()}):
            store = Store(open_db(db))
            store.mark_interrupted()  # runs left "running" by a process that died
            summary, elapsed = _run(store, config, lists, files, inputs, total, quiet, log)
    except Busy as busy:
        since = printable(str(busy.holder.get("since", "an unknown time")))
        click.echo(f"A run is already in progress on {db} (since {since} UTC); nothing done.",
                   err=True)  # fmt: skip
        return
    except StoreError as exc:
        raise BadInput(str(exc)) from None
    if summary.stopped_by is not None:
        stop: dict[int, type[Interrupted]] = {signal.SIGTERM: Terminated, signal.SIGHUP: HungUp}
        raise stop[summary.stopped_by](STOPPED)
    _report(summary, store, elapsed, db, as_json, quiet)
    log.info("%s", _summary_line(summary, elapsed, db))
    if upload:
        _upload(db, settings, quiet, log)
    if summary.store_error is not None:
        raise click.ClickException(f"{summary.store_error}; the run stopped, {STOPPED}")
    if summary.errors:
        count = len(summary.errors)
        raise click.ClickException(f"{count} targets hit an internal error (see above)")


def _upload(db: Path, settings: dict[str, Any], quiet: bool, log: logging.Logger) -> None:
    """Upload after the run; a failure is said, never fatal (the results wait locally)."""
    from .collector import run_upload, summary_line

    try:
        uploaded = run_upload(db, settings)
    except click.ClickException as exc:  # the collector's words in it: escaped
        click.echo(f"Upload: {message(exc.format_message())}", err=True)
        log.info("upload failed: %s", exc.format_message())
        return
    if uploaded is not None:
        if not quiet:
            click.echo(f"Upload: {summary_line(uploaded)}", err=True)
        log.info("upload: %s", summary_line(uploaded))


def _run(
    store: Any,
    config: Any,
    lists: targets.TargetLists,
    files: tuple[Path, ...],
    inputs: tuple[str, ...],
    total: int,
    quiet: bool,
    log: logging.Logger,
) -> tuple[Any, float]:
    from ..app import run as runner

    started = time.monotonic()
    progress = _Progress(total, enabled=not quiet)
    log.info("run started: %d targets", total)

    def finished(result: Any) -> None:
        progress(result)
        log.info(
            "%s %s %s", result.target.input, result.verdict.verdict, result.verdict.blocking or ""
        )

    def notice(line: str) -> None:  # not an error: in the log, and on stderr unless --quiet
        log.info("%s", line)
        if not quiet:
            click.echo(message(line), err=True)  # it may quote a helper's or a network's words

    try:
        summary = asyncio.run(
            runner.check(
                iter(lists),
                config,
                store,
                total=total,
                inputs=[str(f) for f in files] + list(inputs),
                on_result=finished,
                on_notice=notice,
            )
        )
    except InputError as exc:  # a list that changed since it was counted
        raise BadInput(str(exc)) from None
    except KeyboardInterrupt:
        raise Interrupted(STOPPED) from None
    finally:
        progress.close()
    return summary, time.monotonic() - started


def _logger(path: str | None) -> logging.Logger:
    """Log lines (UTC time first) to ``path``, or nowhere."""
    log = logging.getLogger("probe.check")
    log.propagate = False
    log.setLevel(logging.INFO)
    for old in list(log.handlers):
        log.removeHandler(old)
    handler: logging.Handler
    if path:
        try:
            handler = logging.FileHandler(path, encoding="utf-8")
        except OSError as exc:
            raise BadInput(f"--log-file {path}: {exc.strerror or exc}") from None
        formatter = PrintableFormatter("%(asctime)sZ %(message)s", "%Y-%m-%d %H:%M:%S")
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    else:
        handler = logging.NullHandler()
    log.addHandler(handler)
    return log


class PrintableFormatter(logging.Formatter):
    """Log messages made :func:`~probe.model.text.printable`: a target's input, a failure or
    a helper's words in a log line can neither act on the terminal that shows the log
    (``tail -f``) nor forge a line of its own (a line feed is shown as ``\\n``)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        record.message = printable(record.message)
        return super().formatMessage(record)


class _Progress:
    """A one-line progress display on stderr, only when stderr is a terminal."""

    def __init__(self, total: int, enabled: bool = True) -> None:
        self.total = total
        self.done = 0
        self.counts: Counter[str] = Counter()
        self.enabled = enabled and sys.stderr.isatty()
        self.last = 0.0

    def __call__(self, result: Any) -> None:
        self.done += 1
        self.counts[result.verdict.verdict] += 1
        now = time.monotonic()
        if self.enabled and (now - self.last > 0.1 or self.done == self.total):
            self.last = now
            width = 24
            filled = width * self.done // self.total
            counts = "  ".join(f"{k} {self.counts[k]}" for k in sorted(self.counts))
            line = f"\r[{'#' * filled}{' ' * (width - filled)}] {self.done}/{self.total}  {counts}"
            click.echo(line + "\x1b[K", err=True, nl=False)

    def close(self) -> None:
        if self.enabled and self.done:
            click.echo("", err=True)


def _report(summary: Any, store: Any, elapsed: float, db: Path, as_json: bool, quiet: bool) -> None:
    """JSON Lines on stdout (--json), or a table; then a summary line (stderr with --json).
    --quiet prints neither the table nor the summary (errors only, for cron)."""
    from ..analysis.explain import brief
    from ..model.records import Evidence

    if quiet and not as_json:
        return
    width = 0
    rows = store.run_measurements(summary.run_id)
    if not as_json:
        rows = list(rows)
        width = max([len(printable(row["input"])) for row in rows] + [6])
        click.echo(f"{'TARGET':<{width}}  {'VERDICT':<12}  {'BLOCKING':<12}  EVIDENCE")
    for row in rows:
        if as_json:
            record = {key: row[key] for key in JSON_KEYS}
            for key in ("accessible", "confirmed"):
                record[key] = None if row[key] is None else bool(row[key])
            record.update(measurement_id=row["id"], run_id=summary.run_id)
            record["offline"] = summary.offline
            record["evidence"] = json.loads(row["evidence"] or "[]")
            click.echo(json_text(record))
        else:
            # The evidence holds what the network sent (titles, failures): escaped, one line.
            evidence = [Evidence.from_dict(e) for e in json.loads(row["evidence"] or "[]")]
            shown = one_line(brief(evidence[0]) if evidence else row["failure"] or "")
            click.echo(
                f"{printable(row['input']):<{width}}  {row['verdict']:<12}  "
                f"{row['blocking'] or '-':<12}  {shown}"
            )
    if quiet:
        return
    if summary.offline:
        click.echo(
            "OFFLINE: no control resolver or test helper could be reached and no connection "
            "succeeded; every verdict is inconclusive.",
            err=as_json,
        )
    click.echo(_summary_line(summary, elapsed, db), err=as_json)


def _summary_line(summary: Any, elapsed: float, db: Path) -> str:
    counts = ", ".join(f"{summary.counts[k]} {k}" for k in sorted(summary.counts))
    total = sum(summary.counts.values())
    state = {"partial": " (stopped at --max-runtime)"}.get(summary.status, "")
    return (
        f"{utc_now()} UTC: {total} targets in {elapsed:.1f} s{state}: {counts or 'none'}. "
        f"Stored in {db} (run {summary.run_id})."
    )


JSON_KEYS = (
    "input", "url", "domain", "category", "verdict", "blocking", "accessible",
    "dns_consistency", "failure", "blockpage", "confirmed", "reason", "probe_asn", "probe_cc",
)  # fmt: skip


@cli.command()
@db_option("The SQLite database to re-analyse")
@click.option("--since", metavar="TIME", help="Only measurements from TIME (UTC, YYYY-MM-DD).")
@click.option("--run", "run_id", metavar="ID", help="Only the measurements of this run.")
@fingerprints_option()
def reanalyze(
    db: Path | None, since: str | None, run_id: str | None, fingerprint_files: tuple[str, ...]
) -> None:
    """Re-run the current analysis and fingerprints over stored measurements.

    Nothing is measured again: the stored observations (DNS answers, connections, handshakes,
    pages) are analysed anew, and every verdict that changed is rewritten, with the old and
    new values kept in the reanalyses table. Prints one line per change.

    Example:

        probe reanalyze --since 2026-11-01 --fingerprints new-isp-notice.json
    """
    from ..analysis.fingerprints import Fingerprints
    from ..app.reanalyze import Change
    from ..app.reanalyze import reanalyze as run_reanalysis
    from ..store import open_db

    def show(change: Change) -> None:  # a merged database's texts are anyone's: escaped
        before = ", ".join(f"{k}={v}" for k, v in change.before.items())
        after = ", ".join(f"{k}={v}" for k, v in change.after.items())
        click.echo(printable(f"{change.start_time}  {change.input}: {before} -> {after}"))

    db = existing_db(db)
    try:
        fingerprints = Fingerprints.load(extra_files=fingerprint_files)
        examined, changed = run_reanalysis(
            open_db(db), since=since, run_id=run_id, fingerprints=fingerprints, on_change=show
        )
    except (InputError, StoreError) as exc:
        raise BadInput(str(exc)) from None
    click.echo(f"{examined} measurements re-analysed, {changed} changed.", err=True)
