"""httpx's HTTP transport under the bogon rule of :mod:`probe.net.guard`: for the upload to the
collector, whose name the network's resolver could point at the volunteer's LAN. (Its own
module, so that a run, which never uploads before it ends, does not import httpx.)
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from ..errors import BogonRefused
from .guard import addresses_now


class _Backend(httpcore.SyncBackend):
    """httpcore's connections, to checked addresses only (TLS still verifies the name)."""

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            checked = addresses_now(host, port)
        except (OSError, BogonRefused) as exc:  # httpx's callers expect its own errors
            raise httpcore.ConnectError(str(exc)) from exc
        failure: httpcore.ConnectError | None = None
        for ip in checked:
            try:
                return super().connect_tcp(ip, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:
                failure = exc
        assert failure is not None  # allowed() returns at least one address
        raise failure


class Transport(httpx.HTTPTransport):
    """httpx's HTTP transport whose connections go only where the bogon rule allows."""

    def __init__(self, verify: ssl.SSLContext | bool = True) -> None:
        super().__init__(verify=verify, trust_env=False)
        # httpx builds its connection pool without a way to pass a network backend: the pool
        # is built again here, with ours.
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            keepalive_expiry=5.0,
            network_backend=_Backend(),
        )
