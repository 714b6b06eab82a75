"""From observations to a verdict: the decision procedure (pure: no I/O, no clock).

:func:`analyze` turns one :class:`~probe.model.records.Observations` into a
:class:`~probe.model.records.Verdict`, following OONI Web Connectivity LTE's classic decision
procedure (OONI's spec, nettests/ts-017-web-connectivity.md, and probe-cli's
``webconnectivitylte`` analysis) with these deliberate changes:

* ``blocking`` has a ``"tls"`` value: a TLS handshake that fails on our side (reset, EOF,
  timeout after the ClientHello, or a certificate error) while the control's handshake to
  the same endpoint succeeds. OONI calls this ``"http-failure"``.
* Pages are compared by :func:`~probe.analysis.http_comparison.compare_pages`, where a title
  or a body size far from the control's is a strong sign and a shared header name a weak one,
  so a block page no fingerprint knows is not taken for the site. A page the control did not
  see (no page, or an error page such as a CDN challenge to the helper) cannot be compared:
  ``inconclusive``, never ``http-diff``; a false "blocked" discredits the volunteer.
* A page is authenticated by TLS only when every hop of the fetch was HTTPS or the final host
  is the target's own site: a cleartext redirect to another host can be injected, so that final
  page is compared with the control's like a cleartext one.
* A redirect whose next hop never happened (its name did not resolve, or the run stopped) is
  not the final answer: what stopped the fetch at the next hop decides.
* DNS consistency also uses encrypted control resolvers (DoT/DoH), TLS validation of the
  answers (ours and the helper's ``ip_info`` flag 8), and ``dns`` fingerprints; a plain-DNS
  control that got the same forged answer is injection even when the address passes TLS
  through to the real site (the page is then accessible, and the DNS tampering is recorded).
* A confirmed blockpage fingerprint on any cleartext hop (a redirect's ``Location`` to a known
  block page, or the page itself) is blocking ``"http-diff"`` with ``confirmed`` set.
* ``body_proportion`` is None, not OONI's 0, when it is not computed.
* A step that timed out while the probe's own event loop stalled, twice
  (:data:`~probe.analysis.observed.LOOP_STALLED`), is no evidence: a verdict that would be
  blocked or down is inconclusive then, unless what decided does not depend on time (a block
  page fingerprint, a page that differs from the control's, DNS injection).

The verdict carries its evidence (:class:`~probe.model.records.Evidence`: what was compared
with what); :mod:`probe.analysis.explain` turns it into sentences. Everything here is
deterministic, so stored or imported observations can be re-analysed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..model import failures as F
from ..model.addresses import endpoint, is_bogon
from ..model.http import REDIRECT_CODES
from ..model.records import (
    ACCESSIBLE,
    Blocking,
    Evidence,
    Finding,
    HTTPRequest,
    Observations,
    TCPConnect,
    Verdict,
    VerdictName,
)
from ..ooni.helper_protocol import entry_ok, http_entry, http_ok, our_failure
from .dns_consistency import DNSAnalysis, analyze_dns
from .explain import explain
from .fingerprints import Fingerprints, Match
from .fingerprints import default as default_fingerprints
from .http_comparison import compare_pages, http_diff
from .observed import (
    LOOP_STALLED,
    is_https,
    most_common,
    norm_host,
    stalled_steps,
    system_lookup,
    url_port,
)

#: TLS failures typical of SNI filtering (as opposed to certificate errors).
_TLS_INTERFERENCE = frozenset({F.CONNECTION_RESET, F.EOF_ERROR, F.GENERIC_TIMEOUT})


@dataclass(slots=True)
class _Outcome:
    verdict: VerdictName
    blocking: Blocking | None = None
    failure: str | None = None
    evidence: list[Evidence] = field(default_factory=list)


def _accessible(*evidence: Evidence) -> _Outcome:
    return _Outcome("accessible", None, None, list(evidence))


def _blocked(blocking: Blocking, evidence: Evidence, failure: str | None = None) -> _Outcome:
    return _Outcome("blocked", blocking, failure, [evidence])


def _down(evidence: Evidence, failure: str | None = None) -> _Outcome:
    return _Outcome("down", None, failure, [evidence])


def _unknown(evidence: Evidence, failure: str | None = None) -> _Outcome:
    return _Outcome("inconclusive", None, failure, [evidence])


def _by_control(
    ok: bool | None, blocking: Blocking, evidence: Evidence, failure: str | None
) -> _Outcome:
    """Our step failed: blocked when the control's succeeded, down when it failed too."""
    if ok is True:
        return _blocked(blocking, evidence, failure)
    if ok is False:
        return _down(evidence, failure)
    return _unknown(evidence, failure)


def _control_http_facts(http: dict[str, Any] | None) -> dict[str, Any]:
    """What the helper's fetch saw, for evidence: ``http`` is "ok", "failed" or None."""
    ok = http_ok(http)
    if http is None or ok is None:
        return {"http": None}
    if ok:
        return {"http": "ok", "status": http.get("status_code"), "title": http.get("title")}
    return {"http": "failed", "failure": our_failure(http.get("failure"))}


# --------------------------------------------------------------------------------------------
# reading the fetch


def _same_site(host: str, domain: str) -> bool:
    """``host`` is ``domain`` or a subdomain of it, or the other way round (``www.``)."""
    host, domain = norm_host(host), norm_host(domain)
    return host == domain or host.endswith("." + domain) or domain.endswith("." + host)


def _unfollowed_redirect(obs: Observations, hop: HTTPRequest) -> bool:
    """A redirect that should have led to another hop, but none was recorded."""
    return (
        hop.failure is None
        and hop.status_code in REDIRECT_CODES
        and hop.location is not None
        and hop is obs.http[-1]
    )


def _final_page(obs: Observations) -> HTTPRequest | None:
    """The last hop, when it is a response that ends the fetch."""
    if not obs.http:
        return None
    last = obs.http[-1]
    if last.failure is not None or last.status_code is None or _unfollowed_redirect(obs, last):
        return None
    return last


def _authenticated(obs: Observations, page: HTTPRequest) -> bool:
    """TLS proves this hop is the site's: HTTPS all the way to it, or HTTPS on the site itself.

    After a cleartext hop, an HTTPS page on another host proves only that we reached that
    host: the redirect to it may have been injected.
    """
    if not is_https(page.url):
        return False
    host = urlsplit(page.url).hostname or ""
    before = obs.http[: obs.http.index(page) + 1] if page in obs.http else [page]
    return all(is_https(hop.url) for hop in before) or _same_site(host, obs.domain)


def _fingerprint_hops(obs: Observations, fps: Fingerprints) -> tuple[Match | None, Match | None]:
    """(blockpage, false positive) matched on hops with a response that TLS does not vouch for."""
    suppressed = None
    for hop in obs.http:
        if (hop.status_code is None and hop.raw is None) or _authenticated(obs, hop):
            continue
        match = fps.match_http(hop)
        if match is None:
            continue
        if not match.false_positive:
            return match, suppressed
        suppressed = suppressed or match
    return None, suppressed


# --------------------------------------------------------------------------------------------
# the rules


def _page_outcome(
    obs: Observations, page: HTTPRequest, chttp: dict[str, Any] | None, diff: dict[str, Any]
) -> _Outcome:
    """Rule 3: we got a final page."""
    ours: dict[str, Any] = {"url": page.url, "status": page.status_code}
    if _authenticated(obs, page):
        return _accessible(Evidence(Finding.HTTPS_OK, "http", ours))
    ours |= {"title": page.title, "body_length": page.body_length}
    control = _control_http_facts(chttp)
    if chttp is None or http_ok(chttp) is not True:
        return _unknown(Evidence(Finding.PAGE_WITHOUT_CONTROL, "http", ours, control))
    control["body_length"] = chttp.get("body_length")
    comparison = compare_pages(page, chttp, diff)
    ours["sign"] = {"title": comparison.title, "body": comparison.body}
    if comparison.same is True:
        return _accessible(
            Evidence(Finding.PAGE_SAME, "http", ours | {"by": comparison.why}, control)
        )
    if comparison.same is None:
        evidence = Evidence(
            Finding.PAGE_NOT_COMPARABLE, "http", ours | {"by": comparison.why}, control
        )
        return _unknown(evidence)
    evidence = Evidence(Finding.PAGE_DIFFERS, "http", ours | {"by": comparison.why}, control)
    return _blocked("http-diff", evidence)


def _http_failure_outcome(obs: Observations, hop: HTTPRequest, chttp_ok: bool | None) -> _Outcome:
    """Rule 4: connected, then the HTTP exchange failed (or too many redirects)."""
    fail = hop.failure
    control = _control_http_facts(http_entry(obs.control.response))
    if fail == F.INTERRUPTED:
        return _unknown(Evidence(Finding.INTERRUPTED, "http", {"url": hop.url}), fail)
    if fail == F.TOO_MANY_REDIRECTS:
        evidence = Evidence(Finding.TOO_MANY_REDIRECTS, "http", {"url": hop.url}, control)
        return _by_control(chttp_ok, "http-failure", evidence, fail)
    ours: dict[str, Any] = {"url": hop.url, "ip": hop.ip, "failure": fail}
    return _by_control(
        chttp_ok, "http-failure", Evidence(Finding.HTTP_FAILED, "http", ours, control), fail
    )


def _tls_outcome(
    obs: Observations, depth: int, chttp_ok: bool | None, control: dict[str, Any]
) -> _Outcome | None:
    """Rule 5: TCP worked, every TLS handshake of the fetch failed."""
    handshakes = [t for t in obs.tls if t.depth == depth and t.purpose == "fetch"]
    failed = [t for t in handshakes if t.failure is not None]
    if not handshakes or len(failed) != len(handshakes):
        return None
    failure = most_common(t.failure for t in failed)
    helper_tls = (obs.control.response or {}).get("tls_handshake") or {}
    compared = [entry_ok(helper_tls.get(endpoint(t.ip, t.port))) for t in failed]
    ours: dict[str, Any] = {
        "sni": failed[0].server_name,
        "failure": failure,
        "endpoints": [endpoint(t.ip, t.port) for t in failed[:3]],
        "cert_sha256": failed[0].cert_sha256,
    }
    if any(c is True for c in compared):
        kind = (
            "sni_filtering"
            if failure in _TLS_INTERFERENCE
            else "interception"
            if failure and failure.startswith("ssl_")
            else "interference"
        )
        evidence = Evidence(Finding.TLS_FAILED, "tls", ours, {"tls": "ok", "points_to": kind})
        return _blocked("tls", evidence, failure)
    if any(c is False for c in compared):
        return _down(Evidence(Finding.TLS_FAILED, "tls", ours, {"tls": "failed"}), failure)
    return _by_control(chttp_ok, "tls", Evidence(Finding.TLS_FAILED, "tls", ours, control), failure)


def _tcp_outcome(
    obs: Observations,
    tcps: list[TCPConnect],
    depth: int,
    host: str,
    chttp_ok: bool | None,
    control: dict[str, Any],
) -> _Outcome:
    """Rule 6: every TCP connect failed."""
    failure = most_common(t.failure for t in tcps)
    ours: dict[str, Any] = {
        "endpoints": [endpoint(t.ip, t.port) for t in tcps[:3]],
        "failure": failure,
    }
    if depth > 0:
        evidence = Evidence(Finding.REDIRECT_TCP_FAILED, "tcp", ours | {"host": host}, control)
        return _by_control(chttp_ok, "http-failure", evidence, failure)
    helper_tcp = (obs.control.response or {}).get("tcp_connect") or {}
    compared = [
        entry_ok(helper_tcp.get(endpoint(t.ip, t.port)))
        for t in tcps
        # A vantage without IPv6 says network_unreachable on every v6 address: not a block.
        if not (":" in t.ip and t.failure in F.UNREACHABLE)
    ]
    ok = True if any(c is True for c in compared) else False if False in compared else None
    tcp_control = None if ok is None else "ok" if ok else "failed"
    evidence = Evidence(Finding.TCP_FAILED, "tcp", ours, {"tcp": tcp_control})
    return _by_control(ok, "tcp_ip", evidence, failure)


def _dns_outcome(obs: Observations, dns: DNSAnalysis) -> _Outcome:
    """Rules 7–8: no connection was attempted for the URL's own host."""
    if not dns.system_addrs:
        fail = dns.system_failure or F.DNS_NO_ANSWER
        ours: dict[str, Any] = {"host": obs.domain, "failure": fail}
        if fail in F.UNREACHABLE:
            return _unknown(Evidence(Finding.RESOLVER_UNREACHABLE, "dns", ours), fail)
        control: dict[str, Any] = {"addresses": sorted(dns.control_addrs)[:4]}
        evidence = Evidence(Finding.SYSTEM_RESOLVER_FAILED, "dns", ours, control)
        if dns.control_addrs:
            return _blocked("dns", evidence, fail)
        if dns.control_answered:
            return _down(evidence, fail)
        evidence.control = {"addresses": None}
        return _unknown(evidence, fail)
    if dns.bogon_only:
        public_control = sorted(a for a in dns.control_addrs if not is_bogon(a))
        ours = {"addresses": dns.system_addrs[:4], "loopback": dns.loopback_only}
        evidence = Evidence(Finding.BOGON_ANSWER, "dns", ours, {"addresses": public_control[:4]})
        if public_control:
            return _blocked("dns", evidence)
        if dns.control_answered and dns.control_addrs:
            evidence.control = {"addresses": sorted(dns.control_addrs)[:4]}
            return _down(evidence)
    refused = [t for t in obs.tcp if t.depth == 0 and t.failure in F.REFUSED]
    if refused:
        return _refusal(refused, {})
    return _unknown(Evidence(Finding.NO_RULE, "tcp", {"url": obs.url}))


def _refusal(refused: list[TCPConnect], ours: dict[str, Any]) -> _Outcome:
    """The probe made none of the connects: bogons, or the vantage's own addresses."""
    own = any(t.failure == F.REFUSED_OWN_ADDRESS for t in refused)
    finding = Finding.REFUSED_OWN_ADDRESS if own else Finding.REFUSED_PRIVATE_ADDRESS
    ours = {"endpoints": [endpoint(t.ip, t.port) for t in refused[:3]], **ours}
    return _unknown(Evidence(finding, "tcp", ours))


def _connection_outcome(
    obs: Observations, hop: HTTPRequest | None, depth: int, dns: DNSAnalysis
) -> _Outcome:
    """Rules 5–8: no connection was made at ``depth``."""
    chttp = http_entry(obs.control.response)
    chttp_ok = http_ok(chttp)
    control = _control_http_facts(chttp)
    url = hop.url if hop is not None else obs.url
    host = norm_host(urlsplit(url).hostname or obs.domain)
    port = hop.port if hop is not None and hop.port else url_port(url)
    at_depth = [t for t in obs.tcp if t.depth == depth and t.failure not in F.REFUSED]
    tcps = [t for t in at_depth if t.port == port] or at_depth
    if any(t.failure is None for t in tcps) and is_https(url):
        tls = _tls_outcome(obs, depth, chttp_ok, control)
        if tls is not None:
            return tls
    if tcps and all(t.failure is not None for t in tcps):
        return _tcp_outcome(obs, tcps, depth, host, chttp_ok, control)
    if depth == 0:
        return _dns_outcome(obs, dns)
    # A redirect target whose name did not resolve, or that was never reached.
    addrs, fail, asked = system_lookup(obs, depth, host)
    if asked and not addrs:
        ours: dict[str, Any] = {"host": host, "failure": fail}
        evidence = Evidence(Finding.REDIRECT_DNS_FAILED, "dns", ours, control)
        return _by_control(chttp_ok, "dns", evidence, fail)
    refused = [t for t in obs.tcp if t.depth == depth and t.failure in F.REFUSED]
    if refused:
        return _refusal(refused, {"host": host})
    return _unknown(Evidence(Finding.REDIRECT_NOT_FOLLOWED, "http", {"url": url}))


def _decide(
    obs: Observations, dns: DNSAnalysis, blockpage: Match | None
) -> tuple[_Outcome, dict[str, Any]]:
    """Rules 3–8 (a control answered)."""
    chttp = http_entry(obs.control.response)
    diff: dict[str, Any] = {}
    last = obs.http[-1] if obs.http else None
    if blockpage is not None:
        where = next((h.url for h in obs.http if not _authenticated(obs, h)), obs.url)
        ours: dict[str, Any] = {"fingerprint": blockpage.id, "url": where}
        return _blocked("http-diff", Evidence(Finding.BLOCKPAGE_FINGERPRINT, "http", ours)), diff
    page = _final_page(obs)
    if page is not None:
        if chttp is not None and not _authenticated(obs, page):
            diff = http_diff(page, chttp)
        return _page_outcome(obs, page, chttp, diff), diff
    if last is not None and _unfollowed_redirect(obs, last):
        # The fetch stopped at the next hop: what stopped it decides.
        redirected = HTTPRequest(url=last.location or "", depth=last.depth + 1)
        return _connection_outcome(obs, redirected, last.depth + 1, dns), diff
    too_many = last is not None and last.failure == F.TOO_MANY_REDIRECTS
    if last is not None and last.failure is not None and (last.ip is not None or too_many):
        return _http_failure_outcome(obs, last, http_ok(chttp)), diff
    depth = last.depth if last is not None else 0
    return _connection_outcome(obs, last, depth, dns), diff


def _without_control(obs: Observations, dns: DNSAnalysis, blockpage: Match | None) -> _Outcome:
    """Rule 2: no helper answered and no control resolver answered."""
    control = {"failure": obs.control.failure}
    shown = blockpage or dns.fingerprint
    if shown is not None:
        ours: dict[str, Any] = {"fingerprint": shown.id}
        return _unknown(Evidence(Finding.BLOCKPAGE_WITHOUT_CONTROL, "control", ours, control))
    page = _final_page(obs)
    if page is not None and _authenticated(obs, page):
        ours = {"url": page.url, "status": page.status_code}
        return _accessible(
            Evidence(Finding.HTTPS_OK, "http", ours),
            Evidence(Finding.NO_CONTROL, "control", {}, control),
        )
    last = obs.http[-1] if obs.http else None
    failure = last.failure if last is not None else None
    return _unknown(Evidence(Finding.NO_CONTROL, "control", {}, control), failure)


def analyze(obs: Observations, *, fingerprints: Fingerprints | None = None) -> Verdict:
    """The verdict for one target (pure).

    Rules, first match wins (OONI Web Connectivity LTE, with the changes listed in the module
    docstring):

    1. DNS consistency (:func:`~probe.analysis.dns_consistency.analyze_dns`), used by the
       override below.
    2. No usable control (no helper response, no control resolver answered): a page
       authenticated by TLS → accessible, else inconclusive (a blockpage fingerprint is
       reported, but the verdict stays inconclusive).
    3. A blockpage fingerprint on a cleartext hop → blocked ``http-diff``, confirmed. A final
       page authenticated by TLS → accessible. Otherwise the page is compared with the
       control's: the same → accessible; different → blocked ``http-diff``; the helper's fetch
       failed, or the pages cannot be compared → inconclusive.
    4. Connected, then the HTTP exchange failed: helper failed too → down; no helper HTTP
       data → inconclusive; else ``http-failure`` (too many redirects: same rule).
    5. TCP connected but every TLS handshake failed: helper's handshake to the endpoint ok
       (or, without per-endpoint data, its fetch ok) → ``tls``; helper failed → down.
    6. Every TCP connect failed: helper connected → ``tcp_ip`` (``http-failure`` on a
       redirect hop); helper failed → down.
    7. The system resolver failed: control resolved → ``dns``; control failed too → down;
       the resolver itself unreachable (no route) → inconclusive. A redirect whose target
       did not resolve: the helper fetched the URL → ``dns``.
    8. Only bogon/loopback answers while the control has public ones → ``dns``.

    Override: inconsistent DNS turns every outcome except accessible into blocked ``dns``;
    an accessible page behind inconsistent DNS stays accessible, with the DNS evidence kept.

    Last: a step that stalled (LOOP_STALLED) turns blocked and down into inconclusive, unless
    a fingerprint, a page that differs or DNS injection decided.
    """
    fps = fingerprints if fingerprints is not None else default_fingerprints()
    dns = analyze_dns(obs, fps)
    blockpage, suppressed = _fingerprint_hops(obs, fps)
    shown = blockpage or dns.fingerprint
    verdict = Verdict(
        "inconclusive",
        dns_consistency=dns.consistency,
        blockpage=shown.id if shown else None,
        confirmed=shown is not None,
    )
    if obs.control.response is None and not dns.control_answered:
        outcome = _without_control(obs, dns, blockpage)
    else:
        outcome, diff = _decide(obs, dns, blockpage)
        for key, value in diff.items():
            setattr(verdict, key, value)
        if suppressed is not None and outcome.evidence[0].finding == Finding.PAGE_DIFFERS:
            outcome.evidence[0].ours["false_positive"] = suppressed.id
        outcome = _dns_override(outcome, dns)
    stalled = stalled_steps(obs)
    timeless = shown is not None or dns.injection or outcome.blocking == "http-diff"
    if stalled and outcome.verdict in ("blocked", "down") and not timeless:
        # What decided may be a deadline the probe missed, the DNS judgement too (a lookup or
        # the TLS validation of an answer that stalled).
        ours = {"steps": stalled, "failure": LOOP_STALLED}
        outcome = _unknown(Evidence(Finding.PROBE_STALLED, stalled[0], ours), LOOP_STALLED)
        verdict.dns_consistency = None
    verdict.verdict = outcome.verdict
    verdict.blocking = outcome.blocking
    verdict.failure = outcome.failure
    verdict.evidence = outcome.evidence
    verdict.accessible = ACCESSIBLE[outcome.verdict]
    verdict.reason = explain(verdict)
    return verdict


def _dns_override(outcome: _Outcome, dns: DNSAnalysis) -> _Outcome:
    if dns.consistency != "inconsistent" or dns.evidence is None:
        return outcome
    if outcome.verdict == "accessible":
        outcome.evidence.append(dns.evidence)
        return outcome
    if outcome.blocking != "dns":
        return _Outcome("blocked", "dns", outcome.failure, [dns.evidence, *outcome.evidence])
    if dns.injection or dns.fingerprint:
        outcome.evidence.insert(0, dns.evidence)
    return outcome
