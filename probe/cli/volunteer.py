"""The volunteer's own commands: consent and configuration, past runs and results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..errors import InputError
from ..model.text import printable
from ..report.escape import json_text
from ._group import BadInput, cli, db_option, db_path, existing_db


def _p(value: Any) -> str:
    """A stored value as shown on the terminal: a database's text came from the network (or
    from another volunteer's database, merged), so it is escaped; None is shown empty."""
    return "" if value is None else printable(str(value))


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
@db_option("Where results go")
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
    from ..app.config import config_path, consent_text, parse_asn, parse_cc, write_config
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


def _open(db: Path | None, *, readonly: bool = False) -> Any:
    from ..errors import StoreError
    from ..store import open_db

    try:
        return open_db(existing_db(db), readonly=readonly)
    except StoreError as exc:
        raise BadInput(str(exc)) from None


@cli.command()
@db_option()
@click.option("--since", metavar="TIME", help="Only runs started from TIME (UTC, YYYY-MM-DD).")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per run.")
def runs(db: Path | None, since: str | None, limit: int, as_json: bool) -> None:
    """List past runs, newest first: status, network, targets and verdicts.

    A run's status is running, complete, partial (stopped at --max-runtime), interrupted
    (stopped by a signal, a full disk, or a process that died) or offline.
    """
    from ..model.times import parse_time
    from ..store import results

    database = _open(db, readonly=True)
    try:
        since = parse_time(since) if since else None
    except InputError as exc:
        raise BadInput(str(exc)) from None
    rows = list(results.runs(database, since=since, limit=limit))
    if as_json:
        for row in rows:
            click.echo(json_text(row))
        return
    click.echo(f"{'RUN':<8}  {'STARTED (UTC)':<19}  {'STATUS':<11}  {'NETWORK':<12}  "
               f"{'MEASURED':>8}  VERDICTS")  # fmt: skip
    for row in rows:
        network = " ".join(filter(None, (row["probe_asn"], row["probe_cc"]))) or "?"
        counts = ", ".join(f"{n} {v}" for v, n in sorted(row["counts"].items()))
        measured = f"{row['measured']}/{row['targets']}"
        click.echo(f"{_p(row['id'][:8])}  {_p(row['started_at']):<19}  {_p(row['status']):<11}  "
                   f"{_p(network):<12}  {measured:>8}  {_p(counts)}")  # fmt: skip


@cli.command()
@click.argument("ident", metavar="ID")
@db_option()
@click.option("--json", "as_json", is_flag=True, help="The whole record as one JSON object.")
@click.option(
    "--body",
    "body",
    is_flag=True,
    help="Write the page stored of one HTTP hop of a measurement, as it came.",
)
@click.option(
    "--hop",
    type=click.IntRange(min=0),
    metavar="N",
    help="With --body: hop N (0 is the first request) [default: the last hop whose "
    "page is stored].",
)
@click.option(
    "--text",
    "as_text",
    is_flag=True,
    help="With --body: the page as text in its charset (escaped on a terminal).",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE", help="With --body: write it to FILE.")  # fmt: skip
def show(
    ident: str,
    db: Path | None,
    as_json: bool,
    body: bool,
    hop: int | None,
    as_text: bool,
    output: Path | None,
) -> None:
    """Show a run, or one measurement with all its evidence.

    ID is a run or measurement id, or its first characters (at least 6). A measurement shows
    the verdict and why, the DNS answers of every resolver, connects, handshakes, HTTP hops
    and what the test helper saw.

    With --body, the page one HTTP hop received is written instead, byte for byte as stored
    (the content coding, such as gzip, removed; the first 64 KiB): to a pipe or -o FILE as
    it is; to a terminal only when it holds nothing a terminal would act on, else use -o
    FILE, or --text (the page decoded with its charset, escaped on a terminal, UTF-8
    elsewhere). An HTTPS page of a measurement found accessible is not stored.

    Example:

        probe show 3f2a9c --body --hop 0 -o page.html
    """
    from ..store import results

    if not body and (hop is not None or as_text or output is not None):
        raise BadInput("--hop, --text and -o go with --body")
    if body and as_json:
        raise BadInput("--body writes a page, --json the record: give one of them")
    database = _open(db, readonly=True)
    try:
        kind, full = results.find(database, ident)
    except InputError as exc:
        raise BadInput(str(exc)) from None
    if body:
        if kind == "run":
            raise BadInput(f"{ident!r} is a run: --body needs a measurement id")
        _write_body(database, full, hop, as_text=as_text, output=output)
    elif kind == "run":
        detail = results.run_detail(database, full)
        if as_json:
            click.echo(json_text(detail))
            return
        _show_run(detail)
    else:
        detail = results.measurement_detail(database, full)
        if as_json:
            click.echo(json_text(detail))
            return
        _show_measurement(detail)


def _write_body(
    database: Any, measurement_id: str, hop: int | None, *, as_text: bool, output: Path | None
) -> None:
    """``probe show --body``: the stored page of one hop, where it was asked for."""
    import sys

    from ..model.charset import charset_of, decode_text
    from ..store.schema import stored_bytes, stored_content_type

    verdict, pruned = database.execute(
        "select verdict, pruned from measurements where id = ?", [measurement_id]
    ).fetchone()
    if pruned:
        raise BadInput("this measurement's observations were pruned: no page is kept")
    hops = [
        dict(zip(("hop", "url", "failure", "body_length", "body_truncated", "headers"), row[:6],
                 strict=True))
        | {"data": stored_bytes(row[6], row[7])}
        for row in database.execute(
            "select hop, url, failure, body_length, body_truncated, headers, body, "
            "body_encoding from http_requests where measurement_id = ? order by hop",
            [measurement_id],
        )
    ]  # fmt: skip
    if not hops:
        raise BadInput("this measurement made no HTTP request (it stopped before HTTP)")
    if hop is None:
        chosen = next((h for h in reversed(hops) if h["data"] is not None), hops[-1])
    else:
        found = [h for h in hops if h["hop"] == hop]
        if not found:
            raise BadInput(f"no hop {hop}: this measurement's hops are 0 to {hops[-1]['hop']}")
        chosen = found[0]
    data = chosen["data"]
    where = f"hop {chosen['hop']} ({chosen['url']})"
    if data is None:
        if chosen["failure"] and chosen["body_length"] is None:
            why = f"it failed ({chosen['failure']}) before a page came"
        elif (chosen["url"] or "").lower().startswith("https://") and verdict == "accessible":
            why = "an HTTPS page of a measurement found accessible is not kept"
        else:
            why = "no page was received" if chosen["body_length"] is None else "none is kept"
        raise BadInput(printable(f"{where}: no page stored: {why}"))
    if chosen["body_truncated"] or (chosen["body_length"] or 0) > len(data):
        click.echo(f"Only the first {len(data)} bytes of this page are stored.", err=True)
    text = None
    if as_text:
        text = decode_text(data, charset_of(stored_content_type(chosen["headers"]), data))
    if output is not None:
        try:
            output.write_bytes(data if text is None else text.encode("utf-8"))
        except OSError as exc:
            raise BadInput(f"{output}: cannot write: {exc.strerror}") from None
        click.echo(f"Wrote {printable(where)} to {output}.", err=True)
        return
    if sys.stdout.isatty():
        if text is not None:
            click.echo(printable(text, newlines=True))
            return
        if not _terminal_safe(data):
            raise BadInput(
                "this page holds bytes a terminal would act on or cannot show (escape "
                "sequences, controls, binary, or text not in UTF-8): write it to a file "
                "with -o FILE, or show it escaped with --text"
            )
    sys.stdout.flush()
    sys.stdout.buffer.write(data if text is None else text.encode("utf-8"))
    sys.stdout.buffer.flush()


def _terminal_safe(data: bytes) -> bool:
    """Whether ``data`` can go to a terminal as it is: UTF-8 text with nothing
    :func:`~probe.model.text.printable` would escape but line breaks, tabs and backslashes
    (which are only doubled there, never acted on)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    text = text.replace("\r\n", "\n").replace("\\", "")
    return printable(text, newlines=True) == text


def _show_run(run: dict[str, Any]) -> None:
    network = " ".join(filter(None, (run["probe_asn"], run["probe_cc"]))) or "unknown"
    click.echo(f"Run {_p(run['id'])}  {_p(run['status'])}  network {_p(network)}")
    click.echo(f"  {_p(run['started_at'])} - {_p(run['finished_at'] or '...')} UTC, "
               f"{run['measured']}/{run['targets']} measured")  # fmt: skip
    click.echo(f"  inputs: {', '.join(_p(i) for i in run['inputs'])}")
    for m in run["measurements"]:
        evidence = m["blockpage"] or m["failure"] or ""
        click.echo(f"  {_p(m['id'][:8])}  {_p(m['verdict']):<12} {_p(m['blocking'] or '-'):<12} "
                   f"{_p(m['input'])}  {_p(evidence)}")  # fmt: skip


def _show_measurement(m: dict[str, Any]) -> None:
    # Every value here is stored network text (titles, failures, names, the helper's answer),
    # or a merged database's: each is escaped (_p) where it is put in a line.
    steps = m["steps"]
    click.echo(f"{_p(m['input'])}  ({_p(m['url'])})")
    click.echo(f"  {_p(m['start_time'])} UTC, network {_p(m['probe_asn'] or '?')} "
               f"{_p(m['probe_cc'])}")  # fmt: skip
    click.echo(f"  verdict: {_p(m['verdict'])}"
               + (f", blocked by {_p(m['blocking'])}" if m["blocking"] else "")
               + (f", block page {_p(m['blockpage'])}" if m["blockpage"] else ""))  # fmt: skip
    click.echo(f"  why: {_p(m['reason'])}")
    if m.get("pruned"):
        click.echo("  (its observations were pruned)")
        return
    click.echo("DNS")
    for q in steps["dns_queries"]:
        answer = ", ".join(q["addresses"]) or q["failure"] or "-"
        click.echo(f"  {_p(q['engine']):<7} {_p(q['resolver']):<38} {_p(q['query_type']):<4} "
                   f"{_p(q['hostname'])}: {_p(answer)}")  # fmt: skip
    click.echo("TCP")
    for c in steps["tcp_connects"]:
        click.echo(f"  {_p(c['ip'])}:{_p(c['port'])}  {_p(c['failure'] or 'connected')}")
    click.echo("TLS")
    for t in steps["tls_handshakes"]:
        click.echo(f"  {_p(t['ip'])}:{_p(t['port'])} SNI {_p(t['server_name'])} "
                   f"({_p(t['purpose'])})  {_p(t['failure'] or t['tls_version'])}")  # fmt: skip
    click.echo("HTTP")
    for h in steps["http_requests"]:
        result = h["failure"] or f"{h['status_code']} {h['title'] or ''} ({h['body_length']} B)"
        click.echo(f"  {_p(h['hop'])}: {_p(h['url'])}  {_p(result)}")
    click.echo("Control")
    for c in steps["controls"]:
        response = c["response"] or {}
        http = response.get("http_request") or {}
        dns = response.get("dns") or {}
        addresses = ", ".join(dns.get("addrs") or []) or dns.get("failure")
        click.echo(f"  helper {_p(c['helper'])}: {_p(c['failure'] or 'answered')}")
        if response:
            click.echo(f"  DNS {_p(addresses)}; "
                       f"HTTP {_p(http.get('failure') or http.get('status_code'))} "
                       f"{_p(http.get('title'))}")  # fmt: skip


@cli.command()
@db_option()
@click.option("--json", "as_json", is_flag=True, help="As one JSON object.")
def status(db: Path | None, as_json: bool) -> None:
    """The last run and its state, whether one runs now, and the database's size."""
    from ..store import results
    from ..store.locks import is_locked, lock_path

    path = existing_db(db)
    database = _open(path, readonly=True)
    state = results.status(database, path)
    holder = is_locked(lock_path(path, "run"))
    state["running_since"] = holder.get("since", "?") if holder is not None else None
    from ..app.upload import pending, refused

    settings = click.get_current_context().obj or {}
    collector = settings.get("collector")
    state["upload_pending"] = pending(database, collector)
    state["upload_refused"], refusal = refused(database, collector)
    state["collector_configured"] = bool(collector)
    if as_json:
        click.echo(json_text(state))
        return
    last = state["last_run"]
    if last:
        counts = ", ".join(f"{n} {v}" for v, n in sorted(last["counts"].items()))
        click.echo(f"Last run: {_p(last['id'][:8])} started {_p(last['started_at'])} UTC, "
                   f"{_p(last['status'])}, {last['measured']}/{last['targets']} measured"
                   + (f": {_p(counts)}" if counts else ""))  # fmt: skip
    else:
        click.echo("No run yet.")
    if state["running_since"]:
        click.echo(f"A run is in progress since {_p(state['running_since'])} UTC.")
    if state["collector_configured"]:
        click.echo(f"{state['upload_pending']} measurements wait for upload.")
    else:
        click.echo("Uploading is off (no collector configured): nothing is sent.")
    if state["upload_refused"]:
        click.echo(f"{state['upload_refused']} measurements were refused by the collector "
                   f"(last reason: {_p(refusal or '-')}); `probe upload --retry-refused` "
                   "sends them again.")  # fmt: skip
    click.echo(f"Database {path}: {state['measurements']} measurements, "
               f"{state['bytes'] / 1e6:.1f} MB.")  # fmt: skip


@cli.command()
@click.option("--older-than", required=True, metavar="AGE", help="e.g. 90d, 12h, 2w.")
@click.option("--all", "everything", is_flag=True, help="Drop the verdicts too.")
@db_option()
def prune(older_than: str, everything: bool, db: Path | None) -> None:
    """Drop the raw observations of old measurements, keeping their verdicts.

    Their DNS answers, connections, handshakes, pages and control answers are deleted (they
    can no longer be re-analysed); with --all the measurements go too. The file is compacted
    afterwards.

    Example:

        probe prune --older-than 90d
    """
    from ..errors import StoreError
    from ..store import results
    from ..store.locks import Busy, file_lock, lock_path

    path = existing_db(db)
    try:
        age = results.parse_age(older_than)
    except InputError as exc:
        raise BadInput(str(exc)) from None
    try:
        with file_lock(lock_path(path, "run")):  # not while a run writes
            count = results.prune(_open(path), age, everything=everything)
    except Busy:
        raise BadInput(f"a run is in progress on {path}; prune later") from None
    except StoreError as exc:  # the lock file cannot be created, or is not ours
        raise BadInput(str(exc)) from None
    what = "measurements deleted" if everything else "measurements pruned of observations"
    click.echo(f"{count} {what}.")


@cli.command()
@click.option("--every", default="1h", show_default=True, help="How often: 30m, 1h, 6h, 1d...")
@click.option("--systemd", "as_systemd", is_flag=True, help="A systemd service and timer.")
@click.option("--install", is_flag=True, help="Install it for the current user.")
def schedule(every: str, as_systemd: bool, install: bool) -> None:
    """Print a crontab line (or systemd units) that runs `probe check` unattended.

    The schedule uses the current configuration (probe init) and a random minute, so that
    volunteers on the same schedule do not all start at once. --install puts it in your
    crontab (replacing an earlier one) or in ~/.config/systemd/user and enables the timer.

    Example:

        probe schedule --every 6h --install
    """
    import os
    import random

    from ..app import schedule as plan
    from ..app.config import config_path

    config = config_path() if os.environ.get("PROBE_CONFIG") else None
    settings = click.get_current_context().obj or {}
    if not settings.get("consent") or not settings.get("targets"):
        raise BadInput(
            "a scheduled run needs consent and target lists in the configuration: run "
            "`probe init --targets FILE` first"
        )
    probe = plan.probe_executable()
    try:
        if as_systemd:
            units = plan.systemd_units(every, probe, config)
            if install:
                directory = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
                todo = plan.install_systemd(units, directory / "systemd" / "user")
                click.echo(f"Installed in {directory / 'systemd' / 'user'}.")
                for step in todo:
                    click.echo(f"Now run: {step}")
                return
            for name, text in units.items():
                click.echo(f"# ~/.config/systemd/user/{name}\n{text}")
            return
        line = plan.cron_line(every, probe, config, random.Random())
        if install:
            plan.install_cron(line)
            click.echo(f"Installed in your crontab: {line}")
            return
        click.echo(line)
    except InputError as exc:
        raise BadInput(str(exc)) from None
