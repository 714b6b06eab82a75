"""The volunteer's own results: probe runs, show, status, prune; and probe schedule."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from probe.cli import cli
from tests.conftest import require_tool
from tests.test_unattended import NOWHERE, offline

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    db = tmp_path_factory.mktemp("results") / "p.db"
    for extra in ((), ("--input", "https://a.kg/", "--probe-asn", "AS8449", "--probe-cc", "KG")):
        result = offline("check", "--db", str(db), *NOWHERE, *extra)
        assert result.returncode == 0, result.stderr
    return db


def invoke(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_runs_lists_the_newest_first_with_counts(two_runs):
    lines = [json.loads(x) for x in invoke("runs", "--db", str(two_runs), "--json").splitlines()]
    assert [r["targets"] for r in lines] == [2, 1]
    assert [r["measured"] for r in lines] == [2, 1]
    assert lines[0]["probe_asn"] == "AS8449" and lines[0]["probe_cc"] == "KG"
    assert lines[0]["counts"] == {"inconclusive": 2}
    assert {r["status"] for r in lines} == {"offline"}
    table = invoke("runs", "--db", str(two_runs))
    assert "AS8449 KG" in table and lines[0]["id"][:8] in table
    assert invoke("runs", "--db", str(two_runs), "--limit", "1", "--json").count("\n") == 1


def test_show_a_run_and_a_measurement_by_prefix(two_runs):
    newest = json.loads(invoke("runs", "--db", str(two_runs), "--json").splitlines()[0])
    run = json.loads(invoke("show", newest["id"][:8], "--db", str(two_runs), "--json"))
    assert [m["input"] for m in run["measurements"]] == ["http://192.88.99.1/", "https://a.kg/"]
    mid = run["measurements"][0]["id"]
    detail = json.loads(invoke("show", mid[:10], "--db", str(two_runs), "--json"))
    assert detail["verdict"] == "inconclusive" and detail["evidence"][0]["finding"]
    assert detail["steps"]["dns_queries"][0]["resolver"] == "udp://192.88.99.1:53"
    assert detail["steps"]["controls"][0]["helper"] == "http://192.88.99.1/"
    text = invoke("show", mid[:10], "--db", str(two_runs))
    for heading in ("DNS", "TCP", "TLS", "HTTP", "Control", "why:"):
        assert heading in text


@pytest.mark.parametrize("ident, message", [("abc", "at least 6"), ("ffffffff", "no run")])
def test_show_refuses_what_it_cannot_find(two_runs, ident, message):
    result = CliRunner().invoke(cli, ["show", ident, "--db", str(two_runs)])
    assert result.exit_code == 2 and message in result.output


def test_status_and_prune(tmp_path):
    db = tmp_path / "p.db"
    assert offline("check", "--db", str(db), *NOWHERE).returncode == 0
    state = json.loads(invoke("status", "--db", str(db), "--json"))
    assert state["measurements"] == 1 and state["running_since"] is None
    assert state["last_run"]["status"] == "offline" and state["bytes"] > 0
    assert "1 measurements pruned" in invoke("prune", "--older-than", "0h", "--db", str(db))
    detail = json.loads(invoke("show", state["last_run"]["id"], "--db", str(db), "--json"))
    mid = detail["measurements"][0]["id"]
    pruned = json.loads(invoke("show", mid, "--db", str(db), "--json"))
    assert pruned["pruned"] == 1 and pruned["verdict"] == "inconclusive"
    assert all(rows == [] for rows in pruned["steps"].values())
    assert "0 measurements re-analysed" in invoke("reanalyze", "--db", str(db))  # none left
    assert "1 measurements deleted" in invoke("prune", "--older-than", "0h", "--all",
                                              "--db", str(db))  # fmt: skip
    assert json.loads(invoke("status", "--db", str(db), "--json"))["measurements"] == 0
    bad = CliRunner().invoke(cli, ["prune", "--older-than", "soon", "--db", str(db)])
    assert bad.exit_code == 2 and "90d" in bad.output


CRON_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?$")


@pytest.fixture
def configured(tmp_path, monkeypatch):
    """A volunteer who ran `probe init` with a target list."""
    targets = tmp_path / "kg.txt"
    targets.write_text("24.kg\n")
    config = tmp_path / "config.toml"
    config.write_text(f'consent = "2026-11-29 10:00:00"\ntargets = ["{targets}"]\n')
    monkeypatch.setenv("PROBE_CONFIG", str(config))
    return config


def test_schedule_needs_target_lists_in_the_configuration():
    result = CliRunner().invoke(cli, ["schedule"])  # the tests' config has no targets
    assert result.exit_code == 2 and "probe init --targets" in result.output


@pytest.mark.parametrize("every", ["30m", "1h", "6h", "1d"])
def test_schedule_prints_a_valid_crontab_line(configured, every):
    line = invoke("schedule", "--every", every).strip()
    fields = line.split()
    assert all(CRON_FIELD.match(f) for f in fields[:5]), line
    ranges = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
    for field, (low, high) in zip(fields[:5], ranges, strict=True):
        for number in re.findall(r"\d+", field.split("/")[0]):
            assert low <= int(number) <= high, line
    # The tests' configuration is not the default one, so the line names it; the command is
    # the probe script or this Python's "-m probe", by absolute path (cron's PATH is short).
    assert fields[5].startswith("PROBE_CONFIG=") and Path(fields[6]).is_absolute()
    command = line.split(" # ")[0].split()[6:]
    assert command[-2:] == ["check", "--quiet"] and command[1:-2] in ([], ["-m", "probe"])


def test_schedule_refuses_a_bad_interval(configured):
    result = CliRunner().invoke(cli, ["schedule", "--every", "7 parsecs"])
    assert result.exit_code == 2 and "30m" in result.output


def test_schedule_systemd_units_verify(configured, tmp_path, monkeypatch):
    require_tool("systemd-analyze", "apt-get install systemd")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    out = invoke("schedule", "--systemd", "--every", "6h", "--install")
    units = tmp_path / "config" / "systemd" / "user"
    assert "Installed in" in out and sorted(p.name for p in units.iterdir()) == [
        "probe.service",
        "probe.timer",
    ]
    assert "RandomizedDelaySec=" in (units / "probe.timer").read_text()
    result = subprocess.run(
        ["systemd-analyze", "verify", str(units / "probe.timer"), str(units / "probe.service")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
