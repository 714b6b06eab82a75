"""What every report format says the same way: method names and colours, networks, times,
durations and the evidence rows."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from typing import Any

from ..analysis.explain import SENTENCES
from ..model.records import Evidence
from .escape import plain
from .timeline import Event, Network, iso

METHOD_NAMES = {
    "dns": "DNS",
    "tcp_ip": "TCP/IP",
    "tls": "TLS (SNI)",
    "http-failure": "HTTP failure",
    "http-diff": "HTTP block page",
    "unknown": "unknown method",
}
#: Colours told apart with the common colour-vision deficiencies (Okabe–Ito palette).
METHOD_COLOURS = {
    "dns": "#D55E00",
    "tcp_ip": "#0072B2",
    "tls": "#E69F00",
    "http-failure": "#CC79A7",
    "http-diff": "#009E73",
    "unknown": "#555555",
}
MEASURED_COLOUR = "#DDEFD9"
#: Rows drawn in the chart at most (the tables list every network).
MAX_CHART_ROWS = 500
#: Evidence items and characters of one value shown per event.
MAX_EVIDENCE = 3
MAX_VALUE = 200


def network_name(asn: str | None) -> str:
    return asn or "unknown network"


def when(t: int | None) -> str:
    """Epoch seconds as ``YYYY-MM-DD HH:MM:SS`` (UTC), "" for None."""
    if t is None:
        return ""
    return (iso(t) or "")[:19].replace("T", " ")


def duration(seconds: int) -> str:
    """``3 d 4 h``, ``2 h 5 min``, ``40 s``."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min"
    return f"{secs} s"


def plural(count: int, word: str) -> str:
    """``1 run``, ``2 runs``, ``3 anomalies``."""
    if count == 1:
        return f"{count} {word}"
    return f"{count} {word[:-1]}ies" if word.endswith("y") else f"{count} {word}s"


def method_name(method: str | None) -> str:
    return METHOD_NAMES.get(method or "unknown", plain(method))


def methods_text(event: Event) -> str:
    return " → ".join(method_name(m) for m in event.methods)


def state_text(net: Network) -> str:
    if net.state is None:
        return "unknown (no conclusive measurement)"
    t, verdict, blocking = net.state
    if verdict == "blocked":
        return f"blocked ({method_name(blocking)}) at {when(t)} UTC"
    return f"accessible at {when(t)} UTC"


# ------------------------------------------------------------------ the evidence in words


def sentences(detail: dict[str, Any]) -> list[str]:
    """The stored evidence of a measurement as :mod:`probe.analysis.explain` words it, one
    sentence per comparison (the deciding one first); none for evidence of a shape no
    analysis wrote (a stranger's database), whose values stay in the JSON."""
    out = []
    for item in (detail.get("evidence") or [])[:MAX_EVIDENCE]:
        if not isinstance(item, dict):
            continue
        builder = SENTENCES.get(str(item.get("finding")))
        ours, control = item.get("ours", {}), item.get("control", {})
        if builder is None or not isinstance(ours, dict) or not isinstance(control, dict):
            continue
        evidence = Evidence(str(item["finding"]), item.get("step") or "control", ours, control)
        try:
            text = builder(evidence)
        except (TypeError, AttributeError, ValueError):  # a value of the wrong type
            continue
        out.append(_capital(_cut(text, 4 * MAX_VALUE)) + ".")
    return out


def part(value: Any, key: str) -> dict[str, Any]:
    """``value[key]`` when both are dicts, else an empty dict (stored data may be anything)."""
    got = value.get(key) if isinstance(value, dict) else None
    return got if isinstance(got, dict) else {}


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _cut(text: str, limit: int = MAX_VALUE) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


#: Failure strings (probe.model.failures) in words; the string itself follows in brackets.
FAILURE_WORDS = {
    "connection_reset": "the connection was reset",
    "connection_refused": "the connection was refused",
    "eof_error": "the connection was closed",
    "generic_timeout_error": "it timed out",
    "host_unreachable": "the host was unreachable",
    "network_unreachable": "the network was unreachable",
    "dns_nxdomain_error": "the name does not exist",
    "dns_no_answer": "no address in the answer",
    "dns_refused_error": "the resolver refused the query",
    "dns_servfail_error": "the resolver failed (SERVFAIL)",
    "ssl_invalid_hostname": "the certificate is not valid for the name",
    "ssl_unknown_authority": "the certificate is signed by an unknown authority",
    "ssl_invalid_certificate": "the certificate is invalid",
    "ssl_failed_handshake": "the TLS handshake failed",
}


def failure_text(failure: Any) -> str:
    """``the connection was reset (connection_reset)``; the string alone when unknown."""
    text = _cut(plain(failure))
    words = FAILURE_WORDS.get(text)
    return f"{words} ({text})" if words else text


_ENGINES = {
    "udp": "plain DNS (UDP)",
    "tcp": "DNS over TCP",
    "tls": "DNS over TLS",
    "https": "DNS over HTTPS",
}


def resolver_name(engine: Any, url: Any) -> str:
    """``DNS over HTTPS at cloudflare-dns.com``, ``plain DNS (UDP) at 8.8.8.8``."""
    kind = _ENGINES.get(plain(engine), f"DNS ({plain(engine)})")
    try:
        host = urllib.parse.urlsplit(plain(url)).hostname
    except ValueError:
        host = None
    return f"{kind} at {_cut(host or plain(url))}"


def _answer(
    side: dict[str, Any] | None, asns: dict[str, str], network: Callable[[Any], str]
) -> str:
    if not side:
        return "gave no answer"
    addresses = [a for a in side.get("addresses") or [] if isinstance(a, str)]
    if addresses:
        shown = [
            f"{_cut(a)} in {network(asns[a])}" if isinstance(asns.get(a), str) else _cut(a)
            for a in addresses[:6]
        ]
        more = f" and {len(addresses) - 6} more" if len(addresses) > 6 else ""
        return f"answered {', '.join(shown)}{more}"
    if side.get("failure"):
        return f"failed: {failure_text(side['failure'])}"
    if side.get("rcode"):
        return f"answered {_cut(plain(side['rcode']))} with no address"
    return "answered no address"


def dns_sentence(observed: dict[str, Any], network: Callable[[Any], str]) -> str | None:
    """What each resolver answered for the name: the network's, each control resolver, the
    test helper's; ``network`` names an AS number (Report.network)."""
    dns = observed.get("dns") or {}
    if not isinstance(dns, dict) or not dns:
        return None
    asns = part(dns, "asns")
    ours = observed.get("network_resolver") or {}
    who = "the network's resolver"
    if ours.get("ip"):
        who += f" {_cut(plain(ours['ip']))}"
    if ours.get("asn"):
        who += f" (in {network(ours['asn'])})"
    parts = []
    if dns.get("system") is not None:
        parts.append(f"{who} {_answer(dns['system'], asns, network)}")
    for resolver in (dns.get("resolvers") or [])[:8]:
        if isinstance(resolver, dict):
            name = resolver_name(resolver.get("engine"), resolver.get("resolver"))
            parts.append(f"{name} {_answer(resolver, asns, network)}")
    if isinstance(dns.get("helper"), dict):
        parts.append(f"the test helper's resolver {_answer(dns['helper'], asns, network)}")
    if not parts:
        return None
    return f"Asked for {_cut(plain(dns.get('host')))}, " + "; ".join(parts) + "."


def _at(step: dict[str, Any]) -> str:
    return f"{_cut(plain(step.get('ip')))} port {_cut(plain(step.get('port')))}"


def connection_sentences(observed: dict[str, Any]) -> list[str]:
    """Each TCP connect and TLS handshake of the first hop, with what the test helper saw at
    the same address."""
    out = []
    for tcp in (observed.get("tcp") or [])[: MAX_EVIDENCE * 2]:
        if not isinstance(tcp, dict):
            continue
        text = f"TCP connection to {_at(tcp)}: "
        text += f"failed, {failure_text(tcp['failure'])}" if tcp.get("failure") else "connected"
        control = tcp.get("control")
        if isinstance(control, dict):
            if control.get("ok"):
                text += "; the test helper connected to the same address"
            else:
                why = f" ({failure_text(control['failure'])})" if control.get("failure") else ""
                text += f"; the test helper could not connect to it either{why}"
        out.append(text + ".")
    for tls in (observed.get("tls") or [])[: MAX_EVIDENCE * 2]:
        if not isinstance(tls, dict):
            continue
        text = f"TLS handshake with {_at(tls)}, server name (SNI) {_cut(plain(tls.get('sni')))}"
        if tls.get("purpose") == "validate":
            text += " (the HTTPS check of a plain-HTTP site's address)"
        if tls.get("failure"):
            text += f": failed, {failure_text(tls['failure'])}"
        else:
            version = f" ({_cut(plain(tls['tls_version']))})" if tls.get("tls_version") else ""
            text += f": succeeded, certificate valid{version}"
        if tls.get("failure") and (tls.get("cert_subject") or tls.get("cert_issuer")):
            text += (
                f"; the certificate presented names {_cut(plain(tls.get('cert_subject')))}, "
                f"issued by {_cut(plain(tls.get('cert_issuer')))}"
            )
        control = tls.get("control")
        if isinstance(control, dict):
            if control.get("ok"):
                text += "; the test helper's handshake with the same address and name succeeded"
            else:
                why = f" ({failure_text(control['failure'])})" if control.get("failure") else ""
                text += f"; the test helper's handshake failed too{why}"
        out.append(text + ".")
    return out


def size_text(size: Any) -> str:
    if isinstance(size, bool) or not isinstance(size, int):
        return "unknown"
    return f"{size:,} bytes".replace(",", " ")


def page_rows(observed: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(fact, the page the network served, the page the test helper fetched): status,
    title, size, SHA-256, address; "-" where not known."""
    page = part(observed, "page")
    control = part(observed, "control")
    theirs = part(control, "page")
    if page.get("status") is None and page.get("size") is None:
        return []  # no page on this network: the control's sentence says what it saw
    p, c = page, theirs

    def value(side: dict[str, Any], key: str) -> str:
        got = side.get(key)
        return "-" if got is None or got == "" else _cut(plain(got))

    def failed(side: dict[str, Any]) -> str:
        return failure_text(side["failure"]) if side.get("failure") else "-"

    size = size_text(p.get("size")) if p.get("size") is not None else "-"
    if p.get("truncated"):
        size += " read (the page was longer: the rest was not read)"
    return [
        ("URL", value(p, "url"), "-"),
        ("Status", value(p, "status"), value(c, "status")),
        ("Title", value(p, "title"), value(c, "title")),
        ("Size", size, size_text(c.get("size")) if c.get("size") is not None else "-"),
        ("SHA-256", value(p, "sha256"), "not sent by the test helper" if theirs else "-"),
        ("Served from", value(p, "ip"), "-"),
        ("Failure", failed(p), failed(c)),
    ]


def control_sentence(observed: dict[str, Any]) -> str:
    """Who the control was and whether it answered."""
    control = part(observed, "control")
    helper = _cut(plain(control.get("helper"))) if control.get("helper") else None
    if not control.get("answered"):
        if helper is None:
            return "No test helper was asked."
        why = f" ({failure_text(control['failure'])})" if control.get("failure") else ""
        return f"The test helper {helper} gave no answer{why}."
    page = part(control, "page")
    who = f"The test helper {helper}" if helper else "The test helper"
    if not page:
        return f"{who} answered, without an HTTP result."
    if page.get("failure"):
        return f"{who} could not fetch the page: {failure_text(page['failure'])}."
    title = f", title '{_cut(plain(page['title']))}'" if page.get("title") else ""
    return (
        f"{who}, outside the network, fetched the page: status {_cut(plain(page.get('status')))}"
        f"{title}, {size_text(page.get('size'))}."
    )


def headers_of(observed: dict[str, Any]) -> list[tuple[str, str]]:
    """The response headers of the page the network served (name, value)."""
    page = part(observed, "page")
    return [
        (plain(h[0]), _cut(plain(h[1])))
        for h in page.get("headers") or []
        if isinstance(h, list) and len(h) == 2
    ]


def text_of(observed: dict[str, Any]) -> list[str]:
    """The first lines of the page's text."""
    page = part(observed, "page")
    return [_cut(plain(line), 2 * MAX_VALUE) for line in page.get("text") or []]


def redirects_sentence(observed: dict[str, Any]) -> str | None:
    page = part(observed, "page")
    hops = [h for h in page.get("redirects") or [] if isinstance(h, dict)]
    if not hops:
        return None
    parts = [
        f"{_cut(plain(h.get('url')))} (status {_cut(plain(h.get('status')))}) to "
        f"{_cut(plain(h.get('location')))}"
        for h in hops[:MAX_EVIDENCE]
    ]
    return "Redirected from " + "; then from ".join(parts) + "."


NO_BODIES = (
    "This report was made where page bodies and raw observations are not kept (a "
    "collector): the page's text, headers and hash, and the control's answer, are in the "
    "volunteer's own database (probe report there shows them)."
)


# ------------------------------------------------------------------ provenance in words


def _list_text(items: list[str]) -> str:
    return ", ".join(items) if items else "none recorded"


def provenance_lines(about: dict[str, Any], network: Callable[[Any], str]) -> list[str]:
    """The provenance as short paragraphs (each a sentence or two)."""
    out = []
    span = ""
    if about.get("first"):
        span = f" between {plain(about['first'])} and {plain(about['last'])} UTC"
    runs = f" in {plural(about['runs'], 'run')}" if isinstance(about.get("runs"), int) else ""
    vantages = about.get("vantages")
    from_vantages = f", from {plural(len(vantages), 'vantage')}," if vantages else ""
    out.append(
        f"{plural(int(about.get('measurements') or 0), 'measurement')}{runs}{from_vantages}{span}."
    )
    fingerprints = about.get("fingerprints") or {}
    counts = fingerprints.get("signatures") or {}
    versions = about.get("analysis_versions") or {}
    if versions:
        made = ", ".join(
            f"probe {plain(v)} ({plural(int(n), 'measurement')})" for v, n in versions.items()
        )
        text = f"Verdicts made by {made}"
        if about.get("reanalysed"):
            text += (
                f"; {plural(int(about['reanalysed']), 'measurement')} analysed again, last on "
                f"{plain(about.get('last_reanalysis'))} UTC"
            )
        if about.get("imported_from_ooni"):
            text += (
                f"; {plural(int(about['imported_from_ooni']), 'measurement')} imported from "
                "OONI and judged by probe's own analysis"
            )
        out.append(text + ".")
    out.append(
        f"Report written by probe {plain(about.get('probe_version'))}, with its block page "
        f"fingerprint set (SHA-256 {plain(fingerprints.get('sha256'))}: "
        f"{sum(int(n) for n in counts.values())} signatures, probe's own and Censored "
        "Planet's); the stored verdicts used the set of the version that made them."
    )
    if "helpers" in about:
        out.append(f"Test helpers: {_list_text([plain(h) for h in about['helpers']])}.")
    if "control_resolvers" in about:
        named = [resolver_name(_scheme(u), u) for u in about["control_resolvers"]]
        out.append(f"Control resolvers: {_list_text(named)}.")
    return out


def _scheme(url: Any) -> str:
    scheme = plain(url).split("://", 1)[0]
    return scheme if scheme in _ENGINES else plain(url).split(":", 1)[0]


def network_rows(about: dict[str, Any], network: Callable[[Any], str]) -> list[tuple[str, ...]]:
    """(network, vantages, runs, measurements, first, last, the network's resolver)."""
    rows: list[tuple[str, ...]] = []
    for net in about.get("networks") or []:
        resolver = net.get("resolver") or {}
        rows.append(
            (
                network(net.get("asn")),
                plain(net.get("vantages", "-")),
                plain(net.get("runs", "-")),
                plain(net.get("measurements", "-")),
                plain(net.get("first") or "-"),
                plain(net.get("last") or "-"),
                network(resolver.get("asn")) if resolver.get("asn") else "-",
            )
        )
    return rows


_KINDS = {
    "local": "the probe that wrote this database",
    "remote": "merged from another volunteer's database",
    "ooni": "OONI measurements imported",
}


def vantage_rows(about: dict[str, Any], network: Callable[[Any], str]) -> list[tuple[str, ...]]:
    """(vantage, what it is, its networks, runs, measurements); volunteers are not named."""
    rows: list[tuple[str, ...]] = []
    for v in about.get("vantages") or []:
        nets = ", ".join(dict.fromkeys(network(a) for a in v.get("networks") or []))
        rows.append(
            (
                f"Vantage {plain(v.get('number'))}",
                _KINDS.get(v.get("kind"), "unknown"),
                nets or "-",
                plain(v.get("runs")),
                plain(v.get("measurements")),
            )
        )
    return rows


def methodology(about: dict[str, Any]) -> str:
    """What the words of the report mean, and what an event needs."""
    o = about.get("options") or {}
    return (
        "Each measurement fetches the site from the volunteer's network and compares every "
        "step (DNS, TCP, TLS, HTTP) with a control measured outside it (a test helper and "
        "encrypted control resolvers). Blocked: a step failed or was answered in a way the "
        "control's was not (a forged DNS answer, a reset, a block page), and the control "
        "shows the site works. Down: the control failed as well, so the site itself is "
        "unreachable. Inconclusive: no control answered, or the evidence does not decide. "
        f"An event needs {plain(o.get('min_measurements'))} blocked measurements in a row "
        f"on a network, or {plain(o.get('min_vantages'))} vantages agreeing; it ends at the "
        "first accessible measurement after it. Inconclusive and down measurements neither "
        "start, end nor split an event, and a time without measurements is unknown, never "
        "assumed accessible."
    )


def share_text(net: Network) -> str:
    """The blocked share with what it counts: ``33%: 2 of 6 conclusive measurements blocked;
    2 inconclusive, 0 down`` (a bare percentage would hide what it leaves out)."""
    rest = f"{net.inconclusive} inconclusive, {net.counts['down']} down"
    if not net.conclusive:
        return f"no conclusive measurement; {rest}"
    return (
        f"{net.blocked_share:.0%}: {net.counts['blocked']} of "
        f"{plural(net.conclusive, 'conclusive measurement')} blocked; {rest}"
    )
