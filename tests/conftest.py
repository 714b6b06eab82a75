"""Fixtures for the network-namespace censorship lab (see tests/lab/__init__.py).

``lab`` is built once per session (only if a test asks for it); ``clean_lab`` yields the same
lab and undoes every censorship primitive after the test, pass or fail.
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
