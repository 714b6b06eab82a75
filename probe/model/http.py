"""Facts of HTTP that several readers need the same way: which status codes redirect, and how
long a ``Retry-After`` asks to wait (RFC 9110 §15.4 and §10.2.3)."""

from __future__ import annotations

import datetime
import email.utils
import re

#: The status codes that redirect with a ``Location`` (300 and 304 do not).
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})

_SECONDS = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,6})?")


def retry_after(value: str | None, now: datetime.datetime | None = None) -> float | None:
    """The seconds a ``Retry-After`` value asks to wait: delay-seconds (a decimal fraction is
    taken too), or an HTTP-date less ``now``, never below 0; None when absent or not understood
    (a caller then uses its own backoff). ``now`` defaults to the current UTC time."""
    if value is None:
        return None
    value = value.strip()
    if _SECONDS.fullmatch(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": a time in UTC whose zone is not said
        when = when.replace(tzinfo=datetime.UTC)
    now = now or datetime.datetime.now(datetime.UTC)
    return max(0.0, (when - now).total_seconds())
