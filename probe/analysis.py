"""From observations to a verdict: pure functions, no I/O, no clock.

:func:`analyze` turns one :class:`~probe.records.Observations` into a
:class:`~probe.records.Verdict`, following OONI Web Connectivity LTE's classic decision
procedure (see ``reference/ooni-web-connectivity.md`` §4–§7) with these deliberate changes:

* ``blocking`` has a ``"tls"`` value: a TLS handshake that fails on our side (reset, EOF,
  timeout after the ClientHello, or a certificate error) while the control's handshake to
  the same endpoint succeeds. OONI calls this ``"http-failure"``.
* A cleartext response compared with a *failed* control fetch is ``inconclusive``, never
  ``http-diff``: a false "blocked" discredits the volunteer who ran the probe.
* DNS consistency also uses encrypted control resolvers (DoT/DoH), TLS validation of the
  answers (ours and the helper's ``ip_info`` flag 8), and ``dns`` fingerprints. Plain UDP/TCP
  control resolvers are only trusted when nothing encrypted answered, because an on-path
  injector can forge them too.
* A confirmed blockpage fingerprint on any cleartext hop (a redirect's ``Location`` to a known
  block page, or the page itself) is blocking ``"http-diff"`` with ``confirmed`` set.
* ``body_proportion`` is None, not OONI's 0, when it is not computed.

Everything here is deterministic, so stored or imported observations can be re-analysed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from . import failures as F
from .addresses import endpoint, is_bogon, is_ip_literal, is_loopback
from .fingerprints import Fingerprints, Match
from .fingerprints import default as default_fingerprints
from .records import ENCRYPTED_ENGINES, HTTPRequest, Observations, Verdict

REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})

#: Header names OONI ignores when comparing headers (reference §5).
COMMON_HEADERS = frozenset(
    """date content-type server cache-control vary set-cookie location expires x-powered-by
    content-encoding last-modified accept-ranges pragma x-frame-options etag
    x-content-type-options age via p3p x-xss-protection content-language cf-ray
    strict-transport-security link x-varnish""".split()
)

#: Body proportion above which two bodies "match" (strictly greater, as OONI).
BODY_PROPORTION_THRESHOLD = 0.7

#: DNS failures that are a resolver's real answer (it replied), as opposed to no reply.
_DNS_ANSWERS = frozenset(
    {F.DNS_NXDOMAIN, F.DNS_NO_ANSWER, F.DNS_SERVFAIL, F.DNS_REFUSED, F.DNS_MISBEHAVING}
)
#: Failures that, seen for nearly every target at the same step, mean the vantage is offline.
OFFLINE_FAILURES = F.UNREACHABLE | {F.GENERIC_TIMEOUT}
#: TLS failures typical of SNI filtering (as opposed to certificate errors).
_TLS_INTERFERENCE = frozenset({F.CONNECTION_RESET, F.EOF_ERROR, F.GENERIC_TIMEOUT})


# --------------------------------------------------------------------------------------------
# small helpers


def _norm_host(host: str) -> str:
    return host.strip().rstrip(".").lower()


def _url_port(url: str) -> int:
    parts = urlsplit(url)
    try:
        if parts.port:
            return parts.port
    except ValueError:
        pass
    return 443 if parts.scheme == "https" else 80


def _is_https(url: str) -> bool:
    return url.lower().startswith("https://")


def _helper_ok(entry: Any) -> bool | None:
    """A helper ``tcp_connect``/``tls_handshake`` entry: True ok, False failed, None absent."""
    if not isinstance(entry, dict):
        return None
    return entry.get("failure") is None and entry.get("status", True) is not False


def _control_http(obs: Observations) -> dict[str, Any] | None:
    response = obs.control.response
    if not response:
        return None
    http = response.get("http_request")
    return http if isinstance(http, dict) else None


def _control_http_ok(http: dict[str, Any] | None) -> bool | None:
    """True when the helper fetched the URL, False when it failed, None without data."""
    if http is None:
        return None
    status = http.get("status_code")
    return http.get("failure") is None and isinstance(status, int) and status > 0


def _title_words(title: str | None) -> set[str]:
    return {w.lower() for w in (title or "").split(" ") if len(w.encode("utf-8")) >= 5}


def _is_final(hop: HTTPRequest) -> bool:
    return hop.failure is None and hop.status_code is not None


# --------------------------------------------------------------------------------------------
# HTTP diff


def http_diff(hop: HTTPRequest, control_http: dict[str, Any] | None) -> dict[str, Any]:
    """Compare our final response with the helper's ``http_request`` (OONI LTE, reference §5).

    Returns ``body_proportion``, ``body_length_match``, ``status_code_match``,
    ``headers_match``, ``title_match``; each is None when it cannot be computed:

    * ``body_proportion`` = min/max of the two body lengths, only when our body is non-empty
      and not truncated and the helper's ``body_length`` > 0; ``body_length_match`` is
      ``body_proportion > 0.7`` (strictly).
    * ``status_code_match``: equal codes → True; different codes → None when the helper's code
      is not 2xx, else False. Both codes must be > 0.
    * ``headers_match``: the header names (lower-cased) minus :data:`COMMON_HEADERS` of both
      responses intersect. Values are ignored; two empty sets do not match.
    * ``title_match``: title words (split on single spaces, ≥ 5 UTF-8 bytes, lower-cased):
      True when no long word is in only one of the titles (two empty titles match).

    Headers and title need a helper status > 0.
    """
    out: dict[str, Any] = {
        "body_proportion": None,
        "body_length_match": None,
        "status_code_match": None,
        "headers_match": None,
        "title_match": None,
    }
    if not control_http:
        return out
    c_status = control_http.get("status_code")
    c_status = c_status if isinstance(c_status, int) else -1
    c_length = control_http.get("body_length")
    c_length = c_length if isinstance(c_length, int) else -1

    p_length = hop.body_length if hop.body_length is not None else len(hop.body or b"")
    if p_length > 0 and not hop.body_truncated and c_length > 0:
        proportion = min(p_length, c_length) / max(p_length, c_length)
        out["body_proportion"] = proportion
        out["body_length_match"] = proportion > BODY_PROPORTION_THRESHOLD

    p_status = hop.status_code or 0
    if p_status > 0 and c_status > 0:
        if p_status == c_status:
            out["status_code_match"] = True
        elif 200 <= c_status < 300:
            out["status_code_match"] = False

    if c_status > 0:
        ours = {name.lower() for name, _ in hop.headers} - COMMON_HEADERS
        theirs = {str(name).lower() for name in (control_http.get("headers") or {})}
        out["headers_match"] = bool(ours & (theirs - COMMON_HEADERS))
        out["title_match"] = not (_title_words(hop.title) ^ _title_words(control_http.get("title")))
    return out


def _no_diff(diff: dict[str, Any]) -> bool:
    return diff["status_code_match"] is True and any(
        diff[k] is True for k in ("body_length_match", "headers_match", "title_match")
    )


# --------------------------------------------------------------------------------------------
# DNS consistency


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
    reason: str = ""
    system_addrs: list[str] = field(default_factory=list)
    system_failure: str | None = None
    system_queried: bool = False
    control_addrs: set[str] = field(default_factory=set)
    control_answered: bool = False
    injection: bool = False
    bogon_only: bool = False
    loopback_only: bool = False
    fingerprint: Match | None = None


def _system_lookup(obs: Observations, depth: int, host: str) -> tuple[list[str], str | None, bool]:
    """Addresses, failure and whether anything was asked, for the system resolver.

    A and AAAA are combined as getaddrinfo would: any address is success; the failure is the
    first one that matters, ignoring ``dns_no_answer`` on AAAA.
    """
    addrs: list[str] = []
    a_fail: str | None = None
    aaaa_fail: str | None = None
    asked = False
    for q in obs.dns:
        if q.engine != "system" or q.depth != depth or _norm_host(q.hostname) != host:
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


def _control_sources(obs: Observations, host: str) -> tuple[list[_Source], list[_Source]]:
    """(trusted, plain) control DNS sources for ``host`` at depth 0."""
    trusted: list[_Source] = []
    plain: list[_Source] = []
    response = obs.control.response or {}
    dns = response.get("dns")
    if isinstance(dns, dict):
        addrs = [str(a) for a in dns.get("addrs") or []]
        # The helper answered, so its DNS result is a real observation whatever it says.
        trusted.append(_Source("the test helper", addrs, F.from_helper(dns.get("failure")), True))
    grouped: dict[tuple[str, str], _Source] = {}
    for q in obs.dns:
        if q.engine == "system" or q.depth != 0 or _norm_host(q.hostname) != host:
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
    info = (obs.control.response or {}).get("ip_info") or {}
    out = set()
    for a in addrs:
        asn = (info.get(a) or {}).get("asn")
        if isinstance(asn, int) and asn > 0:
            out.add(asn)
    return out


def _tls_validated(obs: Observations, addrs: Iterable[str], host: str) -> list[str]:
    """System addresses proven to serve ``host``: a validated handshake, ours or the helper's."""
    addrs = set(addrs)
    ok = {
        t.ip
        for t in obs.tls
        if t.failure is None and t.ip in addrs and _norm_host(t.server_name) == host
    }
    info = (obs.control.response or {}).get("ip_info") or {}
    for a in addrs:
        flags = (info.get(a) or {}).get("flags")
        if isinstance(flags, int) and flags & 8:
            ok.add(a)
    return sorted(ok)


def analyze_dns(obs: Observations, fingerprints: Fingerprints | None = None) -> DNSAnalysis:
    """DNS consistency with the evidence behind it (see :func:`dns_consistency`)."""
    host = _norm_host(obs.domain)
    addrs, fail, asked = _system_lookup(obs, 0, host)
    res = DNSAnalysis(None, system_addrs=addrs, system_failure=fail, system_queried=asked)
    res.bogon_only = bool(addrs) and all(is_bogon(a) for a in addrs)
    res.loopback_only = bool(addrs) and all(is_loopback(a) for a in addrs)
    trusted, plain = _control_sources(obs, host)
    trusted_answered = any(s.answered for s in trusted)
    control = trusted if trusted_answered else trusted + plain
    res.control_answered = any(s.answered for s in control)
    res.control_addrs = {a for s in control for a in s.addrs}
    if is_ip_literal(host):
        res.consistency = "consistent"
        res.reason = f"the URL's host {obs.domain} is an IP address"
        return res
    ctl = res.control_addrs
    names = ", ".join(s.name for s in control if s.addrs) or "the control"

    if trusted_answered and addrs:
        trusted_asns = _asns(obs, ctl)
        for s in plain:
            forged = (
                s.addrs and not (set(s.addrs) & ctl) and not (_asns(obs, s.addrs) & trusted_asns)
            )
            if forged and set(s.addrs) & set(addrs):
                res.injection = True
    injection = (
        "; the plain-DNS control resolver got the same answer while encrypted/helper resolution "
        "disagrees, so the answer is injected on the path"
        if res.injection
        else ""
    )

    if fingerprints is not None and addrs:
        match = fingerprints.match_dns(addrs)
        if match is not None and not match.false_positive:
            res.fingerprint = match
            res.consistency = "inconsistent"
            res.reason = (
                f"the system resolver answered {', '.join(addrs)}, a known block-page address "
                f"(fingerprint {match.id}){injection}"
            )
            return res

    if not asked:
        return res
    if not res.control_answered:
        res.reason = "no control resolver or test helper answered the DNS question"
        return res
    if not addrs:
        if not ctl:
            res.consistency = "consistent"
            res.reason = (
                f"the system resolver failed ({fail}) and the control resolved nothing either"
            )
        else:
            res.consistency = "inconsistent"
            res.reason = (
                f"the system resolver failed ({fail}) while {names} resolved "
                f"{obs.domain} to {', '.join(sorted(ctl)[:4])}"
            )
        return res
    if set(addrs) & ctl:
        res.consistency = "consistent"
        res.reason = "the system resolver's answers overlap the control's"
        return res
    if _asns(obs, addrs) & _asns(obs, ctl):
        res.consistency = "consistent"
        res.reason = "the system resolver's answers are in the same AS as the control's"
        return res
    validated = _tls_validated(obs, addrs, host)
    if validated:
        res.consistency = "consistent"
        res.reason = f"{validated[0]} completed a validated TLS handshake for {obs.domain}"
        return res
    res.consistency = "inconsistent"
    shown = ", ".join(addrs[:4])
    if not ctl:
        res.reason = (
            f"the system resolver answered {shown} while every control resolved nothing{injection}"
        )
    elif res.bogon_only:
        kind = "loopback" if res.loopback_only else "bogon (private/reserved)"
        res.reason = (
            f"the system resolver answered only {kind} addresses ({shown}) while {names} "
            f"returned public ones{injection}"
        )
    else:
        res.reason = (
            f"the system resolver answered {shown}, which shares no address or AS with "
            f"{names} and has no validated TLS handshake for {obs.domain}{injection}"
        )
    return res


def dns_consistency(obs: Observations, fingerprints: Fingerprints | None = None) -> str | None:
    """``"consistent"``, ``"inconsistent"`` or None (no control) for the system resolver.

    The system resolver's depth-0 answers (A and AAAA; ``dns_no_answer`` on AAAA ignored) are
    compared with the control addresses: the helper's ``dns.addrs`` plus the encrypted
    (DoT/DoH) control resolvers; plain UDP/TCP control resolvers count only when no trusted
    source answered. Consistent: the host is an IP literal; or addresses intersect; or ASNs
    intersect (helper ``ip_info``, ASN > 0); or a system address completed a validated TLS
    handshake for the domain (ours, or the helper's ``ip_info`` flag 8); or the system
    resolver failed and the control resolved nothing either (expected failure).
    Inconsistent: a ``dns`` fingerprint matched (when ``fingerprints`` is given); the system
    resolver failed while the control resolved; the answers fail every test above (including
    bogon-only answers against public control ones, and answers for a name that every
    control resolved to nothing). None when no control source answered.
    """
    return analyze_dns(obs, fingerprints).consistency


# --------------------------------------------------------------------------------------------
# the decision procedure


@dataclass(slots=True)
class _Outcome:
    verdict: str
    blocking: str | None = None
    failure: str | None = None
    reason: str = ""

    @property
    def undecided(self) -> bool:
        return self.verdict == "inconclusive"


def _down(reason: str, failure: str | None = None) -> _Outcome:
    return _Outcome("down", None, failure, reason)


def _blocked(blocking: str, reason: str, failure: str | None = None) -> _Outcome:
    return _Outcome("blocked", blocking, failure, reason)


def _unknown(reason: str, failure: str | None = None) -> _Outcome:
    return _Outcome("inconclusive", None, failure, reason)


def _most_common(values: Iterable[str | None]) -> str | None:
    counts = Counter(v for v in values if v)
    return counts.most_common(1)[0][0] if counts else None


def _fingerprint_hops(obs: Observations, fps: Fingerprints) -> tuple[Match | None, Match | None]:
    """(blockpage, false positive) matched on cleartext hops with a response."""
    suppressed = None
    for hop in obs.http:
        if _is_https(hop.url) or hop.status_code is None:
            continue
        match = fps.match_http(hop)
        if match is None:
            continue
        if not match.false_positive:
            return match, suppressed
        suppressed = suppressed or match
    return None, suppressed


def _control_http_words(http: dict[str, Any] | None) -> str:
    ok = _control_http_ok(http)
    if http is None or ok is None:
        return "the test helper gave no HTTP result"
    if ok:
        return f"the test helper fetched the URL (status {http.get('status_code')})"
    return f"the test helper's fetch failed too ({F.from_helper(http.get('failure'))})"


def _after_connection_failure(
    obs: Observations, hop: HTTPRequest | None, depth: int, dns: DNSAnalysis
) -> _Outcome:
    """Rules 5–8: no connection was made at ``depth``."""
    chttp = _control_http(obs)
    chttp_ok = _control_http_ok(chttp)
    response = obs.control.response or {}
    url = hop.url if hop is not None else obs.url
    host = _norm_host(urlsplit(url).hostname or obs.domain)
    port = hop.port if hop is not None and hop.port else _url_port(url)
    tcps = [t for t in obs.tcp if t.depth == depth and t.port == port] or [
        t for t in obs.tcp if t.depth == depth
    ]
    connected = [t for t in tcps if t.failure is None]

    # Rule 5: TCP worked, every TLS handshake of the fetch failed.
    if connected and _is_https(url):
        handshakes = [t for t in obs.tls if t.depth == depth and t.purpose == "fetch"]
        failed = [t for t in handshakes if t.failure is not None]
        if handshakes and len(failed) == len(handshakes):
            failure = _most_common(t.failure for t in failed)
            sni = failed[0].server_name
            control = [
                _helper_ok((response.get("tls_handshake") or {}).get(endpoint(t.ip, t.port)))
                for t in failed
            ]
            what = (
                "was reset"
                if failure == F.CONNECTION_RESET
                else "was closed mid-handshake"
                if failure == F.EOF_ERROR
                else "timed out"
                if failure == F.GENERIC_TIMEOUT
                else "failed"
            )
            ours = f"TLS handshake with SNI {sni} {what} ({failure})"
            if failure and failure.startswith("ssl_"):
                ours = f"TLS certificate for SNI {sni} did not validate ({failure})"
            if any(c is True for c in control):
                kind = (
                    "which points to SNI filtering"
                    if failure in _TLS_INTERFERENCE
                    else "which points to TLS interception"
                    if failure and failure.startswith("ssl_")
                    else "which points to TLS interference"
                )
                return _blocked(
                    "tls",
                    f"{ours} while the control's handshake to the same address succeeded, {kind}",
                    failure,
                )
            if any(c is False for c in control):
                return _down(f"{ours} and the control's handshake failed too", failure)
            if chttp_ok is True:
                return _blocked("tls", f"{ours} while the test helper fetched the URL", failure)
            if chttp_ok is False:
                return _down(f"{ours} and {_control_http_words(chttp)}", failure)
            return _unknown(f"{ours} and there is no TLS control to compare with", failure)

    # Rule 6: every TCP connect failed.
    if tcps and not connected:
        failure = _most_common(t.failure for t in tcps)
        if depth > 0:
            ours = f"connecting to the redirect target {host} failed ({failure})"
            if chttp_ok is True:
                return _blocked(
                    "http-failure", f"{ours} while {_control_http_words(chttp)}", failure
                )
            if chttp_ok is False:
                return _down(f"{ours} and {_control_http_words(chttp)}", failure)
            return _unknown(f"{ours} and there is no control to compare with", failure)
        helper_tcp = response.get("tcp_connect") or {}
        compared = []
        for t in tcps:
            # A vantage without IPv6 says network_unreachable on every v6 address: not a block.
            if ":" in t.ip and t.failure in F.UNREACHABLE:
                continue
            compared.append(_helper_ok(helper_tcp.get(endpoint(t.ip, t.port))))
        where = ", ".join(endpoint(t.ip, t.port) for t in tcps[:3])
        ours = f"TCP connect to {where} failed ({failure})"
        if any(c is True for c in compared):
            return _blocked(
                "tcp_ip", f"{ours} while the test helper connected to the same address", failure
            )
        if any(c is False for c in compared):
            return _down(f"{ours} and the test helper could not connect either", failure)
        return _unknown(f"{ours} and there is no TCP control for these addresses", failure)

    # Rules 7-8: DNS.
    if depth == 0:
        if not dns.system_addrs:
            fail = dns.system_failure or F.DNS_NO_ANSWER
            if dns.control_addrs:
                return _blocked(
                    "dns",
                    f"the system resolver failed ({fail}) for {obs.domain} while the control "
                    f"resolved it to {', '.join(sorted(dns.control_addrs)[:4])}",
                    fail,
                )
            if dns.control_answered:
                return _down(
                    f"the system resolver failed ({fail}) and the control resolved nothing either",
                    fail,
                )
            return _unknown(f"the system resolver failed ({fail}) with no DNS control", fail)
        public_control = [a for a in dns.control_addrs if not is_bogon(a)]
        if dns.bogon_only:
            kind = "loopback" if dns.loopback_only else "bogon"
            shown = ", ".join(dns.system_addrs[:4])
            if public_control:
                return _blocked(
                    "dns",
                    f"the system resolver answered only {kind} addresses ({shown}) while the "
                    "control has public ones",
                )
            if dns.control_answered and dns.control_addrs:
                return _down(f"both the system resolver and the control answered {kind} addresses")
        return _unknown("no connection was attempted and no rule explains why")

    # A redirect target whose name did not resolve.
    target_addrs, target_fail, asked = _system_lookup(obs, depth, host)
    if asked and not target_addrs:
        ours = f"the system resolver failed ({target_fail}) for the redirect target {host}"
        if chttp_ok is True:
            return _blocked("dns", f"{ours} while {_control_http_words(chttp)}", target_fail)
        if chttp_ok is False:
            return _down(f"{ours} and {_control_http_words(chttp)}", target_fail)
        return _unknown(f"{ours} and there is no control to compare with", target_fail)
    return _unknown(f"the redirect to {host} made no connection and no rule explains why")


def _decide(
    obs: Observations, dns: DNSAnalysis, blockpage: Match | None
) -> tuple[_Outcome, dict[str, Any]]:
    """Rules 3–8 (control usable)."""
    chttp = _control_http(obs)
    chttp_ok = _control_http_ok(chttp)
    diff: dict[str, Any] = {}
    last = obs.http[-1] if obs.http else None

    if blockpage is not None:
        return (
            _blocked(
                "http-diff",
                f"the response matches the known block page fingerprint {blockpage.id}",
            ),
            diff,
        )

    if last is not None and _is_final(last):
        if _is_https(last.url):
            return _Outcome(
                "accessible",
                reason=f"the page was fetched over validated HTTPS (status {last.status_code})",
            ), diff
        if chttp_ok is not True:
            return _unknown(
                f"a cleartext response (status {last.status_code}) was received but "
                f"{_control_http_words(chttp)}, so there is nothing to compare it with"
            ), diff
        diff = http_diff(last, chttp)
        if _no_diff(diff):
            return _Outcome(
                "accessible",
                reason=f"the cleartext response (status {last.status_code}) matches the control's",
            ), diff
        differs = [
            name
            for key, name in (
                ("status_code_match", "status code"),
                ("body_length_match", "body length"),
                ("headers_match", "headers"),
                ("title_match", "title"),
            )
            if diff[key] is False
        ]
        listed = ", ".join(differs[:-1]) + " and " + differs[-1] if len(differs) > 1 else ""
        listed = listed or (differs[0] if differs else "status or content")
        return _blocked(
            "http-diff",
            f"the cleartext response (status {last.status_code}) differs from the control's "
            f"(status {(chttp or {}).get('status_code')}) in {listed}, and matches no known "
            "block page",
        ), diff

    too_many = last is not None and last.failure == F.TOO_MANY_REDIRECTS
    if last is not None and last.failure is not None and (last.ip is not None or too_many):
        fail = last.failure
        if fail == F.INTERRUPTED:
            return _unknown("the measurement was interrupted", fail), diff
        if fail == F.TOO_MANY_REDIRECTS:
            if chttp_ok is False:
                return _down(
                    f"the fetch stopped after too many redirects and {_control_http_words(chttp)}",
                    fail,
                ), diff
            if chttp_ok is None:
                return _unknown(
                    "the fetch stopped after too many redirects and the test helper gave no "
                    "HTTP result",
                    fail,
                ), diff
            return _blocked(
                "http-failure",
                f"the fetch stopped after too many redirects while {_control_http_words(chttp)}",
                fail,
            ), diff
        ours = f"the HTTP request to {last.url} via {last.ip} failed after connecting ({fail})"
        if chttp_ok is False:
            return _down(f"{ours} and {_control_http_words(chttp)}", fail), diff
        if chttp_ok is None:
            return _unknown(f"{ours} and the test helper gave no HTTP result", fail), diff
        return _blocked("http-failure", f"{ours} while {_control_http_words(chttp)}", fail), diff

    depth = last.depth if last is not None else 0
    return _after_connection_failure(obs, last, depth, dns), diff


def offline_verdict() -> Verdict:
    """The verdict of every target of a run that :func:`is_offline` flags."""
    return Verdict(
        "inconclusive",
        reason="The vantage point was offline during this run (no control and no network "
        "reachable), so nothing can be concluded",
    )


def analyze(
    obs: Observations, *, fingerprints: Fingerprints | None = None, offline: bool = False
) -> Verdict:
    """The verdict for one target (pure).

    Rules, first match wins (OONI LTE §6.1 with the changes listed in the module docstring):
    0. ``offline`` (see :func:`is_offline`) → inconclusive.
    1. DNS consistency (:func:`analyze_dns`), used by the override below.
    2. No usable control (no helper response, no control resolver answered): a validated
       HTTPS final response → accessible, else inconclusive (a blockpage fingerprint is
       reported, but the verdict stays inconclusive).
    3. A blockpage fingerprint on a cleartext hop → blocked ``http-diff``, confirmed. A final
       response over HTTPS → accessible. Over cleartext: helper fetch failed → inconclusive;
       :func:`http_diff` says same → accessible, else blocked ``http-diff``.
    4. Connected, then the HTTP round trip failed: helper failed too → down; no helper HTTP
       data → inconclusive; else ``http-failure`` (too many redirects: same rule).
    5. TCP connected but every TLS handshake failed: helper's handshake to the endpoint ok
       (or, without per-endpoint data, its fetch ok) → ``tls``; helper failed → down.
    6. Every TCP connect failed: helper connected → ``tcp_ip`` (``http-failure`` on a
       redirect hop); helper failed → down.
    7. The system resolver failed: control resolved → ``dns``; control failed too → down.
    8. Only bogon/loopback answers while the control has public ones → ``dns``.

    Override: inconsistent DNS turns every outcome except accessible into blocked ``dns``.
    """
    if offline:
        return offline_verdict()
    fps = fingerprints if fingerprints is not None else default_fingerprints()
    dns = analyze_dns(obs, fps)
    blockpage, suppressed = _fingerprint_hops(obs, fps)
    shown = blockpage or dns.fingerprint
    verdict = Verdict(
        "inconclusive",
        dns_consistency=dns.consistency,
        blockpage=shown.id if shown else None,
        confirmed=bool(blockpage or dns.fingerprint),
    )
    last = obs.http[-1] if obs.http else None

    if obs.control.response is None and not dns.control_answered:
        why = f" ({obs.control.failure})" if obs.control.failure else ""
        if blockpage or dns.fingerprint:
            verdict.reason = (
                f"the response matches the block page fingerprint {verdict.blockpage}, but no "
                f"control was available{why}, so the result stays inconclusive"
            )
        elif last is not None and _is_final(last) and _is_https(last.url):
            verdict.verdict, verdict.accessible = "accessible", True
            verdict.reason = (
                f"the page was fetched over validated HTTPS (status {last.status_code}); "
                f"no control was available{why}"
            )
        else:
            verdict.reason = f"no test helper or control resolver answered{why}"
            if last is not None:
                verdict.failure = last.failure
        verdict.reason = verdict.reason[:1].upper() + verdict.reason[1:]
        return verdict

    outcome, diff = _decide(obs, dns, blockpage)
    for key, value in diff.items():
        setattr(verdict, key, value)
    if suppressed and not blockpage and outcome.blocking == "http-diff":
        outcome.reason += (
            f" (it matched a block page pattern, but also the known false positive {suppressed.id})"
        )
    if (
        dns.consistency == "inconsistent"
        and outcome.verdict != "accessible"
        and outcome.blocking != "dns"
    ):
        after = outcome.reason
        outcome = _blocked(
            "dns", f"DNS is inconsistent: {dns.reason}; then {after}", outcome.failure
        )
    elif outcome.blocking == "dns" and dns.consistency == "inconsistent" and dns.reason:
        if dns.injection or dns.fingerprint:
            outcome.reason = f"DNS is inconsistent: {dns.reason}; then {outcome.reason}"
    verdict.verdict = outcome.verdict
    verdict.blocking = outcome.blocking
    verdict.failure = outcome.failure
    verdict.reason = outcome.reason[:1].upper() + outcome.reason[1:]
    verdict.accessible = {"accessible": True, "blocked": False, "down": False}.get(outcome.verdict)
    return verdict


# --------------------------------------------------------------------------------------------
# run-level guard


def _first_failure(obs: Observations) -> tuple[str, str] | None:
    """(step, failure) of the first step that failed for this target, if any."""
    host = _norm_host(obs.domain)
    addrs, fail, asked = _system_lookup(obs, 0, host)
    if asked and not addrs:
        return "dns", fail or F.DNS_NO_ANSWER
    tcps = [t for t in obs.tcp if t.depth == 0]
    if tcps and all(t.failure for t in tcps):
        return "tcp", _most_common(t.failure for t in tcps) or ""
    tls = [t for t in obs.tls if t.depth == 0 and t.purpose == "fetch"]
    if tls and all(t.failure for t in tls):
        return "tls", _most_common(t.failure for t in tls) or ""
    if obs.http and obs.http[0].failure:
        return "http", obs.http[0].failure
    return None


OfflineSigns = tuple[bool, tuple[str, str] | None]


def offline_signs(obs: Observations) -> OfflineSigns:
    """What the offline guard needs of one target: whether any control answered (helper or
    control resolver), and the first step that failed with its failure. Small enough to keep
    for every target of a long run."""
    answered = obs.control.response is not None
    if not answered:
        trusted, plain = _control_sources(obs, _norm_host(obs.domain))
        answered = any(s.answered for s in trusted + plain)
    return answered, _first_failure(obs)


def is_offline(observations: Sequence[Observations | OfflineSigns]) -> bool:
    """True when a run's results say the vantage itself was offline (pure, run-level guard).

    Takes the run's observations, or their :func:`offline_signs`. Two signs, either suffices:

    * no control resolver and no test helper answered for *any* target (we could not reach
      the outside at all); or
    * with at least 5 targets, ≥ 90 % of them failed at the same first step (system DNS, TCP,
      TLS or HTTP) with the same unreachable/timeout failure (``host_unreachable``,
      ``network_unreachable``, ``network_down``, ``generic_timeout_error``): censorship is
      per-site, a dead uplink is not.

    An empty list is not offline. The caller passes ``offline=True`` to :func:`analyze` for
    every target of an offline run.
    """
    if not observations:
        return False
    signs = [o if isinstance(o, tuple) else offline_signs(o) for o in observations]
    if not any(answered for answered, _ in signs):
        return True
    if len(signs) < 5:
        return False
    keys = Counter(first for _, first in signs if first is not None)
    for (_, failure), count in keys.most_common():
        if failure in OFFLINE_FAILURES and count >= 0.9 * len(signs):
            return True
    return False
