"""The ``probe`` command line: a thin layer over the library."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import click

from . import __version__

DEFAULT_DB = "results/probe.db"


def _fail(message: str, status: int = 2) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(status)


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
    resolver: str | None,
    control_resolvers: tuple[str, ...],
    helpers: tuple[str, ...],
    helper_concurrency: int | None,
    ca_file: str | None,
    concurrency: int,
    rate: float | None,
    probe_asn: str | None,
    probe_cc: str | None,
    fingerprint_files: tuple[str, ...],
    **timeouts: float,
) -> None:
    """Measure the targets in FILES (and --input URLs) and store the verdicts.

    FILES are plain-text lists (one URL or bare domain a line, # comments) or Citizen Lab
    CSV lists. For each target probe compares the network's resolver with control resolvers,
    connects to every address, does TLS with the real SNI, fetches the page, asks a test
    helper outside the network for the same, and gives a verdict: accessible, blocked (dns,
    tcp_ip, tls, http-failure, http-diff), down, or inconclusive.

    Exit status: 0 when the run completed (whatever it found), 2 for bad usage or input,
    1 for an internal error.

    Example:

        probe check targets/kg.txt --json > kg.jsonl
    """
    from . import targets as targets_mod

    if not files and not inputs:
        raise click.UsageError("give at least one target FILE or --input URL")
    probe_asn = _asn(probe_asn)
    if probe_cc is not None and not (len(probe_cc) == 2 and probe_cc.isalpha()):
        raise click.BadParameter(
            f"{probe_cc!r} is not a two-letter country code", param_hint="--probe-cc"
        )
    try:
        target_list = targets_mod.load(files, inputs)
    except targets_mod.TargetError as exc:
        _fail(str(exc))
    if not target_list:
        _fail("no targets: the lists are empty")
    try:
        config = _check_config(
            resolver,
            control_resolvers,
            helpers,
            helper_concurrency,
            ca_file,
            fingerprint_files,
            timeouts,
        )
    except ValueError as exc:
        _fail(str(exc))
    try:
        summary, store, elapsed = asyncio.run(
            _check(
                target_list,
                config,
                db=db,
                inputs=[str(f) for f in files] + list(inputs),
                concurrency=concurrency,
                rate=rate,
                probe_asn=probe_asn,
                probe_cc=probe_cc.upper() if probe_cc else None,
                as_json=as_json,
            )
        )
    except KeyboardInterrupt:
        _fail("interrupted; measurements finished so far are stored", 130)
    except Exception as exc:
        import traceback

        traceback.print_exc()
        _fail(f"internal error: {type(exc).__name__}: {exc}", 1)
    _report(summary, store, elapsed, db, as_json)
    if summary.errors:
        _fail(f"{len(summary.errors)} targets hit an internal error (see above)", 1)


def _asn(value: str | None) -> str | None:
    if value is None:
        return None
    digits = value.upper().removeprefix("AS")
    if not digits.isdigit():
        raise click.BadParameter(f"{value!r} is not an AS number", param_hint="--probe-asn")
    return f"AS{int(digits)}"


def _check_config(
    resolver: str | None,
    control_resolvers: tuple[str, ...],
    helpers: tuple[str, ...],
    helper_concurrency: int | None,
    ca_file: str | None,
    fingerprint_files: tuple[str, ...],
    timeouts: dict[str, float],
) -> dict[str, Any]:
    from . import control, dns, netio
    from .fingerprints import Fingerprints
    from .measure import Settings, Timeouts

    system = dns.parse_resolver(resolver, engine="system") if resolver else dns.system_resolver()
    controls = [
        dns.parse_resolver(url) for url in (control_resolvers or control.DEFAULT_CONTROL_RESOLVERS)
    ]
    helper_urls = list(helpers or control.DEFAULT_HELPERS)
    for url in helper_urls:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"--helper {url!r}: must be an http:// or https:// URL")
    if helper_concurrency is None:
        helper_concurrency = (
            control.OWN_HELPER_CONCURRENCY if helpers else control.DEFAULT_HELPER_CONCURRENCY
        )
    settings = Settings(
        system_resolver=system,
        control_resolvers=controls,
        ssl_context=netio.client_context(ca_file),
        timeouts=Timeouts(**{k.removesuffix("_timeout"): v for k, v in timeouts.items()}),
    )
    return {
        "settings": settings,
        "helpers": helper_urls,
        "helper_concurrency": helper_concurrency,
        "ca_file": ca_file,
        "fingerprints": Fingerprints.load(extra_files=fingerprint_files),
    }


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


async def _check(
    target_list: list[Any],
    config: dict[str, Any],
    *,
    db: Path,
    inputs: list[str],
    concurrency: int,
    rate: float | None,
    probe_asn: str | None,
    probe_cc: str | None,
    as_json: bool,
) -> tuple[Any, Any, float]:
    import httpx

    from . import runner
    from .control import HelperClient
    from .measure import Measurer
    from .store import Store, open_db

    settings = config["settings"]
    started = time.monotonic()
    store = Store(open_db(db))
    run_id = store.start_run(
        inputs=inputs,
        settings={
            "resolver": settings.system_resolver.url,
            "control_resolvers": [r.url for r in settings.control_resolvers],
            "helpers": config["helpers"],
            "timeouts": vars(settings.timeouts),
            "concurrency": concurrency,
            "rate": rate,
        },
        targets=len(target_list),
        probe_asn=probe_asn,
        probe_cc=probe_cc,
    )
    limits = httpx.Limits(max_connections=max(concurrency, 8), max_keepalive_connections=8)
    verify = settings.ssl_context
    progress = _Progress(len(target_list))
    status = "interrupted"
    summary = None
    try:
        async with (
            httpx.AsyncClient(verify=verify, limits=limits, timeout=settings.timeouts.dns) as doh,
            httpx.AsyncClient(
                verify=verify, limits=limits, timeout=settings.timeouts.control
            ) as helper_http,
        ):
            helper_client = HelperClient(
                config["helpers"],
                helper_http,
                concurrency=config["helper_concurrency"],
                timeout=settings.timeouts.control,
            )
            measurer = Measurer(
                settings,
                doh_client=doh,
                helpers=helper_client,
                throttle=_throttler(rate) if rate else None,
            )
            summary = await runner.run(
                target_list,
                measurer,
                store,
                run_id,
                concurrency=concurrency,
                fingerprints=config["fingerprints"],
                probe_asn=probe_asn,
                probe_cc=probe_cc,
                on_result=progress,
            )
        status = "complete"
    finally:
        progress.close()
        store.finish_run(
            run_id,
            status=status,
            counts=dict(summary.counts if summary else progress.counts),
            offline=bool(summary and summary.offline),
        )
    return summary, store, time.monotonic() - started


def _throttler(rate: float) -> Any:
    """``rate`` requests per second as asyncio-throttle's (whole requests, period) pair."""
    from asyncio_throttle import Throttler

    rate_limit = max(1, int(rate))
    return Throttler(rate_limit=rate_limit, period=rate_limit / rate)


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
    from . import dns
    from .helper import HelperConfig
    from .helper import serve as serve_helper

    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise click.BadParameter("expected HOST:PORT", param_hint="--listen")
    try:
        parsed = dns.parse_resolver(resolver) if resolver else None
    except ValueError as exc:
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
    except ValueError as exc:  # a bad --asn-db line (FILE:LINE: ...), no system resolver
        _fail(str(exc))
    except OSError as exc:  # e.g. the address is in use
        _fail(f"cannot serve on {listen}: {exc.strerror or exc}", 1)


def main() -> None:
    cli()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
