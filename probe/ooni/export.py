"""Our measurements in OONI's format (pure).

**Export** (:func:`to_ooni`): one stored measurement as an OONI measurement, the envelope of
``SPEC:data-formats/df-000-base.md`` and the test keys of ts-017 as LTE (0.5) writes them:
``queries`` (df-002), ``tcp_connect`` (df-005), ``tls_handshakes`` (df-006), ``requests``
(df-001, newest first), ``control`` (the helper's answer, verbatim), ``control_failure`` and
the verdict keys. Every entry is tagged as LTE tags it (``classic``: from the system resolver,
which is all we connect to; ``depth=N``; ``fetch_body=true|false`` for the fetch and for the
:443 validation of an http:// URL's addresses). As OONI does, no ``requests`` entry is written
for a hop where no connection succeeded. Where OONI's vocabulary has no word for ours, OONI's
word is written and ours is kept in an ``x_`` key: ``blocking`` ``"tls"`` is written
``"http-failure"`` with ``x_probe_blocking: "tls"``; the verdict, evidence sentence, the ids
of the measurement, run and vantage, and record fields OONI lacks (a hop's title, decoded
length, 1xx codes, raw bytes, a certificate's hash) are ``x_`` keys too, so an import of our
own export rebuilds the very observations. ``probe_ip`` is always ``127.0.0.1``, and no
field holds the volunteer's address (the stored records never did).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..model.addresses import endpoint
from ..model.records import (
    ACCESSIBLE,
    HTTPRequest,
    Observations,
    Verdict,
)
from ..model.text import is_clean_text
from .format import (
    DATA_FORMAT_VERSION,
    EXPORT_TEST_VERSION,
    EXTENSIONS,
    PROBE_IP,
    RCODE_NUMBERS,
    RESOLVER_IP,
    SOFTWARE_NAME,
    TEST_NAME,
    TO_OONI_ENGINE,
)


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where a stored measurement comes from: its ids, its run and network, the vantage."""

    measurement_id: str
    run_id: str
    run_started_at: str | None
    probe_asn: str | None
    probe_cc: str | None
    vantage_id: str | None = None
    vantage_name: str | None = None
    software_version: str = ""
    probe_network_name: str | None = None
    #: The target's place in its run's list: with the run, the order measurements of one
    #: second were taken in (timelines break ties by it).
    position: int | None = None


def report_id(p: Provenance) -> str:
    """An OONI-shaped report id for a run (OONI's is per probe session; ours is per run)."""
    when = (p.run_started_at or "").replace("-", "").replace(":", "").replace(" ", "T")
    asn = (p.probe_asn or "AS0")[2:]
    return f"{when}Z_webconnectivity_{p.probe_cc or 'ZZ'}_{asn}_n1_{p.run_id.replace('-', '')[:16]}"


def to_ooni(obs: Observations, verdict: Verdict, p: Provenance) -> dict[str, Any]:
    """One measurement in OONI's format (see the module docstring)."""
    helper = obs.control.helper
    return {
        "annotations": {"engine_name": SOFTWARE_NAME, "engine_version": p.software_version},
        "data_format_version": DATA_FORMAT_VERSION,
        "extensions": dict(EXTENSIONS),
        "input": obs.url,
        "measurement_start_time": obs.start_time[:19],  # OONI's format: whole seconds
        "probe_asn": p.probe_asn or "AS0",
        "probe_cc": p.probe_cc or "ZZ",
        "probe_ip": PROBE_IP,
        "probe_network_name": p.probe_network_name or "",
        "report_id": report_id(p),
        "resolver_asn": "AS0",
        "resolver_ip": RESOLVER_IP,
        "resolver_network_name": "",
        "software_name": SOFTWARE_NAME,
        "software_version": p.software_version,
        "test_helpers": {"backend": {"address": helper, "type": urlsplit(helper).scheme}}
        if helper
        else {},
        "test_keys": _test_keys(obs, verdict, p),
        "test_name": TEST_NAME,
        "test_runtime": obs.runtime,
        "test_start_time": (p.run_started_at or obs.start_time)[:19],
        "test_version": EXPORT_TEST_VERSION,
    }


def _tags(depth: int, *, fetch_body: bool | None = True, classic: bool = True) -> list[str]:
    tags = ["classic"] if classic else []
    if depth == 0 and fetch_body is not None:
        tags.append("tcptls_experiment")
    tags.append(f"depth={depth}")
    if fetch_body is not None:
        tags.append(f"fetch_body={'true' if fetch_body else 'false'}")
    return tags


def _fetch_port(obs: Observations, depth: int) -> tuple[str, int]:
    """The scheme and port of the fetch at ``depth``."""
    url = next((h.url for h in obs.http if h.depth == depth), obs.url if depth == 0 else "")
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return parts.scheme, port or (443 if parts.scheme == "https" else 80)


def _maybe_binary(data: bytes) -> str | dict[str, str]:
    """A body as OONI's MaybeBinaryData: text when it is clean UTF-8 text, else base64, so
    that a NUL or a control character in a block page never makes a measurement one that a
    collector (or PostgreSQL) cannot take."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and is_clean_text(text):
        return text
    return {"format": "base64", "data": base64.b64encode(data).decode("ascii")}


def _resolver_address(resolver: str) -> str:
    """``udp://192.0.2.1:53`` -> ``192.0.2.1:53``; a DoH URL stays a URL."""
    if resolver.startswith("https://"):
        return resolver
    return resolver.split("://", 1)[-1]


def _answers(addresses: list[str], cnames: list[str], ttl: int | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for address in addresses:
        if ":" in address:
            out.append({"answer_type": "AAAA", "ipv6": address, "ttl": ttl})
        else:
            out.append({"answer_type": "A", "ipv4": address, "ttl": ttl})
    out += [{"answer_type": "CNAME", "hostname": name, "ttl": ttl} for name in cnames]
    return out


def _test_keys(obs: Observations, verdict: Verdict, p: Provenance) -> dict[str, Any]:
    queries, duplicates = [], []
    for q in obs.dns:
        entry: dict[str, Any] = {
            "answers": _answers(q.addresses, q.cnames, q.ttl),
            "engine": TO_OONI_ENGINE.get(q.engine, "unknown"),
            "failure": q.failure,
            "hostname": q.hostname,
            "query_type": q.query_type,
            "resolver_hostname": None,
            "resolver_port": None,
            "resolver_address": _resolver_address(q.resolver),
            "t0": q.t0,
            "t": q.t,
            "tags": _tags(q.depth, fetch_body=None, classic=q.engine == "system"),
            "x_resolver": q.resolver,
        }
        if q.rcode in RCODE_NUMBERS:
            entry["rcode"] = RCODE_NUMBERS[q.rcode]
        elif q.rcode is not None:
            entry["x_rcode"] = q.rcode
        queries.append(entry)
        for reply in q.duplicate_replies:
            duplicates.append(
                {
                    **{k: entry[k] for k in ("engine", "hostname", "query_type", "tags")},
                    "resolver_address": entry["resolver_address"],
                    "x_resolver": q.resolver,
                    "answers": _answers(list(reply.get("addresses") or []), [], None),
                    "failure": None,
                    "rcode": RCODE_NUMBERS.get(str(reply.get("rcode")), None),
                    "t0": reply.get("t", 0.0),
                    "t": reply.get("t", 0.0),
                    "x_rcode": reply.get("rcode"),
                    "x_wrong_id": bool(reply.get("wrong_id")),
                }
            )
    tcp_connect = []
    for c in obs.tcp:
        scheme, port = _fetch_port(obs, c.depth)
        validate = scheme == "http" and c.port == 443 and port != 443
        tcp_connect.append(
            {
                "ip": c.ip,
                "port": c.port,
                "status": {"failure": c.failure, "success": c.failure is None},
                "t0": c.t0,
                "t": c.t,
                "tags": _tags(c.depth, fetch_body=not validate),
            }
        )
    tls_handshakes = [
        {
            "network": "tcp",
            "address": endpoint(h.ip, h.port),
            "cipher_suite": h.cipher or "",
            "failure": h.failure,
            "negotiated_protocol": h.alpn or "",
            "no_tls_verify": False,
            "peer_certificates": [],
            "server_name": h.server_name,
            "t0": h.t0,
            "t": h.t,
            "tags": _tags(h.depth, fetch_body=h.purpose == "fetch"),
            "tls_version": h.tls_version or "",
            "x_cert_sha256": h.cert_sha256,
            "x_cert_subject": h.cert_subject,
            "x_cert_issuer": h.cert_issuer,
        }
        for h in obs.tls
    ]
    requests, unconnected = [], []
    for hop in obs.http:
        if hop.ip is None and hop.failure is not None:
            # No connection succeeded: OONI writes no request; we keep the hop aside.
            unconnected.append(
                {
                    "url": hop.url,
                    "depth": hop.depth,
                    "failure": hop.failure,
                    "t0": hop.t0,
                    "t": hop.t,
                }
            )
            continue
        requests.append(_request(obs, hop))
    requests.reverse()  # OONI: the last request first
    system_failures = [
        q.failure for q in obs.dns if q.engine == "system" and q.depth == 0 and q.failure
    ]
    return {
        "agent": "redirect",
        "client_resolver": None,
        "retries": None,
        "socksproxy": None,
        "queries": queries,
        "x_dns_duplicate_responses": duplicates,
        "tcp_connect": tcp_connect,
        "tls_handshakes": tls_handshakes,
        "network_events": [],
        "requests": requests,
        "control": obs.control.response or {},
        "control_failure": obs.control.failure if obs.control.response is None else None,
        "dns_experiment_failure": system_failures[0] if system_failures else None,
        "dns_consistency": verdict.dns_consistency,
        "http_experiment_failure": verdict.failure,
        "body_length_match": verdict.body_length_match,
        "body_proportion": verdict.body_proportion or 0,
        "status_code_match": verdict.status_code_match,
        "headers_match": verdict.headers_match,
        "title_match": verdict.title_match,
        **_ooni_verdict(verdict),
        "x_probe_verdict": verdict.verdict,
        "x_probe_blocking": verdict.blocking,
        "x_probe_blockpage": verdict.blockpage,
        "x_probe_confirmed": verdict.confirmed,
        "x_probe_reason": verdict.reason,
        "x_probe_measurement_id": p.measurement_id,
        "x_probe_run_id": p.run_id,
        "x_probe_position": p.position,
        "x_probe_vantage": p.vantage_id,
        "x_probe_vantage_name": p.vantage_name,
        "x_probe_input": obs.input,
        "x_probe_category": obs.category,
        "x_probe_unconnected_hops": unconnected,
        "x_probe_control": {
            "helper": obs.control.helper,
            "failure": obs.control.failure,
            "t0": obs.control.t0,
            "t": obs.control.t,
        },
    }


def _ooni_verdict(verdict: Verdict) -> dict[str, Any]:
    """``blocking`` and ``accessible`` in OONI's vocabulary (our ``tls`` is ``http-failure``)."""
    accessible = ACCESSIBLE.get(verdict.verdict)
    if verdict.verdict == "blocked":
        blocking = "http-failure" if verdict.blocking == "tls" else verdict.blocking
        return {"blocking": blocking, "accessible": accessible}
    return {"blocking": None if accessible is None else False, "accessible": accessible}


def _request(obs: Observations, hop: HTTPRequest) -> dict[str, Any]:
    alpn = next(
        (t.alpn for t in obs.tls if t.depth == hop.depth and t.ip == hop.ip and t.alpn), None
    )
    headers: dict[str, str] = {}
    for name, value in hop.headers:
        headers.setdefault(name, value)
    body = hop.body or b""
    stored_short = hop.body is not None and (hop.body_length or 0) > len(hop.body)
    return {
        "network": "tcp",
        "address": endpoint(hop.ip, hop.port or 0) if hop.ip else "",
        "alpn": alpn or "",
        "failure": hop.failure,
        "request": {
            "body": "",
            "body_is_truncated": False,
            "headers": {},
            "headers_list": [],
            "method": hop.method,
            "tor": {"exit_ip": None, "exit_name": None, "is_tor": False},
            "x_transport": "tcp",
            "url": hop.url,
        },
        "response": {
            "body": _maybe_binary(body),
            "body_is_truncated": hop.body_truncated or stored_short or hop.body is None,
            "code": hop.status_code or 0,
            "headers": headers,
            "headers_list": [[name, value] for name, value in hop.headers],
        },
        "t0": hop.t0,
        "t": hop.t,
        "tags": _tags(hop.depth),
        "x_body_stored": hop.body is not None,
        "x_body_length": hop.body_length,
        "x_body_sha256": hop.body_sha256,
        "x_body_truncated": hop.body_truncated,
        "x_title": hop.title,
        "x_location": hop.location,
        "x_informational": hop.informational,
        "x_raw": base64.b64encode(hop.raw).decode("ascii") if hop.raw is not None else None,
    }
