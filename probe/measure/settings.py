"""What a measurement is allowed: timeouts, limits, resolvers, and the address policy.

Shared by the probe's runs and the test helper's measurements; the defaults are OONI's where
OONI has one.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

from ..net import http11, resolvers


@dataclass
class Timeouts:
    """Per-step timeouts in seconds (OONI's defaults)."""

    dns: float = 4.0
    tcp: float = 10.0
    tls: float = 10.0
    http: float = 10.0
    control: float = 30.0


@dataclass
class Settings:
    system_resolver: resolvers.Resolver
    control_resolvers: list[resolvers.Resolver]
    ssl_context: ssl.SSLContext
    timeouts: Timeouts = field(default_factory=Timeouts)
    max_redirects: int = 10
    max_body: int = http11.MAX_BODY
    per_address: int = 2  # connections at once to one server address
    #: Seconds after which a connect still unanswered gives its slot back (see
    #: :meth:`~probe.measure.politeness.Politeness.connection`); its SYN has reached nobody so far.
    connect_grace: float = 1.0
    #: Unanswered connects at once to one address (a blackhole): each target still makes its
    #: own attempt, but they no longer wait for each other's timeouts.
    pending_per_address: int = 16
    headers: dict[str, str] = field(default_factory=lambda: dict(http11.DEFAULT_HEADERS))
    #: Why an address may not be connected to on a port, besides the bogon rule (the test
    #: helper's policy: its own host): the failure string to record, or None when it may;
    #: None: every address that is not a bogon.
    address_refusal: Callable[[str, int], str | None] | None = None
    #: Whether an address is the vantage's own, never connected to (the run's
    #: :meth:`~probe.measure.privacy.Scrubber.is_own`); None: no address is known as such.
    own_address: Callable[[str], bool] | None = None
    #: Seconds a UDP lookup still collects replies after its answer (duplicates are evidence).
    dns_duplicate_window: float = resolvers.DUPLICATE_WINDOW
    #: Networks connected to despite the bogon rule. For the test suite only: its loopback
    #: servers (tests/loopback.py) let the measurement be tested without root or a lab. It is
    #: deliberately settable from Python alone: no CLI option, config.toml key or helper
    #: request reaches it (a test checks), so a real run refuses every bogon. Default: none.
    bogons_exempt: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    def exempt(self, ip: str) -> bool:
        """Whether the bogon ``ip`` is in :attr:`bogons_exempt` (never, outside tests)."""
        return exempt(self.bogons_exempt, ip)


def exempt(networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], ip: str) -> bool:
    """Whether ``ip`` (canonical spelling) is in one of ``networks``; False for no networks."""
    if not networks:
        return False
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in network for network in networks)
