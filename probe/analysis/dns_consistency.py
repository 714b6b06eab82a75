"""Is the network's DNS answer consistent with the control's? (pure)

See :func:`analyze_dns`: the control is the helper's DNS and the encrypted control resolvers
(plain ones only when nothing encrypted answered); addresses, AS numbers, validated TLS
handshakes and ``dns`` fingerprints decide.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..model import failures as F
from ..model.addresses import is_bogon, is_ip_literal, is_loopback
from ..model.records import ENCRYPTED_ENGINES, Evidence, Finding, Observations
from ..ooni.helper_protocol import FLAG_VALID_TLS, ip_asn, ip_flags, our_failure
from .fingerprints import Fingerprints, Match
from .observed import norm_host, system_lookup

#: DNS failures that are a resolver's real answer (it replied), as opposed to no reply.
_DNS_ANSWERS = frozenset(
    {F.DNS_NXDOMAIN, F.DNS_NO_ANSWER, F.DNS_SERVFAIL, F.DNS_REFUSED, F.DNS_MISBEHAVING}
)


@dataclass(slots=True)
class _Source:
    name: str
    addrs: list[str]
    failure: str | None
    answered: bool  # the source replied (addresses or a definitive DNS answer)


@dataclass(slots=True)
class DNSAnalysis:
    """The DNS step in detail; :func:`dns_consistency` returns only ``consistency``."""

    consistency: str | None
    evidence: Evidence | None = None  # why it is inconsistent
    system_addrs: list[str] = field(default_factory=list)
    system_failure: str | None = None
    control_addrs: set[str] = field(default_factory=set)
    control_answered: bool = False
    injection: bool = False
    bogon_only: bool = False
    loopback_only: bool = False
    fingerprint: Match | None = None


def control_sources(obs: Observations, host: str) -> tuple[list[_Source], list[_Source]]:
    """(trusted, plain) control DNS sources for ``host`` at depth 0."""
    trusted: list[_Source] = []
    plain: list[_Source] = []
    response = obs.control.response or {}
    dns = response.get("dns")
    if isinstance(dns, dict):
        addrs = [str(a) for a in dns.get("addrs") or []]
        # The helper answered, so its DNS result is a real observation whatever it says.
        trusted.append(_Source("the test helper", addrs, our_failure(dns.get("failure")), True))
    grouped: dict[tuple[str, str], _Source] = {}
    for q in obs.dns:
        if q.engine == "system" or q.depth != 0 or norm_host(q.hostname) != host:
            continue
        if q.query_type == "AAAA" and q.failure == F.DNS_NO_ANSWER:
            continue
        src = grouped.get((q.engine, q.resolver))
        if src is None:
            src = grouped[(q.engine, q.resolver)] = _Source(q.resolver, [], None, False)
            (trusted if q.engine in ENCRYPTED_ENGINES else plain).append(src)
        src.addrs += [a for a in q.addresses if a not in src.addrs]
        src.answered |= bool(q.addresses) or q.rcode is not None or q.failure in _DNS_ANSWERS
        if q.failure and src.failure is None:
            src.failure = q.failure
    return trusted, plain


def _asns(obs: Observations, addrs: Iterable[str]) -> set[int]:
    return {asn for a in addrs if (asn := ip_asn(obs.control.response, a))}


def _tls_validated(obs: Observations, addrs: Iterable[str], host: str) -> list[str]:
    """System addresses proven to serve ``host``: a validated handshake, ours or the helper's."""
    addrs = set(addrs)
    ok = {
        t.ip
        for t in obs.tls
        if t.failure is None and t.ip in addrs and norm_host(t.server_name) == host
    }
    ok |= {a for a in addrs if ip_flags(obs.control.response, a) & FLAG_VALID_TLS}
    return sorted(ok)


def _forged(obs: Observations, plain: list[_Source], ctl: set[str], addrs: list[str]) -> list[str]:
    """Plain-DNS control resolvers that got the system resolver's answer while the trusted
    sources disagree (no shared address or AS): an injector on the path answered them both."""
    trusted_asns = _asns(obs, ctl)
    return [
        s.name
        for s in plain
        if s.addrs
        and set(s.addrs) & set(addrs)
        and not set(s.addrs) & ctl
        and not _asns(obs, s.addrs) & trusted_asns
    ]


def analyze_dns(obs: Observations, fingerprints: Fingerprints | None = None) -> DNSAnalysis:
    """DNS consistency with the evidence behind it (see :func:`dns_consistency`)."""
    host = norm_host(obs.domain)
    addrs, fail, asked = system_lookup(obs, 0, host)
    res = DNSAnalysis(None, system_addrs=addrs, system_failure=fail)
    res.bogon_only = bool(addrs) and all(is_bogon(a) for a in addrs)
    res.loopback_only = bool(addrs) and all(is_loopback(a) for a in addrs)
    trusted, plain = control_sources(obs, host)
    trusted_answered = any(s.answered for s in trusted)
    control = trusted if trusted_answered else trusted + plain
    res.control_answered = any(s.answered for s in control)
    res.control_addrs = {a for s in control for a in s.addrs}
    ctl = res.control_addrs
    if is_ip_literal(host):
        res.consistency = "consistent"
        return res

    forged = _forged(obs, plain, ctl, addrs) if trusted_answered else []
    res.injection = bool(forged)
    ours: dict[str, Any] = {"addresses": addrs[:8]} if addrs else {"failure": fail}
    theirs: dict[str, Any] = {
        "addresses": sorted(ctl)[:8],
        "sources": [s.name for s in control if s.answered],
    }
    if forged:
        theirs["forged_plain_dns"] = forged

    def inconsistent(finding: str, **extra: Any) -> DNSAnalysis:
        res.consistency = "inconsistent"
        res.evidence = Evidence(finding, "dns", {**ours, **extra}, theirs)
        return res

    if fingerprints is not None and addrs:
        match = fingerprints.match_dns(addrs)
        if match is not None and not match.false_positive:
            res.fingerprint = match
            return inconsistent(Finding.DNS_BLOCKPAGE_ADDRESS, fingerprint=match.id)

    if not asked or not res.control_answered:
        return res
    if not addrs:
        if fail in F.UNREACHABLE:
            return res  # the resolver could not be reached at all: no answer to judge
        if not ctl:
            res.consistency = "consistent"
            return res
        return inconsistent(Finding.DNS_FAILED_CONTROL_RESOLVED)
    if set(addrs) & ctl:
        res.consistency = "consistent"
        return res
    if _asns(obs, addrs) & _asns(obs, ctl):
        res.consistency = "consistent"
        return res
    validated = _tls_validated(obs, addrs, host)
    if res.injection:
        # A forged answer stays forged even when the address it points to passes TLS through
        # to the real site (an SNI-routing proxy): the tampering is the evidence.
        return inconsistent(Finding.DNS_INJECTED, tls_validated=validated)
    if validated:
        res.consistency = "consistent"
        return res
    if not ctl:
        return inconsistent(Finding.DNS_GHOST_ANSWER)
    if res.bogon_only:
        return inconsistent(Finding.DNS_BOGON_ANSWER, loopback=res.loopback_only)
    return inconsistent(Finding.DNS_ANSWER_DIFFERS)


def dns_consistency(obs: Observations, fingerprints: Fingerprints | None = None) -> str | None:
    """``"consistent"``, ``"inconsistent"`` or None (no control) for the system resolver.

    The system resolver's depth-0 answers (A and AAAA; ``dns_no_answer`` on AAAA ignored) are
    compared with the control addresses: the helper's ``dns.addrs`` plus the encrypted
    (DoT/DoH) control resolvers; plain UDP/TCP control resolvers count only when no trusted
    source answered. Consistent: the host is an IP literal; or addresses intersect; or ASNs
    intersect (helper ``ip_info``, ASN > 0); or a system address completed a validated TLS
    handshake for the domain (ours, or the helper's ``ip_info`` flag 8) and no plain-DNS
    control was forged with the same answer; or the system resolver failed and the control
    resolved nothing either (expected failure).
    Inconsistent: a ``dns`` fingerprint matched (when ``fingerprints`` is given); the system
    resolver failed while the control resolved; a plain-DNS control resolver got the system's
    answer while the trusted sources disagree (injection on the path, even if the address
    passes TLS through to the real site); the answers fail every test above (including
    bogon-only answers against public control ones, and answers for a name that every
    control resolved to nothing). None when no control source answered.
    """
    return analyze_dns(obs, fingerprints).consistency
