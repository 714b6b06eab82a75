"""The volunteer's own commands: consent and configuration."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import InputError
from ._group import BadInput, cli, db_path


@cli.command()
@click.option("--yes", is_flag=True, help="Record consent without asking (scripts, Docker, CI).")
@click.option("--vantage", metavar="NAME", help="A name for this vantage point (not an address).")
@click.option(
    "--targets",
    "target_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Target lists to measure when `probe check` is given none (repeatable).",
)
@click.option(
    "--db",
    envvar="PROBE_DB",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where results go [default: ~/.local/share/probe/probe.db].",
)
@click.option("--probe-asn", metavar="ASN", help="The network's AS number, if you know it.")
@click.option("--probe-cc", metavar="CC", help="The network's country code, e.g. KG.")
@click.pass_context
def init(
    ctx: click.Context,
    yes: bool,
    vantage: str | None,
    target_files: tuple[Path, ...],
    db: Path | None,
    probe_asn: str | None,
    probe_cc: str | None,
) -> None:
    """Say what measuring exposes you to, ask consent, write the configuration.

    Writes $PROBE_CONFIG (default ~/.config/probe/config.toml) with your consent, a vantage
    name, target lists, an absolute database path, and what you give here; edit it later, or
    run init again (what you do not give again is kept). With --yes nothing is asked.

    Example:

        probe init --yes --vantage bishkek-1 --targets targets/kg.txt --probe-cc KG
    """
    from ..config import config_path, consent_text, parse_asn, parse_cc, write_config
    from ..model.records import utc_now

    values = dict(ctx.obj or {})
    path = db_path(db or (Path(values["db"]) if values.get("db") else None)).resolve()
    try:
        if probe_asn is not None:
            values["probe_asn"] = parse_asn(probe_asn)
        if probe_cc is not None:
            values["probe_cc"] = parse_cc(probe_cc)
    except InputError as exc:
        raise BadInput(str(exc)) from None
    if not yes:
        click.echo(consent_text(path))
        if not click.confirm("Do you understand this and want to measure?", default=False):
            raise BadInput("nothing written: consent was not given")
        vantage = vantage or click.prompt(
            "A name for this vantage point (not your address)",
            default=values.get("vantage") or "my-probe",
        )
    values["consent"] = utc_now()
    values["vantage"] = vantage or values.get("vantage") or "my-probe"
    values["db"] = str(path)
    if target_files:
        values["targets"] = [str(p.resolve()) for p in target_files]
    written = write_config(values, config_path())
    click.echo(f"Configuration written to {written}; results will go to {path}.")
