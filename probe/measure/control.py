"""The control: ask a test helper outside the censored network what it sees.

The client speaks OONI's test-helper protocol (:mod:`probe.ooni.helper_protocol`), so it works
with OONI's public helpers and with our own ``probe helper serve``. Helpers are tried in turn
until one answers.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import httpx

from .. import __version__
from ..errors import HelperAnswerError
from ..model.records import Control
from ..net.classify import classify
from ..net.connections import Clock
from ..ooni.helper_protocol import ControlRequest, check_response

#: OONI's public test helpers, used when no ``--helper`` is given.
DEFAULT_HELPERS = (
    "https://0.th.ooni.org/",
    "https://1.th.ooni.org/",
    "https://2.th.ooni.org/",
    "https://3.th.ooni.org/",
)
#: Control resolvers used when no ``--control-resolver`` is given.
DEFAULT_CONTROL_RESOLVERS = (
    "https://cloudflare-dns.com/dns-query",
    "https://dns.google/dns-query",
    "udp://8.8.8.8:53",
)
#: OONI's helpers shed load beyond 25 requests in flight; we stay well below.
DEFAULT_HELPER_CONCURRENCY = 4
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
#: How often a busy helper (HTTP 503) is asked again, within the control timeout.
BUSY_RETRIES = 5
#: Requests in flight to helpers the volunteer names: below our helper's default load limit (25).
OWN_HELPER_CONCURRENCY = 16


class HelperClient:
    """Asks test helpers, in turn, with at most ``concurrency`` requests in flight."""

    def __init__(
        self,
        helpers: list[str],
        client: httpx.AsyncClient,
        *,
        concurrency: int = DEFAULT_HELPER_CONCURRENCY,
        timeout: float = 30.0,
    ) -> None:
        self.helpers = list(helpers)
        self.client = client
        self.slots = asyncio.Semaphore(concurrency)
        self.timeout = timeout
        # Once a helper fails, later targets start with the next one.
        self._first = 0

    async def control(self, request: ControlRequest, clock: Clock) -> Control:
        """Ask the helpers; never raises."""
        record = Control(t0=clock())
        body = json.dumps(request).encode()
        headers = {"content-type": "application/json", "user-agent": f"probe/{__version__}"}
        order = self.helpers[self._first :] + self.helpers[: self._first]
        async with self.slots:
            for helper in order:
                record.helper = helper
                try:
                    async with asyncio.timeout(self.timeout):
                        response = await self._post(helper, body, headers)
                        if response.status_code != 200:
                            raise HelperAnswerError(f"helper answered HTTP {response.status_code}")
                        if len(response.content) > MAX_RESPONSE_BYTES:
                            raise HelperAnswerError("helper answer too large")
                        record.response = _answer(response)
                        record.failure = None
                        break
                except Exception as exc:
                    record.failure = classify(exc)
                    self._first = (self.helpers.index(helper) + 1) % len(self.helpers)
        record.t = clock()
        return record

    async def _post(self, helper: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        """POST, waiting and retrying while the helper sheds load (503)."""
        for attempt in range(BUSY_RETRIES + 1):
            response = await self.client.post(helper, content=body, headers=headers)
            if response.status_code != 503 or attempt == BUSY_RETRIES:
                return response
            await asyncio.sleep(_retry_after(response, attempt))
        raise AssertionError("unreachable")


def _retry_after(response: httpx.Response, attempt: int) -> float:
    """Seconds to wait before asking a busy helper again: its Retry-After, else backoff."""
    try:
        wanted = float(response.headers.get("retry-after", ""))
    except ValueError:
        wanted = 0.25 * 2**attempt
    return min(max(wanted, 0.05), 5.0) * random.uniform(0.8, 1.2)


def _answer(response: httpx.Response) -> dict[str, Any]:
    """The helper's JSON answer, checked; raises :class:`HelperAnswerError`."""
    try:
        return check_response(response.json())
    except ValueError as exc:  # not JSON, or not the protocol's shape
        raise HelperAnswerError(str(exc)) from None
