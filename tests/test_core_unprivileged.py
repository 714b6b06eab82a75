"""Proof that the core tests need no root: as root, this runs them again as ``nobody``.

The invocation (:func:`unprivileged_run`), which works by hand too::

    setpriv --reuid=65534 --regid=65534 --clear-groups env -i PATH=/usr/bin:/bin \\
        HOME=$T TMPDIR=$T CI=true PYTHONDONTWRITEBYTECODE=1 [PYTHONPATH=SITE-PACKAGES] \\
        PYTHON -m pytest -p no:cacheprovider tests/test_core_measure.py ...

from a copy of the checkout nobody can read, ``$T`` a directory nobody may write. ``PYTHON``
is this interpreter when nobody may run it, else the system's of the same version with this
one's site-packages on PYTHONPATH (a pyenv or venv under /root is closed to nobody).
``CI=true``: a missing tool (PostgreSQL) fails there rather than skips (tests/conftest.py's
``require_tool``). The process has no capability at all: not one step may need root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import require_tool

CORE = [
    "tests/test_core_measure.py",
    "tests/test_core_servers.py",
    "tests/test_core_run.py",
    "tests/test_core_upload.py",
    "tests/test_core_seam.py",
    "tests/test_core_tools.py",
    "tests/test_core_helper_tls.py",
]
NOBODY = 65534
REPO = Path(__file__).resolve().parent.parent


def as_nobody(argv: list[str], env: dict[str, str], cwd: Path, timeout: float = 900):
    prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    environment = [f"{k}={v}" for k, v in env.items()]
    return subprocess.run([*prefix, "env", "-i", *environment, *argv], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def interpreter(home: Path) -> tuple[str, dict[str, str]]:
    """A Python nobody may run with this one's packages, and the environment it needs."""
    base = {"PATH": "/usr/bin:/bin", "HOME": str(home), "TMPDIR": str(home)}
    if as_nobody([sys.executable, "-c", "import pytest"], base, home).returncode == 0:
        return sys.executable, {}
    system = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    packages = sysconfig.get_paths()["purelib"]
    extra = {"PYTHONPATH": packages}
    probe = as_nobody([system, "-c", "import pytest, psycopg"], base | extra, home)
    if probe.returncode:
        pytest.fail(f"no Python nobody may run with these packages: {probe.stderr}")
    return system, extra


def checkout_copy(where: Path) -> Path:
    copy = where / "checkout"
    for part in ("probe", "tests", "pyproject.toml"):
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, copy / part)
    for path in [copy, *copy.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return copy


def unprivileged_run(where: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    """The core tests run as nobody from a copy of the checkout in ``where`` (a directory
    nobody may enter)."""
    home = where / "nobody"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    copy = checkout_copy(where)
    python, extra = interpreter(home)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "TMPDIR": str(home), "CI": "true",
           "PYTHONDONTWRITEBYTECODE": "1", **extra}  # fmt: skip
    report = home / "junit.xml"
    argv = [python, "-m", "pytest", "-p", "no:cacheprovider", "-q", f"--junitxml={report}",
            *CORE]  # fmt: skip
    return as_nobody(argv, env, copy), report


@pytest.fixture
def open_dir():
    """A directory anyone may enter (pytest's own temporary directories are root's only)."""
    where = Path(tempfile.mkdtemp(prefix="probe-nobody-"))
    where.chmod(0o755)
    try:
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)


def test_the_core_tests_pass_as_nobody(open_dir):
    if os.geteuid() != 0:
        pytest.skip("not root: this run of the core tests is itself the unprivileged one")
    require_tool("setpriv", "apt-get install util-linux")
    result, report = unprivileged_run(open_dir)
    output = result.stdout[-5000:] + result.stderr[-2000:]
    assert result.returncode == 0, output
    suite = ET.parse(report).getroot().find("testsuite")
    assert suite is not None, output
    counts = {key: int(suite.get(key, "0")) for key in ("tests", "failures", "errors", "skipped")}
    assert counts["tests"] >= 20, counts  # every core file ran ...
    assert (counts["failures"], counts["errors"], counts["skipped"]) == (0, 0, 0), output
