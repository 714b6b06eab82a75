"""The one policy for a missing tool (tests/conftest.py's ``require_tool``): under ``CI=true``
the test fails with the install hint, elsewhere it is skipped with it; a tool present is
returned, whatever ``CI`` says."""

from __future__ import annotations

import os
import sys

import pytest

from tests.conftest import require_tool

MISSING = "no-such-tool-probe-tests"


@pytest.mark.parametrize("ci", ["true", "TRUE", " true "])
def test_a_missing_tool_fails_under_ci(monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="apt-get install it") as failed:
        require_tool(MISSING, "apt-get install it")
    assert MISSING in str(failed.value)


@pytest.mark.parametrize("ci", [None, "", "false", "1"])
def test_a_missing_tool_skips_elsewhere(monkeypatch, ci):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match="apt-get install it") as skipped:
        require_tool(MISSING, "apt-get install it")
    assert MISSING in str(skipped.value)


@pytest.mark.parametrize("ci", [None, "true"])
def test_a_present_tool_is_its_path(monkeypatch, ci, tmp_path):
    monkeypatch.delenv("CI", raising=False)
    if ci:
        monkeypatch.setenv("CI", ci)
    tool = tmp_path / "bin" / "some-tool"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tool.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    assert require_tool("some-tool", "hint") == str(tool)
    # A tool outside $PATH is looked for where it is said to be, and only there.
    assert require_tool("python", "hint", path=sys.executable) == sys.executable
    with pytest.raises(pytest.fail.Exception if ci else pytest.skip.Exception):
        require_tool("some-tool", "hint", path=str(tmp_path / "elsewhere"))
