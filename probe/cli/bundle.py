"""Evidence bundles: ``probe bundle`` and ``probe verify-bundle``."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import click

from ..errors import InputError
from ..model.text import printable
from ..report.escape import json_text
from ._group import BadInput, cli, db_option, existing_db, fingerprints_option, message
from .research import _filter_options, _filters, _open


def _generated_at() -> str:
    """Now, or ``$SOURCE_DATE_EPOCH`` (the reproducible-builds convention) when set, so the
    same database can give the same bundle bytes again."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        try:
            when = datetime.datetime.fromtimestamp(int(epoch), datetime.UTC)
        except (ValueError, OverflowError, OSError):
            raise BadInput(f"$SOURCE_DATE_EPOCH {epoch!r}: expected seconds since 1970") from None
    else:
        when = datetime.datetime.now(datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


@cli.command()
@db_option("The SQLite database to read")
@_filter_options
@fingerprints_option()
@click.option(
    "--include-imported",
    is_flag=True,
    help="Also bundle measurements imported from OONI (left out by default: they are OONI's).",
)
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The zip to write (FILE.zip).",
)
def bundle(
    db: Path | None,
    domains: tuple[str, ...],
    asns: tuple[str, ...],
    since: str | None,
    until: str | None,
    fingerprint_files: tuple[str, ...],
    include_imported: bool,
    output: Path,
) -> None:
    """Write an evidence bundle: a zip anyone can check again (probe verify-bundle).

    It holds the measurements a report over these filters rests on: as OONI JSON Lines
    (measurements.ooni.jsonl), our own records of the observations and verdicts
    (records.jsonl), every stored page body as served (bodies/), the fingerprints in force
    (fingerprints/; add yours with --fingerprints), the report in HTML and JSON (report/),
    and MANIFEST.json with every file's SHA-256 and size, the probe version and the
    filters. The same database gives the same zip again when $SOURCE_DATE_EPOCH fixes the
    report's date. Pruned measurements (observations dropped) cannot be bundled; the
    manifest counts them in report_measurements only.

    Example:

        probe bundle --since 2026-10-01 --domain www.azattyk.org -o azattyk.zip
    """
    from ..app.bundle import write_bundle

    filters = _filters(domains, asns, since, until)
    database = _open(existing_db(db), readonly=True)
    shown = {"domain": list(domains), "asn": list(filters.asns), "since": since, "until": until}
    tmp = output.with_name(f".{output.name}.tmp")
    try:
        with open(tmp, "wb") as out:
            written = write_bundle(
                database,
                out,
                filters,
                generated_at=_generated_at(),
                shown_filters={k: v for k, v in shown.items() if v},
                fingerprint_files_given=fingerprint_files,
                vantage_name=(click.get_current_context().obj or {}).get("vantage"),
                include_imported=include_imported,
            )
        os.replace(tmp, output)
    except InputError as exc:
        tmp.unlink(missing_ok=True)
        raise BadInput(str(exc)) from None
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise BadInput(f"{output}: cannot write: {exc.strerror or exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    click.echo(
        f"Bundle written to {output}: {written.measurements} measurements, "
        f"{written.bodies} bodies, {written.files} files.",
        err=True,
    )
    if written.report_measurements != written.measurements:
        click.echo(
            f"The report counts {written.report_measurements} measurements; those not bundled "
            "were pruned or imported from OONI (--include-imported).",
            err=True,
        )


@cli.command("verify-bundle")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def verify_bundle(path: Path) -> None:
    """Check an evidence bundle written by `probe bundle`, and its verdicts.

    Every file is checked against MANIFEST.json (a changed, missing or added file is named),
    then today's analysis, with the bundled fingerprints, runs over the bundled observations
    and is compared with the bundled verdicts (each difference: measurement, field, before,
    after).

    Nothing is extracted to disk. Exit status 0 when everything matches; 1 when a file or a
    verdict differs; 2 when the file is no bundle (or a hostile zip: unsafe names, a bomb).

    Example:

        probe verify-bundle azattyk.zip
    """
    from ..app.bundle import verify_bundle as verify

    try:
        result = verify(path)
    except InputError as exc:
        raise BadInput(str(exc)) from None
    ctx = click.get_current_context()
    if result.problems:
        for problem in result.problems:
            click.echo(printable(problem))
        click.echo(
            f"{len(result.problems)} files do not match the manifest; verdicts not checked.",
            err=True,
        )
        ctx.exit(1)
    files = len(result.manifest.get("files", {})) + 1
    click.echo(f"files match the manifest ({files} files)")
    for d in result.differences:
        click.echo(
            f"{printable(d.measurement_id)}: {d.field}: "
            f"{json_text(d.before)} -> {json_text(d.after)}"
        )
    if result.differences:
        changed = len({d.measurement_id for d in result.differences})
        click.echo(
            message(
                f"{len(result.differences)} differences in {changed} of "
                f"{result.measurements} measurements."
            ),
            err=True,
        )
        ctx.exit(1)
    click.echo(f"verdicts identical ({result.measurements} measurements)")
