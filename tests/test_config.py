"""Consent and configuration: `probe init`, config.toml, flags over file over defaults."""

from __future__ import annotations

import json
import math
import os
import select
import sqlite3
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from probe.cli import cli

ROOT = Path(__file__).resolve().parents[1]
# Addresses with no route inside `unshare -n`: every step fails at once, nothing leaves.
NOWHERE = [
    "--input", "http://192.88.99.1/", "--resolver", "udp://192.88.99.1",
    "--control-resolver", "udp://192.88.99.1", "--helper", "http://192.88.99.1/",
]  # fmt: skip


@pytest.fixture
def config(tmp_path, monkeypatch):
    path = tmp_path / "config" / "probe.toml"
    monkeypatch.setenv("PROBE_CONFIG", str(path))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("PROBE_DB", raising=False)
    return path


def run_offline(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`probe` in a network namespace of its own with no network at all."""
    return subprocess.run(
        ["unshare", "-n", sys.executable, "-m", "probe.cli", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=dict(os.environ, **(env or {})),
    )


def test_init_yes_records_consent_and_an_absolute_database(config, tmp_path):
    targets = tmp_path / "kg.txt"
    targets.write_text("24.kg\n")
    result = CliRunner().invoke(
        cli, ["init", "--yes", "--vantage", "bishkek-1", "--targets", str(targets),
              "--probe-cc", "kg"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    values = tomllib.loads(config.read_text())
    assert values["consent"] and values["vantage"] == "bishkek-1"
    assert Path(values["db"]).is_absolute()
    assert Path(values["db"]) == tmp_path / "data" / "probe" / "probe.db"
    assert values["targets"] == [str(targets)] and values["probe_cc"] == "KG"
    assert config.stat().st_mode & 0o077 == 0


def test_no_consent_off_a_terminal_exits_2_and_stores_nothing(config, tmp_path):
    db = tmp_path / "x.db"
    result = CliRunner().invoke(cli, ["check", "--db", str(db), "--input", "24.kg"])
    assert result.exit_code == 2
    assert "probe init --yes" in result.output
    assert not db.exists()


def test_first_check_on_a_terminal_asks_once_and_records(config, tmp_path):
    main, child = os.openpty()
    env = dict(os.environ, PROBE_CONFIG=str(config), XDG_DATA_HOME=str(tmp_path / "data"))
    targets = tmp_path / "kg.txt"
    targets.write_text("http://192.88.99.1/\n")
    argv = ["unshare", "-n", sys.executable, "-m", "probe.cli", "check", str(targets),
            *NOWHERE[2:], "--dns-timeout", "1"]  # fmt: skip
    process = subprocess.Popen(
        argv, stdin=child, stdout=child, stderr=child, cwd=ROOT, env=env, close_fds=True
    )
    os.close(child)
    seen = b""
    try:
        deadline = time.monotonic() + 60
        while b"want to measure?" not in seen and time.monotonic() < deadline:
            if select.select([main], [], [], 1)[0]:
                seen += os.read(main, 4096)
        assert b"test helper outside your network" in seen, seen
        os.write(main, b"y\n")
        while process.poll() is None and time.monotonic() < deadline:
            if select.select([main], [], [], 1)[0]:
                try:
                    seen += os.read(main, 4096)
                except OSError:
                    break
        assert process.wait(timeout=30) == 0, seen
    finally:
        process.kill()
        os.close(main)
    values = tomllib.loads(config.read_text())
    assert values["consent"]
    assert Path(values["db"]).is_file()
    assert values["targets"] == [str(targets)]  # so that a scheduled run has them


@pytest.mark.parametrize(
    "text, message",
    [
        ('consent = "x"\nconcurency = 3\n', ":2: unknown key 'concurency'"),
        ('consent = "x"\n\nconcurrency = "many"\n', ":3: 'concurrency' has the wrong type"),
        ("consent = \n", "probe.toml"),
        ("[timeouts]\ndns = 1\nsmtp = 2\n", ":3: unknown key 'timeouts.smtp'"),
        ("[timeouts]\ndns = -1\n", ":2: 'timeouts.dns' must be a positive number"),
        ('helpers = ["https://th.example/", 5]\n', ":1: 'helpers' must be a list of strings"),
    ],
)
def test_malformed_config_names_file_line_and_key(config, text, message):
    config.parent.mkdir(parents=True)
    config.write_text(text)
    result = CliRunner().invoke(cli, ["check", "--input", "24.kg"])
    assert result.exit_code == 2
    assert str(config) in result.output and message in result.output
    assert "Traceback" not in result.output


def test_flags_win_over_the_file_and_the_file_over_defaults(config, tmp_path):
    db = tmp_path / "from-config.db"
    config.parent.mkdir(parents=True)
    config.write_text(
        f'consent = "2026-11-29 10:00:00"\ndb = "{db}"\nconcurrency = 3\nprobe_cc = "KG"\n'
        "[timeouts]\ndns = 1.5\n"
    )
    first = run_offline("check", *NOWHERE)
    assert first.returncode == 0, first.stderr
    second = run_offline("check", *NOWHERE, "--concurrency", "5", "--probe-cc", "TJ")
    assert second.returncode == 0, second.stderr
    with sqlite3.connect(db) as conn:
        rows = conn.execute("select settings, probe_cc from runs order by started_at").fetchall()
    settings = [json.loads(s) for s, _ in rows]
    assert [s["concurrency"] for s in settings] == [3, 5]
    assert [s["timeouts"]["dns"] for s in settings] == [1.5, 1.5]
    assert settings[0]["timeouts"]["tcp"] == 10.0  # built-in default
    assert [cc for _, cc in rows] == ["KG", "TJ"]


def test_targets_from_the_config_when_none_are_given(config, tmp_path):
    targets = tmp_path / "kg.txt"
    targets.write_text("http://192.88.99.1/\n")
    db = tmp_path / "t.db"
    config.parent.mkdir(parents=True)
    config.write_text(
        f'consent = "2026-11-29 10:00:00"\ndb = "{db}"\ntargets = ["{targets}"]\n'
        'resolver = "udp://192.88.99.1"\ncontrol_resolvers = ["udp://192.88.99.1"]\n'
        'helpers = ["http://192.88.99.1/"]\n'
    )
    result = run_offline("check", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[0])["input"] == "http://192.88.99.1/"


# ---------------------------------------------------------------- timeouts: finite, 0 < t <= 300


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "301", "1e9", "0"])
def test_a_timeout_flag_that_is_not_a_sane_number_of_seconds_is_refused(config, tmp_path, value):
    """NaN made every step time out (an "OFFLINE" run), inf never ended: neither is measured."""
    db = tmp_path / "t.db"
    config.parent.mkdir(parents=True)
    config.write_text('consent = "2026-11-29 10:00:00"\n')
    result = run_offline("check", "--db", str(db), *NOWHERE, "--dns-timeout", value)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--dns-timeout" in result.stderr and "Traceback" not in result.stderr
    assert not db.exists()


@pytest.mark.parametrize("value", ["nan", "inf", "+inf", "-nan", "301", "1e9"])
def test_a_timeout_in_the_config_file_that_is_not_a_sane_number_is_refused(config, value):
    config.parent.mkdir(parents=True)
    config.write_text(f'consent = "x"\n[timeouts]\ncontrol = 5\ntls = {value}\n')
    result = CliRunner().invoke(cli, ["check", "--input", "24.kg"])
    assert result.exit_code == 2, result.output
    assert f"{config}:4: 'timeouts.tls' must be" in result.output
    assert "Traceback" not in result.output


def test_timeouts_up_to_300_seconds_are_taken():
    from probe.app.config import check_config
    from probe.measure.settings import Timeouts

    config = check_config(
        timeouts=Timeouts(dns=0.1, tcp=300, tls=300.0, http=1, control=300),
        resolver="udp://192.88.99.1",
    )
    assert vars(config.settings.timeouts) == {
        "dns": 0.1, "tcp": 300, "tls": 300.0, "http": 1, "control": 300,
    }  # fmt: skip


@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0, 0.0, 300.5])
def test_check_config_refuses_a_timeout_out_of_range(value):
    from probe.app.config import check_config
    from probe.errors import InputError
    from probe.measure.settings import Timeouts

    with pytest.raises(InputError, match="--control-timeout: .* 0 and 300"):
        check_config(timeouts=Timeouts(control=value), resolver="udp://192.88.99.1")


@pytest.mark.parametrize(
    "option, value",
    [("rate", math.nan), ("rate", math.inf), ("max_runtime", math.nan), ("max_runtime", math.inf)],
)
def test_check_config_refuses_a_rate_or_max_runtime_that_is_not_finite(option, value):
    """int(nan) in the rate limiter was a traceback; a NaN deadline never comes."""
    from probe.app.config import check_config
    from probe.errors import InputError

    flag = "--" + option.replace("_", "-")
    with pytest.raises(InputError, match=f"{flag}: .* not a finite number"):
        check_config(resolver="udp://192.88.99.1", **{option: value})


# ---------------------------------------------------------------- the file holding the token


def test_the_config_is_created_readable_by_the_user_only_not_chmodded_after(config, monkeypatch):
    """The collector token is never in a file others can read, not even for a moment: with
    chmod doing nothing (as on some filesystems, or before it runs), the file is still 0600."""
    from probe.app.config import write_config

    monkeypatch.setattr(os, "chmod", lambda *a, **k: None)
    monkeypatch.setattr(Path, "chmod", lambda *a, **k: None)
    old = os.umask(0o022)
    try:
        write_config({"consent": "x", "collector_token": "secret"}, config)
    finally:
        os.umask(old)
    assert tomllib.loads(config.read_text())["collector_token"] == "secret"
    assert config.stat().st_mode & 0o777 == 0o600


def test_writing_the_config_follows_no_planted_symlink(config, tmp_path):
    from probe.app.config import write_config

    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    config.parent.mkdir(parents=True)
    (config.parent / (config.name + ".tmp")).symlink_to(victim)
    write_config({"consent": "x", "collector_token": "secret"}, config)
    assert victim.read_text() == "precious\n"
    assert not config.is_symlink() and "secret" in config.read_text()
    assert sorted(p.name for p in config.parent.iterdir()) == [config.name, config.name + ".tmp"]


@pytest.mark.parametrize("flag", ["--jitter", "--wait"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_jitter_and_wait_that_are_not_finite_are_refused(config, tmp_path, flag, value):
    """--jitter nan was a traceback (time.sleep(nan)); --wait nan waited for ever on a busy
    database (no time is past a NaN deadline)."""
    db = tmp_path / "t.db"
    config.parent.mkdir(parents=True)
    config.write_text('consent = "2026-11-29 10:00:00"\n')
    result = run_offline("check", "--db", str(db), *NOWHERE, flag, value)
    assert result.returncode == 2, result.stdout + result.stderr
    assert flag in result.stderr and "Traceback" not in result.stderr
    assert not db.exists()


def test_every_option_of_check_is_a_config_key_by_its_name():
    from probe.cli._group import config_keys

    keys = config_keys()
    for param in cli.commands["check"].params:
        if isinstance(param, click.Option) and not param.name.endswith("_timeout"):
            option = param.opts[0].removeprefix("--").replace("-", "_")
            assert option in keys or param.name in keys, param.opts
    assert keys["wait"] == (int, float) and keys["quiet"] is bool and keys["helpers"] is list


def test_wait_in_the_config_is_a_setting_not_an_unknown_key(config, tmp_path):
    # The README says any option of `probe check` may be set by its name; `wait` was refused.
    config.parent.mkdir(parents=True)
    config.write_text('consent = "2026-11-29 10:00:00"\nwait = 60\njitter = 0\n')
    result = CliRunner().invoke(cli, ["check", "--help"])
    assert result.exit_code == 0, result.output
    from probe.app.config import click_defaults, load_config
    from probe.cli._group import config_keys

    values = load_config(config_keys(), config)
    assert click_defaults(values)["check"]["wait"] == 60
