"""The collector's HTTP: probe's one HTTP/1.1 server (:mod:`probe.net.http_server`, asyncio
and h11, with every limit a public server needs) under the collector's name and log.

A volunteer's IP is neither logged nor stored (log lines carry the method, the path, the
status, the time and the size, escaped). The peer's address is handed to the handler only so
that it can be scrubbed from what the volunteer sent (:attr:`Request.peer`).
"""

from __future__ import annotations

import logging

from .. import __version__
from ..net.http_server import Handler, Limits, Request, Response, Server, error

log = logging.getLogger("probe.collector")

SERVER_NAME = f"probe-collector/{__version__}"


def server(handler: Handler, limits: Limits) -> Server:
    """The collector's server of ``handler``: probe's HTTP server, named and logging as the
    collector."""
    return Server(handler, limits, name=SERVER_NAME, log=log)


__all__ = ["Limits", "Request", "Response", "Server", "error", "log", "server"]
