"""What a ``probe check`` run is told: options checked and turned into typed settings.

The CLI passes its options here; :func:`check_config` validates every one and raises
:class:`~probe.errors.InputError` with a line for the user before anything is measured or
written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from .analysis.fingerprints import Fingerprints
from .errors import InputError
from .measure.control import (
    DEFAULT_CONTROL_RESOLVERS,
    DEFAULT_HELPER_CONCURRENCY,
    DEFAULT_HELPERS,
    OWN_HELPER_CONCURRENCY,
)
from .measure.measurer import Settings, Timeouts
from .net import resolvers
from .net.connections import client_context


@dataclass(frozen=True, slots=True)
class CheckConfig:
    """Everything a run needs besides its targets and its database."""

    settings: Settings
    helpers: list[str]
    helper_concurrency: int
    fingerprints: Fingerprints
    concurrency: int = 32
    rate: float | None = None  # new network requests per second; None: unlimited
    probe_asn: str | None = None  # "AS8449"
    probe_cc: str | None = None  # "KG"

    def describe(self) -> dict[str, object]:
        """The settings stored with the run (JSON-able; nothing about the volunteer)."""
        return {
            "resolver": self.settings.system_resolver.url,
            "control_resolvers": [r.url for r in self.settings.control_resolvers],
            "helpers": self.helpers,
            "timeouts": vars(self.settings.timeouts),
            "concurrency": self.concurrency,
            "rate": self.rate,
        }


def parse_asn(value: str) -> str:
    """``"AS8449"`` from ``AS8449``, ``as8449`` or ``8449``; raises :class:`InputError`."""
    digits = value.upper().removeprefix("AS")
    if not digits.isdigit():
        raise InputError(f"--probe-asn: {value!r} is not an AS number")
    return f"AS{int(digits)}"


def parse_cc(value: str) -> str:
    """A two-letter country code, upper case; raises :class:`InputError`."""
    if not (len(value) == 2 and value.isascii() and value.isalpha()):
        raise InputError(f"--probe-cc: {value!r} is not a two-letter country code")
    return value.upper()


def parse_helper_url(url: str) -> str:
    """A test helper's URL, checked; raises :class:`InputError` saying what is wrong.

    It must be an ``http://`` or ``https://`` URL with a host, a port (if any) in 1..65535,
    no user name or password (a secret that would end up in the stored run settings), and no
    white space or control characters.
    """
    where = f"--helper {url!r}"
    if any(c.isspace() or not c.isprintable() for c in url):
        raise InputError(f"{where}: contains white space or control characters")
    if not url.lower().startswith(("http://", "https://")):
        raise InputError(f"{where}: must be an http:// or https:// URL")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # unbalanced [ ] around an IPv6 address
        raise InputError(f"{where}: {exc}") from None
    try:
        port = parts.port
    except ValueError:
        port = 0
    if "@" in parts.netloc:
        raise InputError(f"{where}: user names and passwords are not supported")
    if not parts.hostname:
        raise InputError(f"{where}: has no host")
    if port == 0:
        raise InputError(f"{where}: bad port (must be 1-65535)")
    return url


def check_config(
    *,
    resolver: str | None = None,
    control_resolvers: Sequence[str] = (),
    helpers: Sequence[str] = (),
    helper_concurrency: int | None = None,
    ca_file: str | None = None,
    fingerprint_files: Sequence[str] = (),
    concurrency: int = 32,
    rate: float | None = None,
    probe_asn: str | None = None,
    probe_cc: str | None = None,
    timeouts: Timeouts | None = None,
) -> CheckConfig:
    """Validate a run's options; raises :class:`InputError` naming the option at fault."""
    asn = parse_asn(probe_asn) if probe_asn is not None else None
    cc = parse_cc(probe_cc) if probe_cc is not None else None
    system = (
        resolvers.parse_resolver(resolver, engine="system")
        if resolver
        else resolvers.system_resolver()
    )
    controls = [
        resolvers.parse_resolver(url) for url in (control_resolvers or DEFAULT_CONTROL_RESOLVERS)
    ]
    helper_urls = [parse_helper_url(url) for url in (helpers or DEFAULT_HELPERS)]
    if helper_concurrency is None:
        helper_concurrency = OWN_HELPER_CONCURRENCY if helpers else DEFAULT_HELPER_CONCURRENCY
    return CheckConfig(
        settings=Settings(
            system_resolver=system,
            control_resolvers=controls,
            ssl_context=client_context(ca_file),
            timeouts=timeouts or Timeouts(),
        ),
        helpers=helper_urls,
        helper_concurrency=helper_concurrency,
        fingerprints=Fingerprints.load(extra_files=fingerprint_files),
        concurrency=concurrency,
        rate=rate,
        probe_asn=asn,
        probe_cc=cc,
    )
