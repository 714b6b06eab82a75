"""Fixtures for the network-namespace censorship lab (see tests/lab/__init__.py), for the
loopback servers of the tests without root (tests/loopback.py), and the one policy for a
missing tool (:func:`require_tool`).

``lab`` is built once per session (only if a test asks for it); ``clean_lab`` yields the same
lab and undoes every censorship primitive after the test, pass or fail; ``helper`` is probe's
own test helper running in the lab, one per test module.
"""

import contextlib
import os
import shutil
import subprocess

import pytest

from tests.lab import Lab


def missing_tool(message: str) -> None:
    """A test cannot run for want of a tool: under ``CI=true`` it fails (CI must have every
    tool: a skip there would hide a test that never runs), elsewhere it is skipped. Either
    way ``message`` says what to install."""
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"{message} (CI=true: a missing tool fails)", pytrace=False)
    pytest.skip(message)


def require_tool(name: str, hint: str, *, path: str | None = None) -> str:
    """The tool ``name`` (its path on $PATH, or ``path`` when it lives elsewhere, as
    PostgreSQL's initdb does); when it is missing, :func:`missing_tool` with the install
    ``hint`` (``apt-get install ...``): the one policy of the test suite for a missing tool."""
    if path is None:
        found = shutil.which(name)
    else:
        found = path if path and os.access(path, os.X_OK) else None
    if found is None:
        missing_tool(f"{name} is not installed: {hint}")
    return str(found)


@pytest.fixture(scope="session")
def lab():
    if os.geteuid() != 0:
        pytest.fail(
            "the censorship lab needs root (network namespaces, iptables, NFQUEUE); "
            "run the test suite as root",
            pytrace=False,
        )
    with Lab() as the_lab:
        yield the_lab


@pytest.fixture
def clean_lab(lab):
    lab.reset()
    try:
        yield lab
    finally:
        lab.reset()


@pytest.fixture(scope="session", autouse=True)
def volunteer_home(tmp_path_factory):
    """A volunteer who gave consent, with config and data in a temporary home.

    Every `probe` the tests start (in-process or in the lab) finds this configuration through
    $PROBE_CONFIG; tests of the configuration itself point it elsewhere.
    """
    home = tmp_path_factory.mktemp("home")
    config = home / "config" / "probe" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('consent = "2026-11-29 00:00:00"\nvantage = "test"\n')
    saved = {k: os.environ.get(k) for k in ("PROBE_CONFIG", "XDG_DATA_HOME", "XDG_CONFIG_HOME")}
    os.environ.update(
        PROBE_CONFIG=str(config),
        XDG_DATA_HOME=str(home / "data"),
        XDG_CONFIG_HOME=str(home / "config"),
    )
    yield home
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def helper(lab):
    process = lab.start_probe_helper()
    yield process
    process.terminate()
    process.wait(10)  # its port is free for the next module's helper


# PostgreSQL for the collector's tests: one throwaway cluster per test module, a fresh
# database per test, and a collector serving it on loopback (tests/postgres.py).


@pytest.fixture(scope="module")
def cluster():
    from tests.postgres import Cluster, initdb

    require_tool("PostgreSQL", "apt-get install postgresql", path=initdb() or "")

    with Cluster() as pg:
        yield pg


@pytest.fixture
def dsn(cluster):
    return cluster.create()


@pytest.fixture
def collector(dsn, tmp_path):
    from tests.postgres import Collector

    with Collector(dsn, tmp_path / "collector.log") as running:
        try:
            yield running
        finally:
            # Stopped as an operator does (SIGTERM), so it ends its work and its log; should
            # it hang, the Collector's exit kills it.
            with contextlib.suppress(subprocess.TimeoutExpired):
                running.terminate()


# Loopback servers for the tests that need no root (tests/loopback.py).


@pytest.fixture(scope="session")
def certificates(tmp_path_factory):
    from tests.loopback import Certificates

    return Certificates(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def loopback(certificates):
    """A test's servers on loopback addresses: ``loopback.dns(zone)``, ``.http(routes)``,
    ``.https(routes)``, ``.doh(dns)``; all stopped when the test ends, pass or fail."""
    from tests.loopback import Loopback

    servers = Loopback(certificates)
    try:
        yield servers
    finally:
        servers.close()
