"""How to run the helper (:class:`HelperConfig`), and the HTTP server's limits it means."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..net import resolvers
from ..net.http_server import Limits
from .host import REFRESH
from .measurement import HelperTimeouts

#: Seconds a client has to read an answer.
WRITE_TIMEOUT = 10.0


@dataclass
class HelperConfig:
    """How to run the helper; see :func:`probe.helper.serve.serve`."""

    host: str
    port: int
    resolver: resolvers.Resolver | None = None  # None: the system resolver (/etc/resolv.conf)
    ca_file: str | None = None  # trust anchors for TLS checks (else SSL_CERT_FILE, else certifi)
    asn_db: str | None = None  # iptoasn.com TSV (plain or gzip)
    max_in_flight: int = 25  # measurements at once; beyond: 503 (OONI sheds load at 25)
    max_request_bytes: int = 64 * 1024  # larger bodies: 413
    max_endpoints: int = 64  # longer tcp_connect lists: 400
    timeout: float = 30.0  # one whole measurement; beyond: 504
    max_connections: int = 1024  # open client connections; beyond: the idlest is closed
    certfile: str | None = None  # serve HTTPS with this certificate chain (PEM) ...
    keyfile: str | None = None  # ... and key; None: plain HTTP (e.g. behind a TLS proxy)
    idle_timeout: float = 15.0  # waiting for a (next) request on an open connection
    read_timeout: float = 10.0  # receiving one request's head and body
    timeouts: HelperTimeouts = field(default_factory=HelperTimeouts)  # each measurement's steps
    own_addresses: tuple[str, ...] = ()  # this host's, on no interface (a cloud's 1:1 NAT)
    host_refresh: float = REFRESH  # seconds between readings of this host's addresses
    #: Networks measured despite the bogon rule: for tests only (tests/loopback.py), from
    #: Python alone (no CLI option sets it); see probe.measure.settings.Settings.bogons_exempt.
    bogons_exempt: tuple[str, ...] = ()


def http_limits(config: HelperConfig) -> Limits:
    """The HTTP server's limits for ``config``. Its in-flight cap is the connections': the
    measurements are capped per client by the server's :class:`~probe.helper.server.Slots`,
    and a request that is no measurement (a hello, ``/whoami``) is answered at once."""
    return Limits(
        max_body=config.max_request_bytes,
        encodings=("identity",),  # OONI's probes and ours send plain JSON
        max_in_flight=config.max_connections,
        max_connections=config.max_connections,
        idle_timeout=config.idle_timeout,
        head_timeout=config.read_timeout,
        stall_timeout=config.read_timeout,
        request_timeout=config.read_timeout,
        write_timeout=WRITE_TIMEOUT,
        retry_after=1,
    )
