"""The command line: help for every command, version, usage errors (no network needed)."""

import click
import pytest
from click.testing import CliRunner

from probe import __version__
from probe.cli import cli


def commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from commands(command, (*prefix, name))


@pytest.mark.parametrize("path, command", list(commands(cli)), ids=lambda x: str(x))
def test_every_command_has_help(path, command):
    assert command.help and len(command.help) > 40
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0
    assert command.help.split("\n")[0] in result.output


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_check_needs_targets():
    result = CliRunner().invoke(cli, ["check"])
    assert result.exit_code == 2
    assert "at least one target" in result.output


def test_check_rejects_a_bad_resolver(tmp_path):
    result = CliRunner().invoke(
        cli, ["check", "--input", "24.kg", "--resolver", "ftp://x", "--db", str(tmp_path / "d")]
    )
    assert result.exit_code == 2
    assert "udp://, tcp://, tls:// or https://" in result.output
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    "option, value, message",
    [("--probe-asn", "ElCat", "not an AS number"), ("--probe-cc", "KGZ", "two-letter")],
)
def test_check_rejects_a_bad_network_identity(tmp_path, option, value, message):
    db = tmp_path / "d.db"
    result = CliRunner().invoke(cli, ["check", "--input", "24.kg", option, value, "--db", str(db)])
    assert result.exit_code == 2
    assert message in result.output
    assert not db.exists()


def test_helper_serve_bad_asn_db_names_file_and_line(tmp_path):
    bad = tmp_path / "asn.tsv"
    bad.write_text("192.88.99.0\t192.88.99.9\t64500\tKG\tok\nnot a line\n")
    result = CliRunner().invoke(
        cli, ["helper", "serve", "--listen", "127.0.0.1:0", "--asn-db", str(bad)]
    )
    assert result.exit_code == 2
    assert f"{bad}:2:" in result.output


@pytest.mark.parametrize("rate, pair", [(0.5, (1, 2.0)), (10, (10, 1.0)), (2.5, (2, 0.8))])
def test_rate_becomes_whole_requests_per_period(rate, pair):
    from probe.measure.politeness import RateLimit

    limit = RateLimit(rate)
    assert (limit.throttler.rate_limit, limit.throttler.period) == pair


def test_export_and_import_take_no_format_they_would_ignore():
    # Both speak OONI's format only: a --format with one choice was taken and never read.
    for command in ("export", "import"):
        result = CliRunner().invoke(cli, [command, "--help"])
        assert result.exit_code == 0 and "--format" not in result.output, command
