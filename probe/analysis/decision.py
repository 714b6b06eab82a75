"""From observations to a verdict: pure functions, no I/O, no clock.

:func:`analyze` turns one :class:`~probe.records.Observations` into a
:class:`~probe.records.Verdict`, following OONI Web Connectivity LTE's classic decision
procedure (OONI's spec, nettests/ts-017-web-connectivity.md, and probe-cli's
``webconnectivitylte`` analysis) with these deliberate changes:

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

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..model import failures as F
from ..model.addresses import endpoint, is_bogon
from ..model.records import HTTPRequest, Observations, Verdict
from ..ooni.helper_protocol import entry_ok, http_entry, http_ok, our_failure
from .dns_consistency import DNSAnalysis, analyze_dns
from .fingerprints import Fingerprints, Match
from .fingerprints import default as default_fingerprints
from .http_comparison import http_diff, no_diff
from .observed import is_final, is_https, most_common, norm_host, system_lookup, url_port

#: TLS failures typical of SNI filtering (as opposed to certificate errors).
_TLS_INTERFERENCE = frozenset({F.CONNECTION_RESET, F.EOF_ERROR, F.GENERIC_TIMEOUT})

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


def _fingerprint_hops(obs: Observations, fps: Fingerprints) -> tuple[Match | None, Match | None]:
    """(blockpage, false positive) matched on cleartext hops with a response."""
    suppressed = None
    for hop in obs.http:
        if is_https(hop.url) or hop.status_code is None:
            continue
        match = fps.match_http(hop)
        if match is None:
            continue
        if not match.false_positive:
            return match, suppressed
        suppressed = suppressed or match
    return None, suppressed


def _control_http_words(http: dict[str, Any] | None) -> str:
    ok = http_ok(http)
    if http is None or ok is None:
        return "the test helper gave no HTTP result"
    if ok:
        return f"the test helper fetched the URL (status {http.get('status_code')})"
    return f"the test helper's fetch failed too ({our_failure(http.get('failure'))})"


def _after_connection_failure(
    obs: Observations, hop: HTTPRequest | None, depth: int, dns: DNSAnalysis
) -> _Outcome:
    """Rules 5–8: no connection was made at ``depth``."""
    chttp = http_entry(obs.control.response)
    chttp_ok = http_ok(chttp)
    response = obs.control.response or {}
    url = hop.url if hop is not None else obs.url
    host = norm_host(urlsplit(url).hostname or obs.domain)
    port = hop.port if hop is not None and hop.port else url_port(url)
    tcps = [t for t in obs.tcp if t.depth == depth and t.port == port] or [
        t for t in obs.tcp if t.depth == depth
    ]
    connected = [t for t in tcps if t.failure is None]

    # Rule 5: TCP worked, every TLS handshake of the fetch failed.
    if connected and is_https(url):
        handshakes = [t for t in obs.tls if t.depth == depth and t.purpose == "fetch"]
        failed = [t for t in handshakes if t.failure is not None]
        if handshakes and len(failed) == len(handshakes):
            failure = most_common(t.failure for t in failed)
            sni = failed[0].server_name
            control = [
                entry_ok((response.get("tls_handshake") or {}).get(endpoint(t.ip, t.port)))
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
        failure = most_common(t.failure for t in tcps)
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
            compared.append(entry_ok(helper_tcp.get(endpoint(t.ip, t.port))))
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
    target_addrs, target_fail, asked = system_lookup(obs, depth, host)
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
    chttp = http_entry(obs.control.response)
    chttp_ok = http_ok(chttp)
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

    if last is not None and is_final(last):
        if is_https(last.url):
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
        if no_diff(diff):
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

    Rules, first match wins (OONI Web Connectivity LTE, with the changes listed in the module
    docstring):
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
        elif last is not None and is_final(last) and is_https(last.url):
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
