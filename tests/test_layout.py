"""The package's shape: the pure parts import no network library; the README's map is true."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Makes dnspython, httpx (and what lies under it) unimportable in a fresh interpreter.
BLOCKER = """
import sys
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"dns", "httpx", "httpcore", "h11", "anyio", "certifi"}:
            raise ImportError(f"{name} is blocked for this test")
        return None
sys.meta_path.insert(0, Blocked())
"""


@pytest.mark.parametrize(
    "module", ["probe.analysis", "probe.model.records", "probe.ooni.helper_protocol"]
)
def test_pure_packages_import_without_the_network_stack(module):
    code = BLOCKER + f"import {module}\nprint('ok')\n"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_the_blocker_blocks():
    # Without this, the test above could pass because the blocker does nothing.
    code = BLOCKER + "import probe.net.resolvers\n"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "blocked for this test" in result.stderr


def test_readme_map_matches_the_tree():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## For developers", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`probe/([a-z_]+)/`", section))
    folders = {p.name for p in (ROOT / "probe").iterdir() if p.is_dir() and p.name[0] != "_"}
    assert listed == folders
