"""Plain records of what was observed, and the verdict drawn from them.

Data flows one way: the network primitives produce these records, :mod:`probe.analysis`
turns an :class:`Observations` into a :class:`Verdict` (pure, so it can re-run over stored or
imported data), and :mod:`probe.store` writes both. Every record is a dataclass of JSON-able
values (``to_dict`` / ``from_dict``); times ``t0``/``t`` are seconds since the target's
measurement started. ``failure`` is ``None`` on success, else a string from
:mod:`probe.model.failures`. ``depth`` is the redirect hop (0 for the URL as given). The
vocabularies of verdicts, blocking methods and findings are here too, each written once.

No record ever holds the volunteer's own IP address.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

#: DNS engines. ``system`` is the network's own resolver (from /etc/resolv.conf or
#: ``--resolver``); the others are control resolvers, by transport.
ENGINES = ("system", "udp", "tcp", "tls", "https")
#: Engines a censor on the path cannot forge without a certificate the probe trusts.
ENCRYPTED_ENGINES = frozenset({"tls", "https"})


@dataclass(frozen=True, slots=True)
class Target:
    """One URL to measure, as a target list gave it."""

    input: str  # exactly as written
    url: str  # normalised: scheme, punycode host, path
    domain: str  # the URL's host, punycode
    category: str | None = None
    source: str | None = None  # "FILE:LINE", or None for --input


@dataclass(slots=True)
class DNSQuery:
    """One DNS question (A or AAAA) to one resolver."""

    hostname: str
    query_type: str  # "A" | "AAAA"
    engine: str  # one of ENGINES
    resolver: str  # the resolver's URL, e.g. "udp://192.0.2.53:53", "https://dns.google/dns-query"
    failure: str | None = None
    rcode: str | None = None  # "NOERROR", "NXDOMAIN", ... (None when no reply)
    addresses: list[str] = field(default_factory=list)  # A/AAAA answers, in order
    cnames: list[str] = field(default_factory=list)
    ttl: int | None = None
    # Replies beyond the one recorded above, in arrival order (an injector racing the real
    # resolver answers twice: OONI's x_dns_duplicate_responses). Each: {"rcode", "addresses",
    # "wrong_id": bool, "t"}.
    duplicate_replies: list[dict[str, Any]] = field(default_factory=list)
    depth: int = 0
    t0: float = 0.0
    t: float = 0.0
    # How many addresses the answer held (on the CNAME chain from the question): ``addresses``
    # keeps the first 64 of them. None: not counted (imported, or stored before it was).
    addresses_total: int | None = None


@dataclass(slots=True)
class TCPConnect:
    """One TCP connect to ip:port."""

    ip: str
    port: int
    failure: str | None = None
    depth: int = 0
    t0: float = 0.0
    t: float = 0.0


@dataclass(slots=True)
class TLSHandshake:
    """One TLS handshake with SNI ``server_name`` on ip:port, certificate verified.

    ``failure`` is None only when the handshake completed *and* the certificate validated
    for ``server_name``. ``purpose`` is "fetch" when the handshake serves the HTTP fetch,
    "validate" for the check on :443 of an http:// URL's addresses.
    """

    ip: str
    port: int
    server_name: str
    failure: str | None = None
    tls_version: str | None = None  # e.g. "TLSv1.3"
    cipher: str | None = None
    alpn: str | None = None
    # Hex SHA-256 of the leaf certificate (DER); after a certificate failure, of the certificate
    # presented (seen in a second, unverified handshake).
    cert_sha256: str | None = None
    cert_subject: str | None = None
    cert_issuer: str | None = None
    purpose: str = "fetch"
    depth: int = 0
    t0: float = 0.0
    t: float = 0.0


@dataclass(slots=True)
class HTTPRequest:
    """One HTTP request/response: one hop of the fetch.

    ``headers`` keeps every response header as ``[name, value]`` pairs, in order.
    ``body`` holds at most the cap (512 KiB); ``body_truncated`` says when more was sent.
    ``body_length`` is the length of what was read (decoded), ``body_sha256`` its hash.
    ``informational`` lists the 1xx status codes received before the response.
    ``raw`` keeps the first bytes received (at most 4 KiB) when the response could not be
    parsed as HTTP: the evidence of what answered.
    """

    url: str
    method: str = "GET"
    ip: str | None = None
    port: int | None = None
    failure: str | None = None
    status_code: int | None = None
    headers: list[list[str]] = field(default_factory=list)
    title: str | None = None
    body: bytes | None = None
    body_length: int | None = None
    body_sha256: str | None = None
    body_truncated: bool = False
    location: str | None = None  # the redirect target, resolved against url
    informational: list[int] = field(default_factory=list)
    raw: bytes | None = None
    depth: int = 0
    t0: float = 0.0
    t: float = 0.0

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None


@dataclass(slots=True)
class Control:
    """What the test helper saw from outside the censored network.

    ``response`` is the helper's JSON answer exactly as OONI's protocol defines it
    (keys ``tcp_connect``, ``tls_handshake``, ``http_request``, ``dns``, ``ip_info``), or
    None when no helper answered; then ``failure`` says why.
    """

    helper: str | None = None  # URL of the helper that answered (or was last tried)
    failure: str | None = None
    response: dict[str, Any] | None = None
    t0: float = 0.0
    t: float = 0.0


@dataclass(slots=True)
class Observations:
    """Everything measured for one target; the analysis' only input."""

    input: str  # exactly as written in the target list
    url: str  # normalised URL measured (IDN as punycode)
    domain: str  # URL host (punycode)
    category: str | None = None
    start_time: str = ""  # UTC, "YYYY-MM-DD HH:MM:SS[.mmm]"
    runtime: float = 0.0
    dns: list[DNSQuery] = field(default_factory=list)
    tcp: list[TCPConnect] = field(default_factory=list)
    tls: list[TLSHandshake] = field(default_factory=list)
    http: list[HTTPRequest] = field(default_factory=list)  # in hop order, first request first
    control: Control = field(default_factory=Control)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Observations:
        return cls(
            input=data["input"],
            url=data["url"],
            domain=data["domain"],
            category=data.get("category"),
            start_time=data.get("start_time", ""),
            runtime=data.get("runtime", 0.0),
            dns=[DNSQuery(**d) for d in data.get("dns", [])],
            tcp=[TCPConnect(**d) for d in data.get("tcp", [])],
            tls=[TLSHandshake(**d) for d in data.get("tls", [])],
            http=[_http_from_dict(d) for d in data.get("http", [])],
            control=Control(**data.get("control") or {}),
        )


#: What the analysis can say of a target.
VerdictName = Literal["accessible", "blocked", "down", "inconclusive"]
VERDICTS: tuple[VerdictName, ...] = ("accessible", "blocked", "down", "inconclusive")
#: How a blocked target was blocked (OONI's names, plus "tls").
Blocking = Literal["dns", "tcp_ip", "tls", "http-failure", "http-diff"]
BLOCKINGS: tuple[Blocking, ...] = ("dns", "tcp_ip", "tls", "http-failure", "http-diff")
#: The measurement step a piece of evidence is about.
Step = Literal["dns", "tcp", "tls", "http", "control"]
#: OONI's ``accessible`` for each verdict (True, False, or None when undecided).
ACCESSIBLE: dict[str, bool | None] = {
    "accessible": True,
    "blocked": False,
    "down": False,
    "inconclusive": None,
}


class Finding(enum.StrEnum):
    """What the analysis found at a step: every :class:`Evidence` names one, and
    :mod:`probe.analysis.explain` has a sentence for each (a test checks both). Stored as its
    value; a stored finding no longer in this list is kept as the string it was."""

    HTTPS_OK = "https_ok"
    NO_CONTROL = "no_control"
    BLOCKPAGE_WITHOUT_CONTROL = "blockpage_without_control"
    BLOCKPAGE_FINGERPRINT = "blockpage_fingerprint"
    PAGE_WITHOUT_CONTROL = "page_without_control"
    PAGE_SAME = "page_same"
    PAGE_DIFFERS = "page_differs"
    PAGE_NOT_COMPARABLE = "page_not_comparable"
    INTERRUPTED = "interrupted"
    TOO_MANY_REDIRECTS = "too_many_redirects"
    HTTP_FAILED = "http_failed"
    TLS_FAILED = "tls_failed"
    TCP_FAILED = "tcp_failed"
    REDIRECT_TCP_FAILED = "redirect_tcp_failed"
    SYSTEM_RESOLVER_FAILED = "system_resolver_failed"
    RESOLVER_UNREACHABLE = "resolver_unreachable"
    BOGON_ANSWER = "bogon_answer"
    REDIRECT_DNS_FAILED = "redirect_dns_failed"
    REDIRECT_NOT_FOLLOWED = "redirect_not_followed"
    REFUSED_PRIVATE_ADDRESS = "refused_private_address"
    REFUSED_OWN_ADDRESS = "refused_own_address"
    NO_RULE = "no_rule"
    PROBE_STALLED = "probe_stalled"
    DNS_BLOCKPAGE_ADDRESS = "dns_blockpage_address"
    DNS_FAILED_CONTROL_RESOLVED = "dns_failed_control_resolved"
    DNS_INJECTED = "dns_injected"
    DNS_GHOST_ANSWER = "dns_ghost_answer"
    DNS_BOGON_ANSWER = "dns_bogon_answer"
    DNS_ANSWER_DIFFERS = "dns_answer_differs"


@dataclass(slots=True)
class Evidence:
    """One comparison behind a verdict: what the vantage saw at a step, and what the control saw.

    ``finding`` names what the analysis found (the list, and the sentence each makes, is in
    :mod:`probe.analysis.explain`); ``ours`` and ``control`` hold the values compared (failure
    strings, addresses, endpoints, the SNI, status codes, titles, a fingerprint id), JSON-able,
    so a report can lay them out and a re-analysis can compare them.
    """

    finding: str
    step: Step
    ours: dict[str, Any] = field(default_factory=dict)
    control: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evidence:
        return cls(data["finding"], data["step"], data.get("ours", {}), data.get("control", {}))


@dataclass(slots=True)
class Verdict:
    """The analysis' answer for one target.

    ``verdict`` and ``blocking`` (None unless blocked) use the vocabularies above.
    ``accessible``: OONI's meaning (True, False, or None when undecided).
    ``dns_consistency``: "consistent" | "inconsistent" | None (no DNS control).
    ``failure``: the failure string of the step that decided, if any.
    ``blockpage``: id of the matched blockpage fingerprint, or None; ``confirmed`` is True
    when a blockpage fingerprint matched.
    ``evidence``: what was compared, the deciding comparison first.
    ``reason``: the evidence as sentences a researcher can read.
    The ``body_*``, ``*_match`` fields are OONI's HTTP comparison of the final page.
    """

    verdict: VerdictName
    blocking: Blocking | None = None
    accessible: bool | None = None
    dns_consistency: str | None = None
    failure: str | None = None
    blockpage: str | None = None
    confirmed: bool = False
    reason: str = ""
    body_proportion: float | None = None
    body_length_match: bool | None = None
    status_code_match: bool | None = None
    headers_match: bool | None = None
    title_match: bool | None = None
    evidence: list[Evidence] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def utc_now() -> str:
    """Now, in UTC, in the records' time format ``YYYY-MM-DD HH:MM:SS`` (OONI's)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def measurement_time() -> str:
    """Now, in UTC, as a measurement's ``start_time``: ``YYYY-MM-DD HH:MM:SS.mmm``. The
    milliseconds order the measurements of one second (a run starts dozens a second); the text
    still sorts as time beside rows stored with whole seconds (``…:02`` < ``…:02.250`` <
    ``…:03``), and OONI's exports cut it to the second, as OONI's format wants."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:23]


def _http_from_dict(data: dict[str, Any]) -> HTTPRequest:
    data = dict(data)
    for key in ("body", "raw"):
        if isinstance(data.get(key), str):
            data[key] = data[key].encode("latin-1")
    return HTTPRequest(**data)


def to_dict(record: Any) -> dict[str, Any]:
    """A record as plain JSON-able data (bytes become latin-1 text, losslessly)."""
    out = dataclasses.asdict(record)
    for hop in out.get("http", []):
        for key in ("body", "raw"):
            if isinstance(hop.get(key), bytes):
                hop[key] = hop[key].decode("latin-1")
    return out


class MeasurementSummary(NamedTuple):
    """What the timeline needs of one measurement (a NamedTuple: built from a row cheaply).

    ``time`` is seconds since the Unix epoch (UTC); ``input`` is the URL measured
    (normalised, OONI's ``input``): the unit of a timeline, http:// and https:// of one
    domain apart; ``asn`` is ``"AS8449"`` or None when the network was not recorded;
    ``vantage`` identifies the probe that measured (a database's vantage id); ``evidence``
    is the stored evidence (JSON text or the parsed list), needed for blocked measurements
    only.
    """

    time: int
    domain: str
    input: str
    asn: str | None
    vantage: str | None
    run: str
    verdict: str
    blocking: str | None = None
    failure: str | None = None
    blockpage: str | None = None
    measurement_id: str | None = None
    evidence: str | Sequence[Mapping[str, Any]] | None = None


def hop_failure(obs: Observations, depth: int, port: int, addresses: list[str]) -> str | None:
    """What stopped a hop at redirect ``depth`` where no connection got through, taking
    ``addresses`` in their order (the system resolver's): the fetch's TLS failure at the first
    address whose handshake was reached, else its TCP failure on ``port`` (the :443 validation
    of an http:// URL's addresses is not the fetch); None when no failure is recorded."""
    for ip in addresses:
        for handshake in obs.tls:
            if handshake.depth == depth and handshake.ip == ip and handshake.purpose == "fetch":
                if handshake.failure:
                    return handshake.failure
        for connect in obs.tcp:
            if connect.depth == depth and connect.ip == ip and connect.port == port:
                if connect.failure:
                    return connect.failure
    return None
