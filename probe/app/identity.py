"""The network a run measures from: AS number, country and AS name, never the volunteer's address.

Every run finds its network without any flag, before its first target: it asks ``GET /whoami``
(:mod:`probe.helper.whoami`) of the lookups the configuration names (``whoami`` URLs), then of
each configured helper (``<helper URL>/whoami``; OONI's public helpers are not asked, they do
not offer it). The first answer with an AS number wins. Each answer also says the address the
helper saw, the volunteer's public address behind any NAT: it goes into the run's
:class:`~probe.measure.privacy.Scrubber` at once, so that a page, header or helper answer that
echoes it is scrubbed before anything is analysed, stored or printed, and it is kept nowhere
else (not in :class:`NetworkIdentity`, not in the database, not in any message).

The network's resolver (the first nameserver of resolv.conf, or ``--resolver``) is looked up
in the same request (``?resolver=IP``) when it is a public IP address: a private one (a home
router forwarding queries) has no AS, and the helper cannot see where it forwards them; that
would need a DNS-based lookup through a name the helper's operator serves, which is not done.

``--probe-asn``/``--probe-cc`` and the configuration's ``probe_asn``/``probe_cc`` win over what
was found, field by field (an AS name found for another AS number is dropped). When nothing is
known the run goes ahead with the AS unknown, and says so in one line on stderr. That line
also says when the public address stays unknown (no lookup answered, and no interface has a
public IPv4 address: a NAT), since a page that shows it is then stored as it came; with only
OONI's helpers and the AS given in the configuration, that is the one line said.

A lying lookup can only make the probe scrub an address that is not the volunteer's (and miss
theirs), or record another AS: its answers are checked for shape, capped in size and time, and
its names scrubbed.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urljoin, urlsplit

from .. import __version__
from ..errors import HelperAnswerError, StoreError
from ..measure.control import DEFAULT_HELPERS, HELPER_ERRORS
from ..measure.privacy import Scrubber
from ..model import network
from ..model.addresses import canonical_ip, is_bogon, is_ip_literal
from ..model.text import plain_name
from ..net.classify import classify
from ..net.kept import KeptClient

if TYPE_CHECKING:
    from ..store import Store
    from .config import CheckConfig

#: A /whoami answer is a few hundred bytes.
MAX_ANSWER = 16 * 1024
#: Seconds for one lookup (at most: the control timeout, when shorter).
LOOKUP_TIMEOUT = 10.0
#: Longer AS names are cut.


@dataclass(frozen=True, slots=True)
class Found:
    """What one ``/whoami`` answer says about the network (its address is not kept here)."""

    asn: str | None = None  # "AS8449"
    cc: str | None = None  # "KG"
    name: str | None = None
    resolver_ip: str | None = None
    resolver_asn: str | None = None
    resolver_name: str | None = None
    #: The answer said the volunteer's address (it went into the scrubber).
    address_seen: bool = False


@dataclass(frozen=True, slots=True)
class NetworkIdentity:
    """What a run records about its network: never an address of the volunteer's."""

    probe_asn: str | None = None
    probe_cc: str | None = None
    probe_network_name: str | None = None
    resolver_ip: str | None = None  # a public resolver's address, as configured
    resolver_asn: str | None = None
    resolver_network_name: str | None = None
    #: Where probe_asn and probe_cc come from: "lookup", "override", "lookup+override"; None
    #: when neither is known.
    identity_source: str | None = None

    def run_columns(self) -> dict[str, str | None]:
        """The runs table's columns for this identity."""
        return {name: getattr(self, name) for name in self.__slots__}

    def unknown(self) -> list[str]:
        """What is not known, in words: "AS number", "country"."""
        return [
            what
            for what, value in (("AS number", self.probe_asn), ("country", self.probe_cc))
            if value is None
        ]


def whoami_urls(helpers: Sequence[str], lookups: Sequence[str] = ()) -> list[str]:
    """Where to ask: the configured lookups, then each helper's ``/whoami`` (not OONI's)."""
    urls = list(lookups) + [urljoin(h, "whoami") for h in helpers if h not in DEFAULT_HELPERS]
    return list(dict.fromkeys(urls))


def resolver_to_look_up(host: str, scrubber: Scrubber) -> str | None:
    """The resolver address worth sending to the helper: a public IP address that is not the
    volunteer's own; else None."""
    if not is_ip_literal(host) or is_bogon(host):
        return None
    address = canonical_ip(host)
    return None if address is None or address in scrubber.addresses else address


def parse_answer(raw: bytes, scrubber: Scrubber, *, resolver: str | None = None) -> Found:
    """A ``/whoami`` answer, checked; raises :class:`HelperAnswerError`.

    The address the helper saw goes into ``scrubber`` first, even when the rest of the answer
    is unusable; names are scrubbed too (a hostile helper can put the address anywhere).
    """
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise HelperAnswerError("whoami answer is not JSON") from None
    if not isinstance(data, dict):
        raise HelperAnswerError("whoami answer is not a JSON object")
    address = data.get("probe_ip")
    address_seen = False
    if isinstance(address, str) and is_ip_literal(address):
        scrubber.add(address)
        address_seen = True
    resolver_asked = resolver is not None and data.get("resolver_ip") == resolver
    return Found(
        asn=_asn(data.get("probe_asn")),
        cc=_cc(data.get("probe_cc")),
        name=_name(data.get("probe_network_name"), scrubber),
        resolver_ip=resolver if resolver_asked else None,
        resolver_asn=_asn(data.get("resolver_asn")) if resolver_asked else None,
        resolver_name=_name(data.get("resolver_network_name"), scrubber)
        if resolver_asked
        else None,
        address_seen=address_seen,
    )


def _asn(value: Any) -> str | None:
    """``"AS8449"``; None for anything else, AS0 ("not routed") included."""
    if not isinstance(value, str):
        return None
    canonical = network.asn(value) if value.strip().upper().startswith("AS") else None
    return None if canonical in (None, "AS0") else canonical


def _cc(value: Any) -> str | None:
    """A two-letter country code; None for anything else, ZZ ("unknown") included."""
    if not isinstance(value, str):
        return None
    code = network.cc(value)
    return None if code == "ZZ" else code


def _name(value: Any, scrubber: Scrubber) -> str | None:
    if not isinstance(value, str):
        return None
    return scrubber.text(plain_name(value)) or None


async def ask(client: KeptClient, url: str, resolver: str | None, timeout: float) -> bytes:
    """GET ``url`` (with ``?resolver=``); the answer's body, at most :data:`MAX_ANSWER`
    bytes. Raises what :data:`~probe.measure.control.HELPER_ERRORS` names."""
    if resolver:
        url += ("&" if urlsplit(url).query else "?") + urlencode({"resolver": resolver})
    headers = [("user-agent", f"probe/{__version__}"), ("accept", "application/json")]
    # One deadline over the whole exchange: a helper dripping bytes gets no longer.
    async with asyncio.timeout(timeout):
        answer = await client.request(
            "GET", url, headers=headers, cap=MAX_ANSWER, error=HelperAnswerError
        )
    if answer.status != 200:
        raise HelperAnswerError(f"HTTP {answer.status}")
    return answer.body


async def lookup(
    client: KeptClient,
    urls: Sequence[str],
    scrubber: Scrubber,
    *,
    resolver: str | None = None,
    timeout: float = LOOKUP_TIMEOUT,
) -> tuple[Found | None, list[str]]:
    """Ask each URL in turn until one answers with an AS number; the best answer (None when
    none was usable) and, for each URL that failed, ``"URL: failure"``."""
    best: Found | None = None
    failures: list[str] = []
    seen = False
    for url in urls:
        try:
            raw = await ask(client, url, resolver, timeout)
            found = parse_answer(raw, scrubber, resolver=resolver)
        except HELPER_ERRORS as exc:
            failures.append(f"{url}: {classify(exc)}")
            continue
        seen |= found.address_seen
        if best is None or (found.asn and not best.asn):
            best = found
        if found.asn:
            break
        failures.append(f"{url}: AS unknown to the helper")
    return (None if best is None else replace(best, address_seen=seen)), failures


def decide(
    found: Found | None, *, probe_asn: str | None = None, probe_cc: str | None = None
) -> NetworkIdentity:
    """The run's identity: the overrides (flags, configuration) over what was found."""
    found = found or Found()
    asn = probe_asn or found.asn
    cc = probe_cc or found.cc
    sources = {
        "override" if override else "lookup"
        for override, value in ((probe_asn, asn), (probe_cc, cc))
        if value is not None
    }
    return NetworkIdentity(
        probe_asn=asn,
        probe_cc=cc,
        probe_network_name=found.name if asn is not None and asn == found.asn else None,
        resolver_ip=found.resolver_ip,
        resolver_asn=found.resolver_asn,
        resolver_network_name=found.resolver_name,
        identity_source="+".join(sorted(sources)) or None,
    )


def record_identity(store: Store, run_id: str, identity: NetworkIdentity) -> None:
    """Write ``identity`` into the run's row (columns of migration m010); raises
    :class:`~probe.errors.StoreError` when the database refuses (a full disk)."""
    try:
        store.db.table("runs").update(run_id, identity.run_columns())
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot write the run's network: {exc}") from None


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def network_identity(
    config: CheckConfig,
    client: KeptClient,
    scrubber: Scrubber,
    *,
    warn: Callable[[str], None] | None = None,
) -> NetworkIdentity:
    """Find the run's network (see the module docstring); the public address goes into
    ``scrubber``. When the AS number or the country stays unknown, ``warn`` (default: stderr)
    gets one line."""
    urls = whoami_urls(config.helpers, config.whoami)
    resolver = resolver_to_look_up(config.settings.system_resolver.host, scrubber)
    timeout = min(LOOKUP_TIMEOUT, config.settings.timeouts.control)
    found, failures = await lookup(client, urls, scrubber, resolver=resolver, timeout=timeout)
    identity = decide(found, probe_asn=config.probe_asn, probe_cc=config.probe_cc)
    line = _notice(identity, found, failures, urls, scrubber)
    if line:
        (warn or _stderr)(scrubber.text(line))
    return identity


def _notice(
    identity: NetworkIdentity,
    found: Found | None,
    failures: list[str],
    urls: Sequence[str],
    scrubber: Scrubber,
) -> str | None:
    """The one line that says what stays unknown: the AS or country, or the public address
    (then a page that shows it is stored as it came: no one told the scrubber)."""
    why = "; ".join(failures) or "not in the helper's answer"
    if not urls:
        why = "no helper of yours offers /whoami (OONI's do not)"
    # Without a NAT the public IPv4 address is an interface's, which the scrubber reads itself.
    public_known = bool(found and found.address_seen) or any(
        "." in address and not is_bogon(address) for address in scrubber.addresses
    )
    hidden = (
        "your public address is unknown: a page that shows it is stored as it came "
        "(a helper of yours offering /whoami, `probe helper serve`, tells it)"
    )
    missing = identity.unknown()
    if missing:
        what = " and ".join(missing) + (" are" if len(missing) > 1 else " is")
        return (
            f"probe: the network's {what} unknown ({why}); measuring anyway. Set probe_asn "
            "and probe_cc in config.toml, or --probe-asn/--probe-cc."
            + ("" if public_known else f" And {hidden}.")
        )
    if not public_known:
        return f"probe: {hidden} ({why})."
    return None
