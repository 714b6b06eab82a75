"""OONI's measurements as our observations (pure).

**Import** (:func:`from_ooni`): an OONI measurement of Web Connectivity 0.4 ("classic") or
0.5 (LTE) as our :class:`~probe.model.records.Observations`, for *our* analysis to judge:
OONI's ``blocking``/``accessible`` are kept aside for comparison and never copied. What
differs between the versions:

* 0.4 splits the system resolver's answer into ``A`` and ``AAAA`` queries (engine
  ``system``) and tags nothing; its ``requests`` carry no address, so a failed request is
  tied to the address the connect step reached on the URL's port (depth 0 only); redirect
  hops carry no connectivity data.
* 0.5 (LTE) records one ``ANY`` query for ``getaddrinfo`` (split here into A and AAAA), and
  queries other resolvers (``udp``, ``doh``) too. It also connects and handshakes to
  addresses that came from those resolvers and from the test helper: those entries lack the
  ``classic`` tag and are left out, as OONI's own classic analysis leaves them out, because
  our analysis (like our measurement) judges the connections to the system resolver's
  addresses. It writes no ``requests`` entry for a hop where no connection succeeded: the
  hop is rebuilt from its failed connects. A successful :443 validation connect
  (``fetch_body=false``) is not kept, as our measurement keeps only failed ones.

Everything in the file is checked as it is read: a field of the wrong type, an unsupported
test or version, a malformed address raise :class:`~probe.errors.OONIFormatError` naming the
field; :func:`read_file` adds ``FILE:LINE`` and goes on with the next measurement.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..errors import OONIFormatError
from ..model import network, urls
from ..model.addresses import SCRUBBED, canonical_ip
from ..model.charset import title_of
from ..model.http import REDIRECT_CODES
from ..model.records import (
    Control,
    DNSQuery,
    HTTPRequest,
    Observations,
    TCPConnect,
    TLSHandshake,
    hop_failure,
)
from ..model.urls import normalise
from .format import (
    FROM_OONI_ENGINE,
    MAX_ENTRIES,
    NAMESPACE,
    RCODES,
    SYSTEM_ENGINES,
    TEST_NAMES,
    TIME,
)
from .helper_protocol import check_response


@dataclass(slots=True)
class Imported:
    """An OONI measurement read back: the observations and where they come from."""

    observations: Observations
    probe_asn: str
    probe_cc: str
    report_id: str
    uid: str  # OONI's identity of the measurement (for "already imported")
    test_version: str
    software: str
    test_start_time: str
    ooni_blocking: Any  # OONI's verdict as published: for comparison only
    ooni_accessible: Any
    #: Set when the file is probe's own export: the ids it had, kept.
    measurement_id: str | None = None
    run_id: str | None = None
    vantage_id: str | None = None
    vantage_name: str | None = None
    probe_network_name: str | None = None
    position: int = 0  # the target's place in its run (our export's x_probe_position)

    @property
    def stored_measurement_id(self) -> str:
        return self.measurement_id or str(uuid.uuid5(NAMESPACE, "measurement:" + self.uid))

    @property
    def stored_run_id(self) -> str:
        return self.run_id or str(uuid.uuid5(NAMESPACE, "report:" + self.report_id))


class _Doc:
    """Typed access to a parsed JSON document; every error names the field."""

    @staticmethod
    def obj(value: Any, path: str, *, required: bool = False) -> dict[str, Any]:
        if value is None and not required:
            return {}
        if not isinstance(value, dict):
            raise OONIFormatError(f"{path}: expected an object")
        return value

    @staticmethod
    def array(value: Any, path: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise OONIFormatError(f"{path}: expected an array")
        if len(value) > MAX_ENTRIES:
            raise OONIFormatError(f"{path}: more than {MAX_ENTRIES} entries")
        return value

    @staticmethod
    def text(value: Any, path: str, *, required: bool = False) -> str | None:
        if value is None and not required:
            return None
        if not isinstance(value, str):
            raise OONIFormatError(f"{path}: expected a string")
        return value

    @staticmethod
    def string(value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise OONIFormatError(f"{path}: expected a string")
        return value

    @staticmethod
    def integer(value: Any, path: str) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise OONIFormatError(f"{path}: expected an integer")
        return value

    @staticmethod
    def number(value: Any, path: str) -> float:
        if value is None:
            return 0.0
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise OONIFormatError(f"{path}: expected a number")
        return float(value)

    @staticmethod
    def failure(value: Any, path: str) -> str | None:
        if value is None or value is False:  # old probes wrote false for "no failure"
            return None
        if not isinstance(value, str):
            raise OONIFormatError(f"{path}: expected a failure string or null")
        return value


def _split_endpoint(address: str, path: str) -> tuple[str, int]:
    """``1.2.3.4:443`` / ``[2001:db8::1]:443`` -> (ip, port); a scrubbed address
    (``[scrubbed]:443``, ``[[scrubbed]]:443``) stays :data:`SCRUBBED`."""
    host, sep, port_text = address.rpartition(":")
    if host != SCRUBBED:
        host = host.removeprefix("[").removesuffix("]")
    ip = host if host == SCRUBBED else canonical_ip(host)
    try:
        port = int(port_text)
    except ValueError:
        raise OONIFormatError(f"{path}: {address!r} is not an ip:port endpoint") from None
    if ip is None or not sep or not 0 <= port <= 65535:
        raise OONIFormatError(f"{path}: {address!r} is not an ip:port endpoint")
    return ip, port


def _ip(value: Any, path: str) -> str:
    """An address field: an IP address, or :data:`SCRUBBED` (the volunteer's own address
    was there: scrubbing must never make a measurement unreadable)."""
    text = _Doc.string(value, path)
    if text == SCRUBBED:
        return text
    ip = canonical_ip(text or "")
    if ip is None:
        raise OONIFormatError(f"{path}: {text!r} is not an IP address")
    return ip


def _url(value: Any, path: str) -> str:
    """A hop's URL: one that the URL parser takes, host and port included (``http://[x]/``
    and ``:99999`` would raise deep in the analysis otherwise)."""
    text = _Doc.string(value, path)
    try:
        urlsplit(text).port  # noqa: B018 (read to check it: :99999 raises)
    except ValueError as exc:
        raise OONIFormatError(f"{path}: {text[:80]!r} is not a URL: {exc}") from None
    return text


def _port(value: Any, path: str) -> int:
    port = _Doc.integer(value, path)
    if port is None or not 0 <= port <= 65535:
        raise OONIFormatError(f"{path}: expected a port number")
    return port


def _binary(value: Any, path: str) -> bytes | None:
    """MaybeBinaryData (df-001): a UTF-8 string, or ``{"format": "base64", "data": ...}``."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    doc = _Doc.obj(value, path)
    if doc.get("format") != "base64":
        raise OONIFormatError(f"{path}: binary data must have format base64")
    return _base64(doc.get("data"), f"{path}.data")


def _base64(value: Any, path: str) -> bytes:
    text = _Doc.string(value, path)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise OONIFormatError(f"{path}: not base64") from None


def _header_value(value: Any, path: str) -> str:
    data = _binary(value, path) or b""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _tag_list(entry: dict[str, Any], path: str) -> list[str]:
    tags = _Doc.array(entry.get("tags"), f"{path}.tags")
    if not all(isinstance(t, str) for t in tags):
        raise OONIFormatError(f"{path}.tags: expected strings")
    return tags


def _tag_depth(tags: list[str]) -> int | None:
    for tag in tags:
        if tag.startswith("depth="):
            value = tag[len("depth=") :]
            if value.isdigit() and len(value) < 4:
                return int(value)
    return None


@dataclass(slots=True)
class _Context:
    lte: bool
    domain: str
    hop_hosts: list[str]  # the host of each hop, in order (0.4 has no depth tags)

    def keep(self, tags: list[str]) -> bool:
        """LTE: only the classic entries (system resolver's addresses); 0.4: all."""
        return not self.lte or "classic" in tags

    def depth(self, tags: list[str], host: str | None = None) -> int:
        depth = _tag_depth(tags)
        if depth is not None:
            return depth
        if host is None or host == self.domain:
            return 0
        return self.hop_hosts.index(host) if host in self.hop_hosts else 0


def from_ooni(data: Any) -> Imported:
    """An OONI Web Connectivity measurement (0.4 or 0.5) as our observations.

    Raises :class:`~probe.errors.OONIFormatError` naming the first field that is not as
    OONI's spec says, or the test or version we do not read.
    """
    doc = _Doc.obj(data, "$", required=True)
    test_name = doc.get("test_name")
    if not isinstance(test_name, str) or test_name not in TEST_NAMES:
        raise OONIFormatError(f"$.test_name: {str(test_name)[:64]!r} is not web_connectivity")
    fmt = _Doc.string(doc.get("data_format_version"), "$.data_format_version")
    if not fmt.startswith("0.2."):
        raise OONIFormatError(f"$.data_format_version: {fmt[:16]!r} is not 0.2.x")
    version = _Doc.string(doc.get("test_version"), "$.test_version")
    if not version.startswith(("0.4.", "0.5.")):
        raise OONIFormatError(f"$.test_version: {version[:16]!r} is neither 0.4.x nor 0.5.x")
    start = _Doc.string(doc.get("measurement_start_time"), "$.measurement_start_time")
    if not TIME.match(start):
        raise OONIFormatError("$.measurement_start_time: expected YYYY-MM-DD HH:MM:SS")
    asn = _Doc.string(doc.get("probe_asn"), "$.probe_asn")
    if not network.is_asn(asn):
        raise OONIFormatError(f"$.probe_asn: {asn[:16]!r} is not an AS number like AS8449")
    cc = _Doc.string(doc.get("probe_cc"), "$.probe_cc")
    if not network.is_cc(cc):
        raise OONIFormatError(f"$.probe_cc: {cc[:16]!r} is not a country code like KG")
    raw_input = _Doc.string(doc.get("input"), "$.input")
    try:
        url, domain = normalise(raw_input)
    except ValueError as exc:
        raise OONIFormatError(f"$.input: {exc}") from None
    if not url.startswith(("http://", "https://")):
        raise OONIFormatError("$.input: not an http(s) URL")
    keys = _Doc.obj(doc.get("test_keys"), "$.test_keys", required=True)
    report = _Doc.text(doc.get("report_id"), "$.report_id") or ""
    test_start = _Doc.text(doc.get("test_start_time"), "$.test_start_time") or start
    if not TIME.match(test_start):
        test_start = start
    software = " ".join(
        filter(
            None, (_Doc.text(doc.get(k), f"$.{k}") for k in ("software_name", "software_version"))
        )
    )
    lte = version.startswith("0.5.")
    requests = _requests(keys, url, lte)
    hop_hosts = [urlsplit(hop.url).hostname or "" for hop in requests]
    ctx = _Context(lte=lte, domain=domain, hop_hosts=hop_hosts)
    obs = Observations(
        input=_Doc.text(keys.get("x_probe_input"), "$.test_keys.x_probe_input") or raw_input,
        url=url,
        domain=domain,
        category=_Doc.text(keys.get("x_probe_category"), "$.test_keys.x_probe_category"),
        start_time=start,
        runtime=_Doc.number(doc.get("test_runtime"), "$.test_runtime"),
        dns=_queries(keys, ctx),
        tcp=_connects(keys, ctx, url),
        tls=_handshakes(keys, ctx),
        control=_control(doc, keys),
    )
    obs.http = _with_hops(obs, requests, keys, ctx)
    _tie_requests(obs, lte)
    uid, ids = _identity(doc, keys, report, raw_input, start)
    return Imported(
        observations=obs,
        probe_asn=asn,
        probe_cc=cc,
        report_id=report,
        uid=uid,
        test_version=version,
        software=software,
        test_start_time=test_start,
        ooni_blocking=keys.get("blocking"),
        ooni_accessible=keys.get("accessible"),
        probe_network_name=_Doc.text(doc.get("probe_network_name"), "$.probe_network_name") or None,
        position=_position(keys),
        **ids,
    )


def _position(keys: dict[str, Any]) -> int:
    """Our export's ``x_probe_position`` (0 when absent: OONI's own measurements)."""
    position = _Doc.integer(keys.get("x_probe_position"), "$.test_keys.x_probe_position")
    if position is None:
        return 0
    if not 0 <= position <= 2**31 - 1:
        raise OONIFormatError("$.test_keys.x_probe_position: out of range")
    return position


def _identity(
    doc: dict[str, Any], keys: dict[str, Any], report: str, raw_input: str, start: str
) -> tuple[str, dict[str, str | None]]:
    """OONI's identity of the measurement, and our ids when the file is our own export."""
    ids: dict[str, str | None] = {}
    for key, name in (
        ("x_probe_measurement_id", "measurement_id"),
        ("x_probe_run_id", "run_id"),
        ("x_probe_vantage", "vantage_id"),
    ):
        value = _Doc.text(keys.get(key), f"$.test_keys.{key}")
        if value is not None:
            try:
                value = str(uuid.UUID(value))
            except ValueError:
                raise OONIFormatError(f"$.test_keys.{key}: not a UUID") from None
        ids[name] = value
    ids["vantage_name"] = _Doc.text(
        keys.get("x_probe_vantage_name"), "$.test_keys.x_probe_vantage_name"
    )
    if ids["measurement_id"]:
        return f"probe:{ids['measurement_id']}", ids
    uid = _Doc.text(doc.get("measurement_uid"), "$.measurement_uid")
    if uid:
        return f"ooni:{uid}", ids
    digest = hashlib.sha256(f"{report}\n{raw_input}\n{start}".encode()).hexdigest()
    return f"ooni-sha256:{digest}", ids


def _rcode(entry: dict[str, Any], path: str) -> str | None:
    named = _Doc.text(entry.get("x_rcode"), f"{path}.x_rcode")
    if named is not None:
        return named
    number = _Doc.integer(entry.get("rcode"), f"{path}.rcode")
    if number is None and entry.get("raw_response"):
        raw = _base64(entry.get("raw_response"), f"{path}.raw_response")
        number = raw[3] & 0x0F if len(raw) >= 4 else None
    if number is None:
        return None
    return RCODES.get(number, f"RCODE{number}")


def _answers_of(
    entry: dict[str, Any], path: str
) -> tuple[list[str], list[str], list[str], int | None]:
    """(IPv4, IPv6, CNAMEs, first TTL) of a query's answers."""
    v4: list[str] = []
    v6: list[str] = []
    cnames: list[str] = []
    ttl: int | None = None
    for i, raw in enumerate(_Doc.array(entry.get("answers"), f"{path}.answers")):
        where = f"{path}.answers[{i}]"
        answer = _Doc.obj(raw, where, required=True)
        kind = answer.get("answer_type")
        if ttl is None:
            ttl = _Doc.integer(answer.get("ttl"), f"{where}.ttl")
        if kind == "A":
            v4.append(_ip(answer.get("ipv4"), f"{where}.ipv4"))
        elif kind == "AAAA":
            v6.append(_ip(answer.get("ipv6"), f"{where}.ipv6"))
        elif kind == "CNAME":
            name = _Doc.text(answer.get("hostname"), f"{where}.hostname")
            if name:
                cnames.append(name)
    return v4, v6, cnames, ttl


def _queries(keys: dict[str, Any], ctx: _Context) -> list[DNSQuery]:
    out: list[DNSQuery] = []
    for i, raw in enumerate(_Doc.array(keys.get("queries"), "$.test_keys.queries")):
        path = f"$.test_keys.queries[{i}]"
        out += _query(_Doc.obj(raw, path, required=True), path, ctx)
    for i, raw in enumerate(
        _Doc.array(keys.get("x_dns_duplicate_responses"), "$.test_keys.x_dns_duplicate_responses")
    ):
        path = f"$.test_keys.x_dns_duplicate_responses[{i}]"
        entry = _Doc.obj(raw, path, required=True)
        for dup in _query(entry, path, ctx):
            original = next(
                (
                    q
                    for q in out
                    if (q.engine, q.resolver, q.hostname, q.query_type, q.depth)
                    == (dup.engine, dup.resolver, dup.hostname, dup.query_type, dup.depth)
                ),
                None,
            )
            if original is not None:
                original.duplicate_replies.append(
                    {
                        "rcode": dup.rcode,
                        "addresses": dup.addresses,
                        "wrong_id": entry.get("x_wrong_id") is True,
                        "t": dup.t,
                    }
                )
    return out


def _query(entry: dict[str, Any], path: str, ctx: _Context) -> list[DNSQuery]:
    engine_name = _Doc.text(entry.get("engine"), f"{path}.engine") or "unknown"
    hostname = _Doc.string(entry.get("hostname"), f"{path}.hostname")
    qtype = _Doc.string(entry.get("query_type"), f"{path}.query_type")
    failure = _Doc.failure(entry.get("failure"), f"{path}.failure")
    address = _Doc.text(entry.get("resolver_address"), f"{path}.resolver_address") or ""
    tags = _tag_list(entry, path)
    t0 = _Doc.number(entry.get("t0"), f"{path}.t0")
    t = _Doc.number(entry.get("t"), f"{path}.t")
    v4, v6, cnames, ttl = _answers_of(entry, path)
    rcode = _rcode(entry, path)
    if engine_name in SYSTEM_ENGINES:
        engine = "system"
        resolver = f"udp://{address}" if address else engine_name
    elif engine_name in FROM_OONI_ENGINE:
        engine = FROM_OONI_ENGINE[engine_name]
        resolver = address if engine == "https" else f"{engine}://{address}"
    else:
        return []  # a resolver we have no word for
    resolver = _Doc.text(entry.get("x_resolver"), f"{path}.x_resolver") or resolver
    host = hostname.rstrip(".").lower()
    depth = ctx.depth(tags, host)

    def query(qtype: str, addresses: list[str]) -> DNSQuery:
        return DNSQuery(
            hostname,
            qtype,
            engine,
            resolver,
            failure,
            rcode,
            addresses,
            list(cnames),
            ttl,
            depth=depth,
            t0=t0,
            t=t,
        )

    if qtype == "ANY":  # getaddrinfo: one lookup, both families
        a = query("A", v4)
        if failure is None and not v4:
            a.failure = "dns_no_answer"
        out = [a]
        if v6 or failure is not None:
            out.append(query("AAAA", v6))
        return out
    if qtype in ("A", "AAAA"):
        return [query(qtype, v4 if qtype == "A" else v6)]
    return []


def _connects(keys: dict[str, Any], ctx: _Context, url: str) -> list[TCPConnect]:
    out: list[TCPConnect] = []
    for i, raw in enumerate(_Doc.array(keys.get("tcp_connect"), "$.test_keys.tcp_connect")):
        path = f"$.test_keys.tcp_connect[{i}]"
        entry = _Doc.obj(raw, path, required=True)
        tags = _tag_list(entry, path)
        if not ctx.keep(tags):
            continue
        status = _Doc.obj(entry.get("status"), f"{path}.status", required=True)
        failure = _Doc.failure(status.get("failure"), f"{path}.status.failure")
        if failure is None and status.get("success") is False:
            failure = "unknown_failure: connect failed without a failure string"
        if "fetch_body=false" in tags and failure is None:
            continue  # a successful validation connect: its handshake says everything
        out.append(
            TCPConnect(
                ip=_ip(entry.get("ip"), f"{path}.ip"),
                port=_port(entry.get("port"), f"{path}.port"),
                failure=failure,
                depth=ctx.depth(tags),
                t0=_Doc.number(entry.get("t0"), f"{path}.t0"),
                t=_Doc.number(entry.get("t"), f"{path}.t"),
            )
        )
    out.sort(key=lambda c: (c.depth, c.t0))
    return out


def _handshakes(keys: dict[str, Any], ctx: _Context) -> list[TLSHandshake]:
    out: list[TLSHandshake] = []
    for i, raw in enumerate(_Doc.array(keys.get("tls_handshakes"), "$.test_keys.tls_handshakes")):
        path = f"$.test_keys.tls_handshakes[{i}]"
        entry = _Doc.obj(raw, path, required=True)
        tags = _tag_list(entry, path)
        if not ctx.keep(tags):
            continue
        address = _Doc.string(entry.get("address"), f"{path}.address")
        ip, port = _split_endpoint(address, f"{path}.address")
        certs = _Doc.array(entry.get("peer_certificates"), f"{path}.peer_certificates")
        cert_sha256 = _Doc.text(entry.get("x_cert_sha256"), f"{path}.x_cert_sha256")
        if cert_sha256 is None and certs:
            der = _binary(certs[0], f"{path}.peer_certificates[0]") or b""
            cert_sha256 = hashlib.sha256(der).hexdigest()
        out.append(
            TLSHandshake(
                ip=ip,
                port=port,
                server_name=_Doc.text(entry.get("server_name"), f"{path}.server_name") or "",
                failure=_Doc.failure(entry.get("failure"), f"{path}.failure"),
                tls_version=_Doc.text(entry.get("tls_version"), f"{path}.tls_version") or None,
                cipher=_Doc.text(entry.get("cipher_suite"), f"{path}.cipher_suite") or None,
                alpn=_Doc.text(entry.get("negotiated_protocol"), f"{path}.negotiated_protocol")
                or None,
                cert_sha256=cert_sha256,
                cert_subject=_Doc.text(entry.get("x_cert_subject"), f"{path}.x_cert_subject"),
                cert_issuer=_Doc.text(entry.get("x_cert_issuer"), f"{path}.x_cert_issuer"),
                purpose="validate" if "fetch_body=false" in tags else "fetch",
                depth=ctx.depth(tags),
                t0=_Doc.number(entry.get("t0"), f"{path}.t0"),
                t=_Doc.number(entry.get("t"), f"{path}.t"),
            )
        )
    out.sort(key=lambda h: (h.depth, h.t0))
    return out


def _requests(keys: dict[str, Any], url: str, lte: bool) -> list[HTTPRequest]:
    """The fetch's hops in order (OONI lists the last first); LTE: the classic ones only,
    and only as long as they follow each other from depth 0."""
    entries = _Doc.array(keys.get("requests"), "$.test_keys.requests")
    hops: list[HTTPRequest] = []
    for index in range(len(entries) - 1, -1, -1):
        path = f"$.test_keys.requests[{index}]"
        entry = _Doc.obj(entries[index], path, required=True)
        tags = _tag_list(entry, path)
        if lte and "classic" not in tags:
            continue
        depth = _tag_depth(tags)
        depth = len(hops) if depth is None else depth
        if depth != len(hops):
            break  # the chain left the system resolver's addresses: the rest is not ours
        hops.append(_hop(entry, path, depth))
    return hops


def _hop(entry: dict[str, Any], path: str, depth: int) -> HTTPRequest:
    request = _Doc.obj(entry.get("request"), f"{path}.request")
    response = _Doc.obj(entry.get("response"), f"{path}.response")
    hop_url = _url(request.get("url"), f"{path}.request.url")
    ip = port = None
    address = _Doc.text(entry.get("address"), f"{path}.address")
    if address:
        ip, port = _split_endpoint(address, f"{path}.address")
    headers: list[list[str]] = []
    if response.get("headers_list") is not None:
        for i, pair in enumerate(
            _Doc.array(response.get("headers_list"), f"{path}.response.headers_list")
        ):
            where = f"{path}.response.headers_list[{i}]"
            if not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[0], str):
                raise OONIFormatError(f"{where}: expected [name, value]")
            headers.append([pair[0], _header_value(pair[1], where)])
    else:
        for name, value in _Doc.obj(response.get("headers"), f"{path}.response.headers").items():
            headers.append([str(name), _header_value(value, f"{path}.response.headers")])
    code = _Doc.integer(response.get("code"), f"{path}.response.code")
    hop = HTTPRequest(
        url=hop_url,
        method=_Doc.text(request.get("method"), f"{path}.request.method") or "GET",
        ip=ip,
        port=port,
        failure=_Doc.failure(entry.get("failure"), f"{path}.failure"),
        status_code=code if code and code > 0 else None,
        headers=headers,
        depth=depth,
        t0=_Doc.number(entry.get("t0"), f"{path}.t0"),
        t=_Doc.number(entry.get("t"), f"{path}.t"),
    )
    body = _binary(response.get("body"), f"{path}.response.body")
    if entry.get("x_body_stored") is False:
        body = None
    hop.body = body
    truncated = entry.get("x_body_truncated", response.get("body_is_truncated"))
    hop.body_truncated = truncated is True
    length = _Doc.integer(entry.get("x_body_length"), f"{path}.x_body_length")
    hop.body_length = length if length is not None else (len(body) if body is not None else None)
    if "x_body_sha256" in entry:
        hop.body_sha256 = _Doc.text(entry.get("x_body_sha256"), f"{path}.x_body_sha256")
    elif body:
        hop.body_sha256 = hashlib.sha256(body).hexdigest()
    if "x_title" in entry:
        hop.title = _Doc.text(entry.get("x_title"), f"{path}.x_title")
    elif body:
        hop.title = title_of(body, hop.header("content-type"))
    if "x_location" in entry:
        location = entry.get("x_location")
        hop.location = None if location is None else _url(location, f"{path}.x_location")
    elif hop.status_code in REDIRECT_CODES and hop.header("location") is not None:
        try:
            hop.location = urls.canonical(urls.resolve(hop_url, hop.header("location") or ""))
        except ValueError:
            hop.location = None
    informational = _Doc.array(entry.get("x_informational"), f"{path}.x_informational")
    hop.informational = [c for c in informational if isinstance(c, int) and not isinstance(c, bool)]
    if entry.get("x_raw") is not None:
        hop.raw = _base64(entry.get("x_raw"), f"{path}.x_raw")
    return hop


def _with_hops(
    obs: Observations, hops: list[HTTPRequest], keys: dict[str, Any], ctx: _Context
) -> list[HTTPRequest]:
    """The hops, plus the one where no connection succeeded (OONI writes no request for it):
    from our own export's ``x_probe_unconnected_hops``, else rebuilt from the failed connects."""
    path = "$.test_keys.x_probe_unconnected_hops"
    unconnected = _Doc.array(keys.get("x_probe_unconnected_hops"), path)
    if "x_probe_unconnected_hops" in keys:
        for i, raw in enumerate(unconnected):
            entry = _Doc.obj(raw, f"{path}[{i}]", required=True)
            hops.append(
                HTTPRequest(
                    url=_url(entry.get("url"), f"{path}[{i}].url"),
                    failure=_Doc.failure(entry.get("failure"), f"{path}[{i}].failure"),
                    depth=_Doc.integer(entry.get("depth"), f"{path}[{i}].depth") or 0,
                    t0=_Doc.number(entry.get("t0"), f"{path}[{i}].t0"),
                    t=_Doc.number(entry.get("t"), f"{path}[{i}].t"),
                )
            )
        hops.sort(key=lambda h: h.depth)
        return hops
    last = hops[-1] if hops else None
    if last is None:
        depth, url = 0, obs.url
    elif last.failure is None and last.status_code in REDIRECT_CODES and last.location:
        depth, url = last.depth + 1, last.location
    else:
        return hops
    failure = _first_failure(obs, depth, url)
    if failure is not None:
        hops.append(HTTPRequest(url=url, depth=depth, failure=failure))
    return hops


def _first_failure(obs: Observations, depth: int, url: str) -> str | None:
    """What stopped a hop where every connection failed (None if one succeeded): the TLS
    failure on an address if the handshake was reached, else its TCP failure, taking the
    addresses in the system resolver's order."""
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    connects = [c for c in obs.tcp if c.depth == depth and c.port == port]
    if not connects:
        return None
    secure = parts.scheme == "https"
    handshakes = [h for h in obs.tls if h.depth == depth and h.purpose == "fetch"]
    if any(c.failure is None for c in connects) and (
        not secure or any(h.failure is None for h in handshakes)
    ):
        return None
    host = (parts.hostname or "").lower()
    order = [
        a
        for q in obs.dns
        if q.engine == "system" and q.depth == depth and q.hostname.rstrip(".").lower() == host
        for a in q.addresses
    ]
    # The system resolver's order, then the addresses it did not give (an IP-literal URL's).
    addresses = list(dict.fromkeys([*order, *(c.ip for c in connects)]))
    return hop_failure(obs, depth, port, addresses)


def _tie_requests(obs: Observations, lte: bool) -> None:
    """0.4's requests carry no address: a failed one is tied to the address the connect step
    reached on the URL's port (TLS too for https), so the failure is read as the HTTP
    exchange's, as OONI 0.4 reads it. Only at depth 0, where the connect step ran."""
    if lte:
        return
    for hop in obs.http:
        if hop.depth != 0 or hop.ip is not None or hop.failure is None:
            continue
        scheme, port = urlsplit(hop.url).scheme, None
        try:
            port = urlsplit(hop.url).port or (443 if scheme == "https" else 80)
        except ValueError:
            continue
        for c in obs.tcp:
            if c.depth == 0 and c.port == port and c.failure is None:
                tls_ok = scheme != "https" or any(
                    h.ip == c.ip and h.port == port and h.failure is None for h in obs.tls
                )
                if tls_ok:
                    hop.ip, hop.port = c.ip, port
                    break


def _control(doc: dict[str, Any], keys: dict[str, Any]) -> Control:
    failure = _Doc.failure(keys.get("control_failure"), "$.test_keys.control_failure")
    helpers = _Doc.obj(doc.get("test_helpers"), "$.test_helpers")
    backend = helpers.get("backend")
    helper = None
    if isinstance(backend, dict):
        helper = _Doc.text(backend.get("address"), "$.test_helpers.backend.address")
    extra = _Doc.obj(keys.get("x_probe_control"), "$.test_keys.x_probe_control")
    t0 = _Doc.number(extra.get("t0"), "$.test_keys.x_probe_control.t0")
    t = _Doc.number(extra.get("t"), "$.test_keys.x_probe_control.t")
    helper = _Doc.text(extra.get("helper"), "$.test_keys.x_probe_control.helper") or helper
    raw = keys.get("control")
    if failure is not None or not raw:
        if "failure" in extra:  # our own export says exactly what it was
            failure = _Doc.failure(extra.get("failure"), "$.test_keys.x_probe_control.failure")
        else:
            failure = failure or "no control"
        return Control(helper=helper, failure=failure, response=None, t0=t0, t=t)
    try:
        response = check_response(raw)
    except ValueError as exc:
        raise OONIFormatError(f"$.test_keys.control: {exc}") from None
    return Control(helper=helper, failure=None, response=response, t0=t0, t=t)
