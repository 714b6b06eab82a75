"""``probe helper serve``'s entry point: load what the config names, run the server until a
signal (:func:`serve`)."""

from __future__ import annotations

import asyncio
import signal
import sys

from ..model.addresses import bracket
from ..net import resolvers
from ..net.connections import client_context, raise_fd_limit
from ..net.http_server import log_to_stderr
from .asn import AsnDB
from .config import HelperConfig
from .host import OwnHost
from .measurement import HelperContext
from .server import HelperServer, log


def serve(config: HelperConfig) -> None:
    """Run the helper until SIGINT or SIGTERM; prints ``listening on HOST:PORT`` to stderr."""
    log_to_stderr(log)
    asyncio.run(_serve(config))


def context_for(config: HelperConfig) -> HelperContext:
    """Load everything the config names; raises :class:`~probe.errors.InputError` or
    ``OSError`` naming the file."""
    return HelperContext(
        resolver=config.resolver or resolvers.system_resolver(),
        ssl_context=client_context(config.ca_file),
        asn=AsnDB.load(config.asn_db) if config.asn_db else None,
        timeouts=config.timeouts,
        max_endpoints=config.max_endpoints,
        own_host=OwnHost(config.host, named=config.own_addresses, refresh=config.host_refresh),
        bogons_exempt=config.bogons_exempt,
    )


async def _serve(config: HelperConfig) -> None:
    raise_fd_limit()
    context = context_for(config)
    server = HelperServer(config, context)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, server.reload_certificate)  # a renewed certificate
    try:
        host, port = await server.start()
        print(f"listening on {bracket(host)}:{port}", file=sys.stderr, flush=True)
        await stop.wait()
        log.info("stopping")
    finally:
        await server.close()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(signum)
