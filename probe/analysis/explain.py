"""Sentences from evidence: what a researcher reads in a verdict's ``reason``.

The decision (:mod:`probe.analysis.decision`) records *what* it compared as
:class:`~probe.model.records.Evidence`; this module only words it, so reports can lay the same
evidence out as tables and the wording can change without touching a rule. Each ``finding``
has one sentence builder in :data:`SENTENCES`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..model.records import Evidence, Finding, Verdict


def _list(values: Any, limit: int = 4) -> str:
    if not values:
        return "nothing"
    items = [str(v) for v in values]
    return ", ".join(items[:limit]) + (
        f" and {len(items) - limit} more" if len(items) > limit else ""
    )


def _http_control(control: dict[str, Any], joiner: str = "while") -> str:
    """The helper's fetch, as a clause: ``while the test helper fetched the URL ...``."""
    state = control.get("http")
    if state == "ok":
        return f"{joiner} the test helper fetched the URL (status {control.get('status')})"
    if state == "failed":
        return f"and the test helper's fetch failed too ({control.get('failure')})"
    return "and the test helper gave no HTTP result"


def _title(value: Any) -> str:
    # Quoted as it came, not repr()'d: whatever shows a reason escapes it, once
    # (probe.model.text.printable), as it does every stored text.
    return f"'{value}'" if value else "none"


def _https_ok(e: Evidence) -> str:
    return f"the page was fetched over validated HTTPS (status {e.ours.get('status')})"


def _no_control(e: Evidence) -> str:
    why = f" ({e.control['failure']})" if e.control.get("failure") else ""
    return f"no test helper or control resolver answered{why}"


def _blockpage_without_control(e: Evidence) -> str:
    why = f" ({e.control['failure']})" if e.control.get("failure") else ""
    return (
        f"the response matches the block page fingerprint {e.ours.get('fingerprint')}, but no "
        f"control was available{why}, so the result stays inconclusive"
    )


def _blockpage(e: Evidence) -> str:
    return (
        f"the response to {e.ours.get('url')} matches the known block page fingerprint "
        f"{e.ours.get('fingerprint')}"
    )


def _page_without_control(e: Evidence) -> str:
    state = e.control.get("http")
    helper = (
        f"the test helper's fetch failed ({e.control.get('failure')})"
        if state == "failed"
        else "the test helper gave no HTTP result"
    )
    return (
        f"a page that TLS does not vouch for (status {e.ours.get('status')}) was received but "
        f"{helper}, so there is nothing to compare it with"
    )


def _page_same(e: Evidence) -> str:
    return (
        f"the page (status {e.ours.get('status')}, title {_title(e.ours.get('title'))}) matches "
        f"the control's by its {e.ours.get('by')}"
    )


def _page_differs(e: Evidence) -> str:
    text = (
        f"the page (status {e.ours.get('status')}, title {_title(e.ours.get('title'))}, "
        f"{e.ours.get('body_length')} bytes) differs from the control's (status "
        f"{e.control.get('status')}, title {_title(e.control.get('title'))}, "
        f"{e.control.get('body_length')} bytes) in its {e.ours.get('by')}, and matches no "
        "known block page"
    )
    if e.ours.get("false_positive"):
        text += (
            " (it matched a block page pattern, but also the known false positive "
            f"{e.ours['false_positive']})"
        )
    return text


def _page_not_comparable(e: Evidence) -> str:
    return (
        f"the page (status {e.ours.get('status')}) cannot be compared with the control's: the "
        f"test helper got status {e.control.get('status')}, not the page"
    )


def _interrupted(e: Evidence) -> str:
    return "the measurement was interrupted"


def _too_many_redirects(e: Evidence) -> str:
    return f"the fetch stopped after too many redirects {_http_control(e.control)}"


def _http_failed(e: Evidence) -> str:
    return (
        f"the HTTP request to {e.ours.get('url')} via {e.ours.get('ip')} failed after "
        f"connecting ({e.ours.get('failure')}) {_http_control(e.control)}"
    )


_TLS_WHAT = {
    "connection_reset": "was reset",
    "eof_error": "was closed mid-handshake",
    "generic_timeout_error": "timed out",
}
_POINTS_TO = {
    "sni_filtering": "which points to SNI filtering",
    "interception": "which points to TLS interception",
    "interference": "which points to TLS interference",
}


def _tls_failed(e: Evidence) -> str:
    failure = e.ours.get("failure") or ""
    sni = e.ours.get("sni")
    if failure.startswith("ssl_"):
        ours = f"the TLS certificate for SNI {sni} did not validate ({failure})"
    else:
        ours = f"the TLS handshake with SNI {sni} {_TLS_WHAT.get(failure, 'failed')} ({failure})"
    tls = e.control.get("tls")
    if tls == "ok":
        points = _POINTS_TO.get(e.control.get("points_to", ""), "")
        return f"{ours} while the control's handshake to the same address succeeded, {points}"
    if tls == "failed":
        return f"{ours} and the control's handshake failed too"
    return f"{ours} {_http_control(e.control)}"


def _tcp_failed(e: Evidence) -> str:
    ours = f"TCP connect to {_list(e.ours.get('endpoints'), 3)} failed ({e.ours.get('failure')})"
    tcp = e.control.get("tcp")
    if tcp == "ok":
        return f"{ours} while the test helper connected to the same address"
    if tcp == "failed":
        return f"{ours} and the test helper could not connect either"
    return f"{ours} and there is no TCP control for these addresses"


def _redirect_tcp_failed(e: Evidence) -> str:
    return (
        f"connecting to the redirect target {e.ours.get('host')} failed "
        f"({e.ours.get('failure')}) {_http_control(e.control)}"
    )


def _system_resolver_failed(e: Evidence) -> str:
    ours = f"the system resolver failed ({e.ours.get('failure')}) for {e.ours.get('host')}"
    addresses = e.control.get("addresses")
    if addresses:
        return f"{ours} while the control resolved it to {_list(addresses)}"
    if addresses is None:
        return f"{ours} with no DNS control"
    return f"{ours} and the control resolved nothing either"


def _resolver_unreachable(e: Evidence) -> str:
    return f"the network's resolver could not be reached ({e.ours.get('failure')})"


def _bogon_answer(e: Evidence) -> str:
    kind = "loopback" if e.ours.get("loopback") else "bogon (private/reserved)"
    ours = f"the system resolver answered only {kind} addresses ({_list(e.ours.get('addresses'))})"
    if e.control.get("addresses"):
        return f"{ours} while the control has public ones ({_list(e.control['addresses'])})"
    return f"{ours} and so did the control"


def _redirect_dns_failed(e: Evidence) -> str:
    return (
        f"the system resolver failed ({e.ours.get('failure')}) for the redirect target "
        f"{e.ours.get('host')} {_http_control(e.control)}"
    )


def _redirect_not_followed(e: Evidence) -> str:
    return f"the fetch stopped before the redirect to {e.ours.get('url')} was followed"


def _refused_private_address(e: Evidence) -> str:
    return (
        f"the probe did not connect to {_list(e.ours.get('endpoints'), 3)}: private and "
        "reserved addresses are only measured when the target itself is one"
    )


def _refused_own_address(e: Evidence) -> str:
    return (
        f"the probe did not connect to {_list(e.ours.get('endpoints'), 3)}: a redirect or a "
        "DNS answer named the vantage's own address (its machine, or behind a NAT the home "
        "router), which is never connected to"
    )


def _no_rule(e: Evidence) -> str:
    return "no connection was attempted and no rule explains why"


def _probe_stalled(e: Evidence) -> str:
    steps = e.ours.get("steps") or []
    what = f"the {_list(steps)} step{'s' if len(steps) > 1 else ''}"
    return (
        f"{what} timed out while the probe itself stalled (its computer too busy to run it), "
        "twice, so the timeout says nothing about the network"
    )


def _sources(e: Evidence) -> str:
    return _list(e.control.get("sources"), 3) if e.control.get("sources") else "the control"


def _dns_blockpage_address(e: Evidence) -> str:
    return (
        f"the system resolver answered {_list(e.ours.get('addresses'))}, a known block-page "
        f"address (fingerprint {e.ours.get('fingerprint')})"
    )


def _dns_failed_control_resolved(e: Evidence) -> str:
    return (
        f"the system resolver failed ({e.ours.get('failure')}) while {_sources(e)} resolved "
        f"the name to {_list(e.control.get('addresses'))}"
    )


def _dns_injected(e: Evidence) -> str:
    text = (
        f"the system resolver answered {_list(e.ours.get('addresses'))}, and the plain-DNS "
        f"control {_list(e.control.get('forged_plain_dns'), 2)} got the same answer while "
        f"{_sources(e)} resolved {_list(e.control.get('addresses'))}, so the answer is "
        "injected on the path"
    )
    if e.ours.get("tls_validated"):
        text += " (the address it points to passes TLS through to the real site)"
    return text


def _dns_ghost_answer(e: Evidence) -> str:
    return (
        f"the system resolver answered {_list(e.ours.get('addresses'))} while every control "
        "resolved nothing"
    )


def _dns_bogon_answer(e: Evidence) -> str:
    kind = "loopback" if e.ours.get("loopback") else "bogon (private/reserved)"
    return (
        f"the system resolver answered only {kind} addresses ({_list(e.ours.get('addresses'))})"
        f" while {_sources(e)} returned public ones"
    )


def _dns_answer_differs(e: Evidence) -> str:
    return (
        f"the system resolver answered {_list(e.ours.get('addresses'))}, which shares no "
        f"address or AS with {_sources(e)} ({_list(e.control.get('addresses'))}) and has no "
        "validated TLS handshake"
    )


#: finding -> sentence. The ``dns_*`` findings are DNS consistency's.
SENTENCES: dict[str, Callable[[Evidence], str]] = {
    Finding.HTTPS_OK: _https_ok,
    Finding.NO_CONTROL: _no_control,
    Finding.BLOCKPAGE_WITHOUT_CONTROL: _blockpage_without_control,
    Finding.BLOCKPAGE_FINGERPRINT: _blockpage,
    Finding.PAGE_WITHOUT_CONTROL: _page_without_control,
    Finding.PAGE_SAME: _page_same,
    Finding.PAGE_DIFFERS: _page_differs,
    Finding.PAGE_NOT_COMPARABLE: _page_not_comparable,
    Finding.INTERRUPTED: _interrupted,
    Finding.TOO_MANY_REDIRECTS: _too_many_redirects,
    Finding.HTTP_FAILED: _http_failed,
    Finding.TLS_FAILED: _tls_failed,
    Finding.TCP_FAILED: _tcp_failed,
    Finding.REDIRECT_TCP_FAILED: _redirect_tcp_failed,
    Finding.SYSTEM_RESOLVER_FAILED: _system_resolver_failed,
    Finding.RESOLVER_UNREACHABLE: _resolver_unreachable,
    Finding.BOGON_ANSWER: _bogon_answer,
    Finding.REDIRECT_DNS_FAILED: _redirect_dns_failed,
    Finding.REDIRECT_NOT_FOLLOWED: _redirect_not_followed,
    Finding.REFUSED_PRIVATE_ADDRESS: _refused_private_address,
    Finding.REFUSED_OWN_ADDRESS: _refused_own_address,
    Finding.NO_RULE: _no_rule,
    Finding.PROBE_STALLED: _probe_stalled,
    Finding.DNS_BLOCKPAGE_ADDRESS: _dns_blockpage_address,
    Finding.DNS_FAILED_CONTROL_RESOLVED: _dns_failed_control_resolved,
    Finding.DNS_INJECTED: _dns_injected,
    Finding.DNS_GHOST_ANSWER: _dns_ghost_answer,
    Finding.DNS_BOGON_ANSWER: _dns_bogon_answer,
    Finding.DNS_ANSWER_DIFFERS: _dns_answer_differs,
}


def sentence(evidence: Evidence) -> str:
    """One piece of evidence in words."""
    return SENTENCES[evidence.finding](evidence)


def explain(verdict: Verdict) -> str:
    """The verdict's evidence as the sentence stored in ``reason``."""
    parts = [sentence(e) for e in verdict.evidence]
    if not parts:
        return ""
    is_dns = [e.finding.startswith("dns_") for e in verdict.evidence]
    if verdict.verdict == "accessible" and is_dns[-1] and len(parts) > 1:
        text = f"{'; '.join(parts[:-1])}; but DNS was tampered with: {parts[-1]}"
    elif is_dns[0] and len(parts) > 1:
        text = f"DNS is inconsistent: {parts[0]}; then {'; '.join(parts[1:])}"
    else:
        text = "; ".join(parts)
    return text[:1].upper() + text[1:]


def _short(values: Any, limit: int = 2) -> str:
    return _list(values, limit).replace(" and ", " +")


def brief(evidence: Evidence) -> str:
    """The deciding evidence in a few words, for a table column: ours against the control's."""
    o, c, finding = evidence.ours, evidence.control, evidence.finding
    if finding.startswith("dns_") and o.get("addresses") is not None:
        return f"DNS {_short(o.get('addresses'))} vs control {_short(c.get('addresses'))}"
    if finding in (Finding.DNS_FAILED_CONTROL_RESOLVED, Finding.SYSTEM_RESOLVER_FAILED):
        return f"DNS {o.get('failure')} vs control {_short(c.get('addresses'))}"
    if finding in (Finding.BOGON_ANSWER,):
        return f"DNS {_short(o.get('addresses'))} vs control {_short(c.get('addresses'))}"
    if finding == Finding.TLS_FAILED:
        return f"TLS {o.get('failure')} (SNI {o.get('sni')}); control TLS {c.get('tls') or '?'}"
    if finding == Finding.TCP_FAILED:
        return f"TCP {o.get('failure')}; control TCP {c.get('tcp') or '?'}"
    if finding in (Finding.BLOCKPAGE_FINGERPRINT, Finding.BLOCKPAGE_WITHOUT_CONTROL):
        return f"block page {o.get('fingerprint')}"
    if finding in (Finding.PAGE_DIFFERS, Finding.PAGE_SAME, Finding.PAGE_NOT_COMPARABLE):
        return (
            f"page {o.get('status')} {_title(o.get('title'))} vs control {c.get('status')} "
            f"{_title(c.get('title'))}"
        )
    if finding == Finding.HTTPS_OK:
        return f"HTTPS {o.get('status')}"
    failure = o.get("failure") or c.get("failure")
    return f"{finding.replace('_', ' ')}" + (f" ({failure})" if failure else "")
