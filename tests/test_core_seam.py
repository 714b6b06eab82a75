"""The test-only bogon exemption (``Settings.bogons_exempt``, ``HelperConfig.bogons_exempt``)
is out of reach of everything a user or a stranger controls: no CLI option, no config.toml
key, no helper request sets it, and it is empty unless a test's Python sets it. (That the
helper protocol cannot: tests/test_core_servers.py; that loopback stays refused without it:
tests/test_core_measure.py.)"""

from __future__ import annotations

import dataclasses

import click
import pytest
from click.testing import CliRunner

from probe.app.config import check_config, load_config
from probe.cli import cli
from probe.cli._group import config_keys
from probe.errors import ConfigError
from probe.helper import HelperConfig
from probe.measure.settings import Settings


def commands(group: click.Group, path=()):
    for name, command in group.commands.items():
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))


def test_no_cli_option_names_it():
    found = list(commands(cli))
    assert (("check",) in [p for p, _ in found]) and (("helper", "serve") in [p for p, _ in found])
    for path, command in found:
        for param in command.params:
            words = [param.name or "", *getattr(param, "opts", [])]
            assert not any("bogon" in w or "exempt" in w for w in words), (path, param.name)


@pytest.mark.parametrize("argv", [
    ["check", "--bogons-exempt", "127.0.0.0/8", "--input", "http://example.test/"],
    ["helper", "serve", "--bogons-exempt", "127.0.0.0/8", "--listen", "127.0.0.1:0"],
])  # fmt: skip
def test_the_cli_refuses_it(argv):
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2 and "No such option" in result.output


def test_config_toml_refuses_it(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('bogons_exempt = ["127.0.0.0/8"]\n')
    with pytest.raises(ConfigError, match="unknown key 'bogons_exempt'"):
        load_config(config_keys(), path)


def test_it_is_empty_unless_set_from_python(tmp_path):
    config = check_config(resolver="udp://192.0.2.53:53", helpers=["https://th.example/"])
    assert config.settings.bogons_exempt == ()
    assert "bogons_exempt" not in str(config.describe())
    assert HelperConfig(host="127.0.0.1", port=0).bogons_exempt == ()
    defaults = {f.name: f.default for f in dataclasses.fields(Settings)}
    assert defaults["bogons_exempt"] == ()
