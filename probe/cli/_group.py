"""The ``probe`` click group, and what every command shares: errors and the database path."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .. import __version__
from ..errors import InputError
from ..model.text import printable

F = TypeVar("F", bound=Callable[..., Any])


class BadInput(click.ClickException):
    """Bad input from a file or an option: one line, exit status 2. The line may quote the
    file (a target list, an OONI file, a database), so it is shown escaped."""

    exit_code = 2

    def format_message(self) -> str:
        return message(self.message)


def message(text: str) -> str:
    """A line for the terminal that may quote a file, a network or a collector: escaped with
    :func:`~probe.model.text.printable` when it holds anything a terminal would act on. Our
    messages quote values with ``repr()``, which leaves nothing to act on: those are shown as
    they are (printable() would double their backslashes)."""
    plain = text.replace("\\", "")
    return text if printable(plain) == plain else printable(text)


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
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Measure website blocking: DNS, TCP/IP, TLS/SNI and HTTP, against a control.

    Run by volunteers inside a censored network; results go to SQLite for researchers.
    Settings come from flags, then the configuration file written by `probe init`
    ($PROBE_CONFIG, or ~/.config/probe/config.toml), then built-in defaults.
    """
    from ..app.config import click_defaults, load_config

    try:
        ctx.obj = load_config(config_keys())
    except InputError as exc:
        raise BadInput(str(exc)) from None
    ctx.default_map = click_defaults(ctx.obj)


def config_keys() -> dict[str, type | tuple[type, ...]]:
    """The keys config.toml may hold: its own, and every option of ``probe check`` by its name
    (so a new option is a key at once), with the type of value each takes."""
    from ..app.config import FILE_KEYS, OPTION_KEYS

    keys = dict(FILE_KEYS)
    for param in cli.commands["check"].params:
        if not isinstance(param, click.Option) or param.name is None:
            continue
        if param.name.endswith("_timeout"):  # the [timeouts] table
            continue
        key = OPTION_KEYS.get(param.name, param.name)
        if param.multiple:
            keys[key] = list
        elif param.is_flag or isinstance(param.type, click.types.BoolParamType):
            keys[key] = bool
        elif isinstance(param.type, click.types.IntParamType):
            keys[key] = int
        elif isinstance(param.type, click.types.FloatParamType):
            keys[key] = (int, float)
        else:
            keys[key] = str
    return keys


def db_option(what: str = "The SQLite database") -> Callable[[F], F]:
    """``--db`` (or $PROBE_DB), as every command that reads or writes results takes it."""
    return click.option(
        "--db",
        envvar="PROBE_DB",
        type=click.Path(dir_okay=False, path_type=Path),
        help=f"{what} (also $PROBE_DB) [default: the configured one, else "
        "~/.local/share/probe/probe.db].",
    )


def fingerprints_option() -> Callable[[F], F]:
    """``--fingerprints FILE`` (repeatable): extra block-page fingerprints for the analysis."""
    return click.option(
        "--fingerprints",
        "fingerprint_files",
        multiple=True,
        type=click.Path(exists=True, dir_okay=False),
        help="Extra blockpage fingerprints (JSON, probe's format), repeatable.",
    )


def db_path(db: Path | None) -> Path:
    """The database: ``--db`` (or $PROBE_DB), else the configuration's, else the default."""
    from ..app.config import default_db

    if db is not None:
        return db
    configured = (click.get_current_context().obj or {}).get("db")
    return Path(configured) if configured else default_db()


def existing_db(db: Path | None) -> Path:
    path = db_path(db)
    if not path.is_file():
        raise BadInput(f"{path}: no such database (run `probe check` first, or give --db)")
    return path
