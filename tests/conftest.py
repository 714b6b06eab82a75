"""Fixtures for the network-namespace censorship lab (see tests/lab/__init__.py).

``lab`` is built once per session (only if a test asks for it); ``clean_lab`` yields the same
lab and undoes every censorship primitive after the test, pass or fail; ``helper`` is probe's
own test helper running in the lab, one per test module.
"""

import os

import pytest

from tests.lab import Lab


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


@pytest.fixture(scope="module")
def helper(lab):
    process = lab.start_probe_helper()
    yield process
    process.terminate()
    process.wait(10)  # its port is free for the next module's helper
