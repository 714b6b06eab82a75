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

from .. import __version__
from ..errors import HelperAnswerError, NetworkError
from ..model.http import retry_after
from ..model.records import Control
from ..net.classify import classify
from ..net.connections import Clock
from ..net.kept import KeptClient
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
#: A helper's answer is a few KiB; anything past this is abuse and is not read further.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
#: How often a busy helper (HTTP 503) is asked again, within the control timeout.
BUSY_RETRIES = 5
#: Requests in flight to helpers the volunteer names: below our helper's default load limit (25).
OWN_HELPER_CONCURRENCY = 16
#: What asking a helper can raise: the network, our checks of its answer, timeouts.
HELPER_ERRORS = (OSError, EOFError, TimeoutError, NetworkError)


class HelperClient:
    """Asks test helpers, in turn, with at most ``concurrency`` requests in flight."""

    def __init__(
        self,
        helpers: list[str],
        client: KeptClient,
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
        """Ask the helpers; never raises (a helper's failure is recorded, the next is tried)."""
        record = Control(t0=clock())
        body = json.dumps(request).encode()
        headers = [
            ("content-type", "application/json"),
            ("user-agent", f"probe/{__version__}"),
            ("accept-encoding", "gzip, deflate"),
        ]
        order = self.helpers[self._first :] + self.helpers[: self._first]
        async with self.slots:
            for helper in order:
                record.helper = helper
                try:
                    async with asyncio.timeout(self.timeout):
                        record.response = _answer(await self._post(helper, body, headers))
                        record.failure = None
                        break
                except HELPER_ERRORS as exc:
                    record.failure = classify(exc)
                    self._first = (self.helpers.index(helper) + 1) % len(self.helpers)
        record.t = clock()
        return record

    async def _post(self, helper: str, body: bytes, headers: list[tuple[str, str]]) -> bytes:
        """POST and read the answer (at most MAX_RESPONSE_BYTES), waiting and retrying while
        the helper sheds load (503)."""
        for attempt in range(BUSY_RETRIES + 1):
            answer = await self.client.request(
                "POST", helper, headers=headers, body=body, cap=MAX_RESPONSE_BYTES,
                error=_too_large,
            )  # fmt: skip
            if answer.status == 503 and attempt < BUSY_RETRIES:
                await asyncio.sleep(_wait_before_asking_again(answer.headers, attempt))
            elif answer.status != 200:
                raise HelperAnswerError(f"helper answered HTTP {answer.status}")
            else:
                return answer.body
        raise AssertionError("unreachable")


def _too_large(reason: str) -> HelperAnswerError:
    return HelperAnswerError(f"helper answer unusable: {reason}")


def _wait_before_asking_again(headers: dict[str, str], attempt: int) -> float:
    """Seconds to wait before asking a busy helper again: its Retry-After, else backoff."""
    wanted = retry_after(headers.get("retry-after"))
    if wanted is None:  # absent or garbage ("nan", "inf")
        wanted = 0.25 * 2**attempt
    return min(max(wanted, 0.05), 5.0) * random.uniform(0.8, 1.2)


def _answer(raw: bytes) -> dict[str, Any]:
    """The helper's JSON answer, validated; raises :class:`HelperAnswerError`."""
    try:
        return check_response(json.loads(raw))
    except ValueError as exc:  # not JSON (or not UTF-8), or not the protocol's shape
        raise HelperAnswerError(f"helper answer unusable: {exc}") from None
    except RecursionError:  # JSON nested thousands deep
        raise HelperAnswerError("helper answer unusable: nested too deeply") from None
