"""Times as the store keeps them: UTC, ``YYYY-MM-DD HH:MM:SS``, and what a user may type."""

from __future__ import annotations

import datetime
import re

from ..errors import InputError

_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}( \d{2}:\d{2}(:\d{2})?)?$")


def parse_time(value: str) -> str:
    """``YYYY-MM-DD[ HH:MM[:SS]]`` (UTC, as stored); raises :class:`InputError`."""
    value = value.strip().replace("T", " ").removesuffix("Z")
    if not _TIME.match(value):
        raise InputError(f"{value!r}: expected a UTC time as YYYY-MM-DD[ HH:MM[:SS]]")
    layout = {10: "%Y-%m-%d", 16: "%Y-%m-%d %H:%M"}.get(len(value), "%Y-%m-%d %H:%M:%S")
    try:
        datetime.datetime.strptime(value, layout)
    except ValueError:  # the right shape, but no such day or hour (2026-13-45)
        raise InputError(f"{value!r} is not a time that exists") from None
    return value
