"""``probe collector`` (serve, volunteers' tokens) and ``probe upload``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from ..errors import CollectorDatabaseError, InputError, StoreError, UploadError
from ._group import BadInput, cli, db_option, existing_db, message

_DATABASE_HELP = (
    "The collector's PostgreSQL, e.g. postgresql://probe@localhost/probe (also "
    "$PROBE_COLLECTOR_DATABASE, which keeps a password off the command line)."
)


def _database_option(f: Any) -> Any:
    return click.option(
        "--database",
        envvar="PROBE_COLLECTOR_DATABASE",
        required=True,
        metavar="URL",
        help=_DATABASE_HELP,
    )(f)


def _extra() -> None:
    """Refuse clearly when the collector extra is not installed."""
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        raise click.ClickException(
            "the collector needs its extra: pip install 'probe[collector]'"
        ) from None


@cli.group()
def collector() -> None:
    """The collector: many volunteers' measurements in one PostgreSQL.

    Run it with `probe collector serve`; give each volunteer a token with `probe collector
    add-volunteer NAME`. Needs the collector extra: pip install 'probe[collector]'.
    """


@collector.command()
@click.option("--listen", default="127.0.0.1:8000", show_default=True, metavar="HOST:PORT")
@_database_option
@click.option(
    "--public-reads",
    is_flag=True,
    help="Serve GET /timeline and /report without a token [default: a volunteer's token].",
)
@click.option(
    "--max-body",
    type=click.IntRange(min=1024),
    default=8 * 1024 * 1024,
    show_default=True,
    metavar="BYTES",
    help="Largest request body (as sent and decoded); larger ones get 413.",
)
@click.option(
    "--max-in-flight",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Requests handled at once; more get 503 with Retry-After.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1, max=64),
    default=1,
    show_default=True,
    help="Processes serving the port: analysing measurements takes a core each; leave "
    "PostgreSQL its cores (on 2 cores, 1 worker ingests fastest).",
)
@click.option(
    "--client-timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="A client that takes longer to send a request head, or stops sending its body for "
    "longer, gets 408 and is disconnected; an idle connection is closed after 3x this.",
)
@click.option(
    "--fingerprints",
    "fingerprint_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Extra blockpage fingerprints for the analysis on arrival (repeatable).",
)
def serve(
    listen: str,
    database: str,
    public_reads: bool,
    max_body: int,
    max_in_flight: int,
    workers: int,
    client_timeout: float,
    fingerprint_files: tuple[str, ...],
) -> None:
    """Collect volunteers' measurements into PostgreSQL.

    The collector speaks OONI's collector protocol (open a report, submit, close).

    The schema is created or migrated first. Every upload needs a volunteer's token (see
    add-volunteer); measurements are analysed again on arrival with this probe's analysis;
    a measurement sent twice is stored once. No client address is ever stored or logged.
    Put it behind a TLS proxy (nginx, Caddy) on a public address.

    Example:

        probe collector serve --listen 127.0.0.1:8000 --database postgresql:///probe
    """
    _extra()
    from ..collector.http import Limits
    from ..collector.server import CollectorConfig
    from ..collector.server import serve as serve_collector

    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise click.BadParameter("expected HOST:PORT", param_hint="--listen")
    config = CollectorConfig(
        host=host.strip("[]") or "0.0.0.0",
        port=int(port),
        dsn=database,
        limits=Limits(
            max_body=max_body,
            max_in_flight=max_in_flight,
            head_timeout=client_timeout,
            stall_timeout=client_timeout,
            idle_timeout=3 * client_timeout,
        ),
        public_reads=public_reads,
        fingerprint_files=fingerprint_files,
        workers=workers,
    )
    try:
        serve_collector(config)
    except CollectorDatabaseError as exc:
        raise click.ClickException(str(exc)) from None
    except InputError as exc:
        raise BadInput(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot serve on {listen}: {exc.strerror or exc}") from None


def _connect(database: str) -> Any:
    _extra()
    from ..collector import schema
    from ..collector.server import prepare

    try:
        prepare(database)
        return schema.connect(database)
    except CollectorDatabaseError as exc:
        raise click.ClickException(str(exc)) from None


@collector.command()
@_database_option
def migrate(database: str) -> None:
    """Create or migrate the collector's schema (serve does it too)."""
    _extra()
    from ..collector.server import prepare

    try:
        applied = prepare(database)
    except CollectorDatabaseError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"schema steps applied: {', '.join(applied)}" if applied else "schema up to date")


@collector.command("add-volunteer")
@click.argument("name")
@_database_option
def add_volunteer(name: str, database: str) -> None:
    """Let volunteer NAME upload: prints their token.

    The token is shown once (only its hash is kept). NAME is your label for them (e.g.
    bishkek-elcat-1), never an address. Give the token to the volunteer privately; they put
    it in their config.toml as collector_token.
    """
    from ..collector import tokens

    with _connect(database) as conn:
        try:
            token = tokens.add_volunteer(conn, name)
        except InputError as exc:
            raise BadInput(str(exc)) from None
    click.echo(token)


@collector.command()
@click.argument("name")
@_database_option
def revoke(name: str, database: str) -> None:
    """Revoke volunteer NAME's token at once.

    Their uploads are refused from the next request on, also in a report already open;
    their measurements already collected stay."""
    from ..collector import tokens

    with _connect(database) as conn:
        if not tokens.revoke(conn, name):
            raise BadInput(f"{name!r}: no such volunteer with a valid token")
    click.echo(f"{name}: token revoked")


@collector.command()
@_database_option
def volunteers(database: str) -> None:
    """List the volunteers: since when, revoked or not, measurements and networks.

    The networks are those each volunteer's uploads said they measured from (AS and
    country, as their probe said): a token claiming many is worth a question. A
    volunteer's token is one vantage in the timelines, whatever its uploads claim."""
    from ..collector import tokens

    with _connect(database) as conn:
        for v in tokens.volunteers(conn):
            state = f"revoked {v.revoked_at}" if v.revoked_at else "active"
            networks = ", ".join(
                f"{asn} {cc} ({n} report{'s' if n != 1 else ''})" for asn, cc, n in v.networks
            )
            click.echo(
                f"{v.name}  added {v.created_at}  {state}  {v.measurements} measurements"
                + (f"  networks: {networks}" if networks else "")
            )


# ------------------------------------------------------------------ the volunteer's side


@cli.command()
@db_option("The SQLite database to upload from")
@click.option(
    "--collector",
    "collector_",
    metavar="URL",
    help="The collector's URL [default: the configuration's collector].",
)
@click.option(
    "--token",
    envvar="PROBE_COLLECTOR_TOKEN",
    help="Your token from the collector's operator (also $PROBE_COLLECTOR_TOKEN) "
    "[default: the configuration's collector_token].",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1, max=10_000),
    default=100,
    show_default=True,
    help="Measurements per report.",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0, max=20),
    default=5,
    show_default=True,
    help="Tries again after a failure (backoff doubling from --backoff).",
)
@click.option(
    "--backoff",
    type=click.FloatRange(min=0),
    default=2.0,
    show_default=True,
    metavar="SECONDS",
    help="Wait before the first retry.",
)
@click.option(
    "--retry-refused",
    is_flag=True,
    help="Send again at once the measurements the collector refused (each goes again by "
    "itself a day after its refusal).",
)
def upload(
    db: Path | None,
    collector_: str | None,
    token: str | None,
    batch_size: int,
    retries: int,
    backoff: float,
    retry_refused: bool,
) -> None:
    """Send the measurements not yet accepted to a collector.

    Only this probe's own measurements go (not merged or imported ones), as OONI
    measurements without your address. They stay in your database; each is recorded once
    accepted, so nothing is sent twice, and what could not be sent (offline, collector away)
    goes with the next upload. With `upload = true` in the configuration, `probe check`
    uploads at the end of each run.

    Example:

        probe upload --collector https://collector.example.org
    """
    settings = click.get_current_context().obj or {}
    path = existing_db(db)
    uploaded = run_upload(path, settings, collector_, token, batch_size, retries, backoff,
                          retry_refused)  # fmt: skip
    if uploaded is None:
        return
    click.echo(summary_line(uploaded))
    for measurement_id, reason in uploaded.refused[:20]:  # the collector's words: escaped
        click.echo(f"refused {measurement_id}: {message(reason)}", err=True)


def summary_line(uploaded: Any) -> str:
    refused = f", {len(uploaded.refused)} refused (sent again in a day)" if uploaded.refused else ""
    present = f", {uploaded.present} already there" if uploaded.present else ""
    return (
        f"{uploaded.accepted} measurements uploaded{present}{refused}; "
        f"{uploaded.pending} wait for upload."
    )


def run_upload(
    path: Path,
    settings: dict[str, Any],
    collector_: str | None = None,
    token: str | None = None,
    batch_size: int = 100,
    retries: int = 5,
    backoff: float = 2.0,
    retry_refused: bool = False,
) -> Any:
    """Upload ``path``'s waiting measurements; the :class:`~probe.app.upload.Uploaded`, or None
    when another upload holds the database. Raises click exceptions for the user."""
    from ..app.upload import Busy, Client, cleartext_warning, collector_url
    from ..app.upload import upload as upload_all
    from ..store import open_db

    url = collector_ or settings.get("collector")
    token = token or settings.get("collector_token") or os.environ.get("PROBE_COLLECTOR_TOKEN")
    if not url:
        raise BadInput("no collector: give --collector URL or set collector in the configuration")
    if not token:
        raise BadInput(
            "no token: give --token (from the collector's operator) or set collector_token "
            "in the configuration"
        )
    try:
        client = Client(collector_url(url), token, retries=retries, backoff=backoff)
        database = open_db(path)
    except (InputError, StoreError) as exc:
        raise BadInput(str(exc)) from None
    warning = cleartext_warning(client.url)
    if warning:
        click.echo(message(warning), err=True)
    try:
        return upload_all(
            database,
            path,
            client,
            vantage_name=settings.get("vantage"),
            batch_size=batch_size,
            retry_refused=retry_refused,
        )
    except Busy:
        click.echo(f"An upload of {path} is already in progress; nothing done.", err=True)
        return None
    except UploadError as exc:
        from ..app.upload import pending

        waiting = pending(database, client.url)
        text = f"{exc}; {waiting} measurements wait for upload"  # it may quote the collector
        raise click.ClickException(message(text)) from None
    finally:
        client.close()
