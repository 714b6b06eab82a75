"""The HTTP facts shared by every reader (probe.model.http)."""

from __future__ import annotations

import datetime

import pytest

from probe.model.http import REDIRECT_CODES, retry_after

NOW = datetime.datetime(2026, 12, 4, 12, 0, 0, tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    "value,seconds",
    [("5", 5.0), (" 120 ", 120.0), ("0", 0.0), ("1.5", 1.5),
     ("Fri, 04 Dec 2026 12:00:30 GMT", 30.0), ("Fri, 04 Dec 2026 11:00:00 GMT", 0.0),
     (None, None), ("", None), ("soon", None), ("nan", None), ("inf", None), ("-5", None),
     ("1e9", None), ("٣", None), ("9999999999", None)],
)  # fmt: skip
def test_retry_after_is_read_one_way(value, seconds):
    assert retry_after(value, NOW) == seconds


def test_only_the_codes_that_carry_a_location_redirect():
    assert {301, 302, 303, 307, 308} == REDIRECT_CODES
    assert 300 not in REDIRECT_CODES and 304 not in REDIRECT_CODES
