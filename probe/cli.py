"""The ``probe`` command line: a thin layer over the library."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import click

from . import __version__, targets
from .errors import InputError

DEFAULT_DB = "results/probe.db"
STOPPED = "interrupted; measurements finished so far are stored"


class BadInput(click.ClickException):
    """Bad input from a file or an option: one line, exit status 2."""

    exit_code = 2


class Interrupted(click.ClickException):
    """Ctrl-C: exit status 130, as a shell would report SIGINT."""

    exit_code = 128 + signal.SIGINT


class Terminated(Interrupted):
    """SIGTERM (docker stop, systemd): exit status 143."""

    exit_code = 128 + signal.SIGTERM


class HungUp(Interrupted):
    """SIGHUP (the terminal went away): exit status 129."""

    exit_code = 128 + signal.SIGHUP


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="probe")
def cli() -> None:
    """Measure website blocking: DNS, TCP/IP, TLS/SNI and HTTP, against a control.

    Run by volunteers inside a censored network; results go to SQLite for researchers.
    """


def _timeout_options(f: Any) -> Any:
    for name, default, what in reversed(
        (
            ("dns", 4.0, "each DNS query"),
            ("tcp", 10.0, "each TCP connect"),
            ("tls", 10.0, "each TLS handshake"),
            ("http", 10.0, "each HTTP request and response"),
            ("control", 30.0, "the test helper's answer"),
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


@cli.command()
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--input", "inputs", multiple=True, metavar="URL", help="A URL to measure (repeatable)."
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object per target (JSON Lines)."
)
@click.option(
    "--db",
    envvar="PROBE_DB",
    default=DEFAULT_DB,
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="SQLite database to write (also $PROBE_DB).",
)
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
    default=32,
    show_default=True,
    help="Targets measured at once.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0.1),
    default=None,
    help="At most this many new network requests (DNS queries, connections) per second.",
)
@click.option(
    "--probe-asn", metavar="ASN", help="The network's AS number, e.g. AS8449, stored with results."
)
@click.option("--probe-cc", metavar="CC", help="The network's country code, e.g. KG.")
@click.option(
    "--fingerprints",
    "fingerprint_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Extra blockpage fingerprints (JSON, probe's format), repeatable.",
)
@_timeout_options
def check(
    files: tuple[Path, ...],
    inputs: tuple[str, ...],
    as_json: bool,
    db: Path,
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
    from .config import check_config
    from .measure import runner
    from .measure.measurer import Timeouts
    from .store import Store, open_db

    if not files and not inputs:
        raise click.UsageError("give at least one target FILE or --input URL")
    timeouts = Timeouts(
        **{
            name: options.pop(f"{name}_timeout")
            for name in ("dns", "tcp", "tls", "http", "control")
        }
    )
    try:
        config = check_config(timeouts=timeouts, **options)
        target_list = targets.load(files, inputs)
    except InputError as exc:
        raise BadInput(str(exc)) from None
    if not target_list:
        raise BadInput("no targets: the lists are empty")
    started = time.monotonic()
    store = Store(open_db(db))
    progress = _Progress(len(target_list))
    try:
        summary = asyncio.run(
            runner.check(
                target_list,
                config,
                store,
                inputs=[str(f) for f in files] + list(inputs),
                on_result=progress,
            )
        )
    except KeyboardInterrupt:
        raise Interrupted(STOPPED) from None
    finally:
        progress.close()
    if summary.stopped_by is not None:
        stop: dict[int, type[Interrupted]] = {signal.SIGTERM: Terminated, signal.SIGHUP: HungUp}
        raise stop[summary.stopped_by](STOPPED)
    _report(summary, store, time.monotonic() - started, db, as_json)
    if summary.errors:
        raise click.ClickException(
            f"{len(summary.errors)} targets hit an internal error (see above)"
        )


class _Progress:
    """A one-line progress display on stderr, only when stderr is a terminal."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.counts: Counter[str] = Counter()
        self.enabled = sys.stderr.isatty()
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


def _report(summary: Any, store: Any, elapsed: float, db: Path, as_json: bool) -> None:
    """JSON Lines on stdout (--json), or a table; then a summary line (stderr with --json)."""
    width = 0
    rows = store.run_measurements(summary.run_id)
    if not as_json:
        rows = list(rows)
        width = max([len(row["input"]) for row in rows] + [6])
        click.echo(f"{'TARGET':<{width}}  {'VERDICT':<12}  {'BLOCKING':<12}  EVIDENCE")
    total = 0
    for row in rows:
        total += 1
        if as_json:
            record = {key: row[key] for key in JSON_KEYS}
            for key in ("accessible", "confirmed"):
                record[key] = None if row[key] is None else bool(row[key])
            record.update(measurement_id=row["id"], run_id=summary.run_id)
            record["offline"] = summary.offline
            click.echo(json.dumps(record, ensure_ascii=False))
        else:
            evidence = row["blockpage"] or row["failure"] or ""
            click.echo(
                f"{row['input']:<{width}}  {row['verdict']:<12}  {row['blocking'] or '-':<12}  "
                f"{evidence}"
            )
    if summary.offline:
        click.echo(
            "OFFLINE: no control resolver or test helper could be reached (or nearly every "
            "target failed the same way); every verdict is inconclusive.",
            err=as_json,
        )
    counts = ", ".join(f"{summary.counts[k]} {k}" for k in sorted(summary.counts))
    click.echo(
        f"{total} targets in {elapsed:.1f} s: {counts or 'none'}. Stored in {db} "
        f"(run {summary.run_id}).",
        err=as_json,
    )


JSON_KEYS = (
    "input", "url", "domain", "category", "verdict", "blocking", "accessible",
    "dns_consistency", "failure", "blockpage", "confirmed", "reason",
)  # fmt: skip


@cli.group()
def helper() -> None:
    """The test helper: the control seen from outside the censored network."""


@helper.command()
@click.option("--listen", default="0.0.0.0:8080", show_default=True, metavar="HOST:PORT")
@click.option("--resolver", metavar="URL", help="Resolver to use [default: /etc/resolv.conf].")
@click.option(
    "--ca-file", type=click.Path(exists=True, dir_okay=False), help="Trust anchors (PEM)."
)
@click.option(
    "--asn-db",
    type=click.Path(exists=True, dir_okay=False),
    help="IP-to-ASN table (iptoasn.com TSV) for the ip_info answers.",
)
@click.option("--max-in-flight", type=click.IntRange(min=1), default=25, show_default=True)
def serve(
    listen: str, resolver: str | None, ca_file: str | None, asn_db: str | None, max_in_flight: int
) -> None:
    """Serve OONI's test-helper protocol, so our probes and OONI's can use it.

    It resolves, connects, handshakes and fetches on behalf of probes, refusing private,
    loopback, link-local and other bogon addresses so it can never become a proxy into its
    own network.

    Example:

        probe helper serve --listen 0.0.0.0:8080 --asn-db ip2asn-combined.tsv
    """
    from .helper.server import HelperConfig
    from .helper.server import serve as serve_helper
    from .net.resolvers import parse_resolver

    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise click.BadParameter("expected HOST:PORT", param_hint="--listen")
    try:
        parsed = parse_resolver(resolver) if resolver else None
    except InputError as exc:
        raise click.BadParameter(str(exc), param_hint="--resolver") from None
    try:
        serve_helper(
            HelperConfig(
                host=host.strip("[]") or "0.0.0.0",
                port=int(port),
                resolver=parsed,
                ca_file=ca_file,
                asn_db=asn_db,
                max_in_flight=max_in_flight,
            )
        )
    except InputError as exc:  # a bad --asn-db line (FILE:LINE: ...), no system resolver
        raise BadInput(str(exc)) from None
    except OSError as exc:  # e.g. the address is in use
        raise click.ClickException(f"cannot serve on {listen}: {exc.strerror or exc}") from None


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
