"""Small readings of :class:`~probe.model.records.Observations` shared by the analysis."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from urllib.parse import urlsplit

from ..model import failures as F
from ..model.records import Observations, Step
from ..ooni.helper_protocol import http_entry

#: A step whose deadline passed while the probe's own event loop stalled, twice (the measurer
#: retries such a step once): the timeout says nothing about the network.
LOOP_STALLED = F.LOOP_STALLED


def norm_host(host: str) -> str:
    return host.strip().rstrip(".").lower()


def url_port(url: str) -> int:
    parts = urlsplit(url)
    try:
        if parts.port:
            return parts.port
    except ValueError:
        pass
    return 443 if parts.scheme == "https" else 80


def is_https(url: str) -> bool:
    return url.lower().startswith("https://")


def most_common(values: Iterable[str | None]) -> str | None:
    counts = Counter(v for v in values if v)
    return counts.most_common(1)[0][0] if counts else None


def system_lookup(obs: Observations, depth: int, host: str) -> tuple[list[str], str | None, bool]:
    """Addresses, failure and whether anything was asked, for the system resolver.

    A and AAAA are combined as getaddrinfo would: any address is success; the failure is the
    first one that matters, ignoring ``dns_no_answer`` on AAAA.
    """
    addrs: list[str] = []
    a_fail: str | None = None
    aaaa_fail: str | None = None
    asked = False
    for q in obs.dns:
        if q.engine != "system" or q.depth != depth or norm_host(q.hostname) != host:
            continue
        asked = True
        addrs += [a for a in q.addresses if a not in addrs]
        if q.query_type == "AAAA":
            if q.failure != F.DNS_NO_ANSWER:
                aaaa_fail = aaaa_fail or q.failure
        else:
            a_fail = a_fail or q.failure
    fail = a_fail or aaaa_fail
    if asked and not addrs and fail is None:
        fail = F.DNS_NO_ANSWER
    return addrs, (None if addrs else fail), asked


def stalled_steps(obs: Observations) -> list[Step]:
    """The steps (dns, tcp, tls, http, and the helper's fetch: probe's helper measures the
    same way) that failed with LOOP_STALLED."""
    helper = http_entry(obs.control.response) or {}
    steps: list[tuple[Step, list[str | None]]] = [
        ("dns", [q.failure for q in obs.dns]),
        ("tcp", [t.failure for t in obs.tcp]),
        ("tls", [t.failure for t in obs.tls]),
        ("http", [h.failure for h in obs.http if h.ip is not None]),  # else a connect's
        ("control", [helper.get("failure")]),
    ]
    return [step for step, failures in steps if LOOP_STALLED in failures]
