"""What a published report shows of the stored evidence, and where its data came from.

* :func:`evidence` reads, for a few measurements (those that open events), what a reader
  checks a verdict by: the page served (status, title, size, SHA-256, the server's headers,
  the first lines of its text, from the stored body), the page the test helper fetched, the
  DNS answers of the network's resolver and of each control resolver (with the AS numbers the
  helper gave), and the TCP connects and TLS handshakes with what the helper saw at the same
  address. :func:`details` adds it to :func:`~probe.store.research.measurement_details`: the
  ``details_of`` hook of :func:`probe.report.build_report`.
* :func:`provenance` reads what a report states at its top: the probe versions that made the
  verdicts, the test helpers and control resolvers the runs used (their stored ``settings``),
  the vantages and networks with their runs and measurements, and the time range;
  :func:`fingerprint_set` names the block page fingerprints shipped with this probe by a
  content hash.

Everything returned is plain JSON-able data, as stored: text from the network is escaped
by the report formats, never here. A database can arrive from a stranger by ``probe merge``,
so malformed cells (JSON that is not, a body that does not decompress) are read as absent,
never raised on, and a compressed body is never inflated beyond what is shown of it.
The system resolver's address is shown only when the run recorded it as public
(``runs.resolver_ip``): a home router's private address says nothing a reader needs.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterable
from html.parser import HTMLParser
from importlib import resources
from typing import Any

from sqlite_utils import Database

from .. import __version__
from ..analysis.fingerprints import CP_BLOCKPAGES, CP_FALSE_POSITIVES, OURS
from ..model.charset import charset_of, decode_text
from ..ooni.helper_protocol import ip_asn, our_failure
from .research import Filters, measurement_details

#: Of a page: bytes of the body read for its text, lines and characters of text shown, and
#: headers shown (a block page is a few KiB; a stranger's body may be anything).
TEXT_BYTES = 16 * 1024
TEXT_LINES = 12
LINE_CHARS = 240
MAX_HEADERS = 40
HEADER_CHARS = 400
#: Addresses kept per DNS answer, handshakes and connects per measurement.
MAX_ADDRESSES = 16
MAX_STEPS = 12


# ------------------------------------------------------------------ evidence


def details(db: Database, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """:func:`~probe.store.research.measurement_details` with each one's ``observed``
    evidence (:func:`evidence`): what ``probe report`` passes as ``details_of``."""
    wanted = list(dict.fromkeys(i for i in ids if i))
    out = measurement_details(db, wanted)
    observed = evidence(db, wanted)
    for measurement_id, detail in out.items():
        detail["observed"] = observed.get(measurement_id)
    return out


def evidence(db: Database, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Measurement id -> the observations a reader checks its verdict by (see the module
    docstring): ``{"bodies": True, "network_resolver", "dns", "tcp", "tls", "page",
    "control"}``, each absent part None or empty."""
    out: dict[str, dict[str, Any]] = {}
    for measurement_id in dict.fromkeys(i for i in ids if i):
        row = db.execute(
            """select m.domain, r.resolver_ip, r.resolver_asn, r.resolver_network_name
               from measurements m left join runs r on r.id = m.run_id where m.id = ?""",
            [measurement_id],
        ).fetchone()
        if row is None:
            continue
        domain, resolver_ip, resolver_asn, resolver_name = row
        control, helper, helper_failure = _control_response(db, measurement_id)
        out[measurement_id] = {
            "bodies": True,
            "network_resolver": {
                "ip": resolver_ip or None,
                "asn": resolver_asn or None,
                "name": resolver_name or None,
            },
            "dns": _dns(db, measurement_id, domain, control),
            "tcp": _tcp(db, measurement_id, control),
            "tls": _tls(db, measurement_id, control),
            "page": _page(db, measurement_id),
            "control": {
                "helper": helper,
                "failure": helper_failure,
                "answered": control is not None,
                "page": _control_page(control),
            },
        }
    return out


def _json(text: Any, default: Any) -> Any:
    if not isinstance(text, str | bytes):
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


def _control_response(
    db: Database, measurement_id: str
) -> tuple[dict[str, Any] | None, str | None, str | None]:
    row = db.execute(
        "select response, helper, failure from controls where measurement_id = ?",
        [measurement_id],
    ).fetchone()
    if row is None:
        return None, None, None
    response = _json(row[0], None)
    return (response if isinstance(response, dict) else None), row[1], row[2]


def _strings(values: Any, limit: int = MAX_ADDRESSES) -> list[str]:
    if not isinstance(values, list):
        return []
    return [v for v in values if isinstance(v, str)][:limit]


def _asns(control: dict[str, Any] | None, addresses: Iterable[str]) -> dict[str, str]:
    """Address -> ``AS13335`` as the helper's ``ip_info`` gave it (known ones only)."""
    found = {}
    for address in addresses:
        asn = ip_asn(control, address)
        if asn:
            found[address] = f"AS{asn}"
    return found


def _dns(
    db: Database, measurement_id: str, domain: str, control: dict[str, Any] | None
) -> dict[str, Any]:
    """The first hop's A/AAAA answers: the network's resolver, each control resolver (in
    the order asked), and the test helper's resolver."""
    system: dict[str, Any] | None = None
    resolvers: dict[tuple[str, str], dict[str, Any]] = {}
    rows = db.execute(
        """select engine, resolver, query_type, failure, rcode, addresses from dns_queries
           where measurement_id = ? and depth = 0 order by rowid""",
        [measurement_id],
    )
    host = domain
    for engine, resolver, _query_type, failure, rcode, addresses in rows:
        answer = _strings(_json(addresses, []))
        if engine == "system":
            side = system = system or {"addresses": [], "failure": None, "rcode": None}
        else:
            key = (str(engine), str(resolver))
            side = resolvers.setdefault(
                key,
                {
                    "engine": key[0],
                    "resolver": key[1],
                    "addresses": [],
                    "failure": None,
                    "rcode": None,
                },
            )
        side["addresses"] += [a for a in answer if a not in side["addresses"]]
        # An empty AAAA answer next to an A answer is no failure worth showing.
        if failure and not side["failure"] and not (answer or side["addresses"]):
            side["failure"] = failure
        side["rcode"] = side["rcode"] or rcode
    helper = None
    dns = (control or {}).get("dns")
    if isinstance(dns, dict):
        helper = {
            "addresses": _strings(dns.get("addrs")),
            "failure": our_failure(dns.get("failure"))
            if isinstance(dns.get("failure"), str)
            else None,
        }
    everything = [
        *(system or {}).get("addresses", []),
        *(a for r in resolvers.values() for a in r["addresses"]),
        *((helper or {}).get("addresses") or []),
    ]
    if system is None and not resolvers and helper is None:
        return {}
    return {
        "host": host,
        "system": system,
        "resolvers": list(resolvers.values()),
        "helper": helper,
        "asns": _asns(control, dict.fromkeys(everything)),
    }


def _control_tcp(control: dict[str, Any] | None, endpoint: str) -> dict[str, Any] | None:
    entry = ((control or {}).get("tcp_connect") or {}).get(endpoint)
    if not isinstance(entry, dict):
        return None
    failure = entry.get("failure")
    return {
        "ok": entry.get("status") is True,
        "failure": our_failure(failure) if isinstance(failure, str) else None,
    }


def _endpoint(ip: Any, port: Any) -> str:
    return f"[{ip}]:{port}" if ":" in str(ip) else f"{ip}:{port}"


def _tcp(db: Database, measurement_id: str, control: dict[str, Any] | None) -> list[Any]:
    rows = db.execute(
        """select ip, port, failure from tcp_connects where measurement_id = ? and depth = 0
           order by rowid limit ?""",
        [measurement_id, MAX_STEPS],
    )
    return [
        {
            "ip": ip,
            "port": port,
            "failure": failure,
            "control": _control_tcp(control, _endpoint(ip, port)),
        }
        for ip, port, failure in rows
    ]


def _tls(db: Database, measurement_id: str, control: dict[str, Any] | None) -> list[Any]:
    rows = db.execute(
        """select ip, port, server_name, failure, tls_version, cert_sha256, cert_subject,
                  cert_issuer, purpose
           from tls_handshakes where measurement_id = ? and depth = 0 order by rowid limit ?""",
        [measurement_id, MAX_STEPS],
    )
    out = []
    for ip, port, sni, failure, version, cert, subject, issuer, purpose in rows:
        entry = ((control or {}).get("tls_handshake") or {}).get(_endpoint(ip, port))
        seen = None
        if isinstance(entry, dict):
            helper_failure, name = entry.get("failure"), entry.get("server_name")
            seen = {
                "ok": entry.get("status") is True,
                "failure": our_failure(helper_failure) if isinstance(helper_failure, str) else None,
                "sni": name if isinstance(name, str) else None,
            }
        out.append(
            {
                "ip": ip,
                "port": port,
                "sni": sni,
                "failure": failure,
                "tls_version": version,
                "cert_sha256": cert,
                "cert_subject": subject,
                "cert_issuer": issuer,
                "purpose": purpose,
                "control": seen,
            }
        )
    return out


def _inflate(blob: Any, encoding: Any, limit: int) -> bytes | None:
    """The first ``limit`` bytes of a stored body (never more: a stranger's database may
    hold a zlib bomb); None when absent or unreadable."""
    if not isinstance(blob, bytes):
        return None
    if encoding != "zlib":
        return blob[:limit]
    try:
        return zlib.decompressobj().decompress(blob, limit)
    except zlib.error:
        return None


def _page(db: Database, measurement_id: str) -> dict[str, Any] | None:
    """The final response of the fetch (its last hop with a status or raw bytes): the page
    the network served, with the redirects before it."""
    rows = db.execute(
        """select hop, url, ip, port, failure, status_code, headers, title, body_length,
                  body_sha256, body_truncated, location, body, body_encoding, raw
           from http_requests where measurement_id = ? order by hop""",
        [measurement_id],
    ).fetchall()
    if not rows:
        return None
    answered = [r for r in rows if r[5] is not None or r[14] is not None]
    last = (answered or rows)[-1]
    (_, url, ip, port, failure, status, headers, title, length, sha256, truncated, _location,
     body, encoding, raw) = last  # fmt: skip
    pairs = [
        [str(p[0])[:HEADER_CHARS], str(p[1])[:HEADER_CHARS]]
        for p in _json(headers, [])
        if isinstance(p, list) and len(p) == 2
    ][:MAX_HEADERS] if isinstance(_json(headers, []), list) else []  # fmt: skip
    content_type = next((v for n, v in pairs if n.lower() == "content-type"), None)
    head = _inflate(body, encoding, TEXT_BYTES)
    stored_body = head is not None
    if head is None and isinstance(raw, bytes):
        head = raw[:TEXT_BYTES]
    return {
        "url": url,
        "ip": ip,
        "port": port,
        "failure": failure,
        "status": status,
        "title": title,
        "size": length,
        "sha256": sha256,
        "truncated": bool(truncated),
        "headers": pairs,
        "content_type": content_type,
        "body_stored": stored_body,
        "not_http": head is not None and not stored_body,
        "text": text_lines(head, content_type) if head else [],
        "redirects": [
            {"url": r[1], "status": r[5], "location": r[11]} for r in rows if r is not last
        ][:MAX_STEPS],
    }


def _control_page(control: dict[str, Any] | None) -> dict[str, Any] | None:
    http = (control or {}).get("http_request")
    if not isinstance(http, dict):
        return None
    headers = http.get("headers")
    failure = http.get("failure")
    status = http.get("status_code")
    length = http.get("body_length")
    return {
        "status": status if isinstance(status, int) and status > 0 else None,
        "title": http.get("title") if isinstance(http.get("title"), str) else None,
        "size": length if isinstance(length, int) and length >= 0 else None,
        "sha256": None,  # OONI's helper protocol sends no hash of the page
        "failure": our_failure(failure) if isinstance(failure, str) else None,
        "headers": [[str(k)[:HEADER_CHARS], str(v)[:HEADER_CHARS]] for k, v in headers.items()][
            :MAX_HEADERS
        ]
        if isinstance(headers, dict)
        else [],
    }


class _Text(HTMLParser):
    """A page's visible text, line by line (no script or style), stopping when enough."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.current: list[str] = []
        self.hidden = 0

    _BREAKS = frozenset(
        "br p div li tr h1 h2 h3 h4 h5 h6 title table ul ol section header footer".split()
    )

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("script", "style", "noscript", "template"):
            self.hidden += 1
        if tag in self._BREAKS:
            self._line()

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "noscript", "template") and self.hidden:
            self.hidden -= 1
        if tag in self._BREAKS:
            self._line()

    def handle_data(self, data: str) -> None:
        if self.hidden:
            return
        parts = data.split("\n")
        for i, part in enumerate(parts):
            if i:
                self._line()
            self.current.append(part)

    def _line(self) -> None:
        text = " ".join("".join(self.current).split())
        self.current = []
        if text and len(self.lines) < TEXT_LINES:
            self.lines.append(text if len(text) <= LINE_CHARS else text[: LINE_CHARS - 1] + "…")


def text_lines(body: bytes, content_type: str | None) -> list[str]:
    """The first :data:`TEXT_LINES` lines of a page's visible text (HTML tags, scripts and
    styles left out; anything else line by line), in the page's charset."""
    text = decode_text(body, charset_of(content_type, body))
    if "<" not in text:
        lines = [" ".join(line.split()) for line in text.splitlines()]
        return [
            line if len(line) <= LINE_CHARS else line[: LINE_CHARS - 1] + "…"
            for line in lines
            if line
        ][:TEXT_LINES]
    parser = _Text()
    parser.feed(text)
    parser.close()
    parser._line()
    return parser.lines


# ------------------------------------------------------------------ provenance


def fingerprint_set() -> dict[str, Any]:
    """The block page fingerprints shipped with this probe: a SHA-256 over the three files
    (name and content, in order), and how many signatures each holds."""
    digest = hashlib.sha256()
    counts = {}
    for name in (OURS, CP_BLOCKPAGES, CP_FALSE_POSITIVES):
        data = resources.files("probe").joinpath("data", name).read_bytes()
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
        if name == OURS:
            counts[name] = len(json.loads(data))
        else:
            counts[name] = sum(1 for line in data.splitlines() if line.strip())
    return {"sha256": digest.hexdigest(), "signatures": counts}


def base_provenance() -> dict[str, Any]:
    """What any report states of the software that wrote it."""
    return {"probe_version": __version__, "fingerprints": fingerprint_set()}


def provenance(db: Database, filters: Filters | None = None) -> dict[str, Any]:
    """Where the measurements of a report (``filters``) came from: see the module docstring.

    ``networks``: per AS number, its name, runs, measurements, vantages, first and last
    measurement and the network's resolver (AS and name); ``vantages``: per vantage, its kind
    (``local``: this probe; ``remote``: merged from another volunteer; ``ooni``: imported),
    networks, runs and measurements, numbered in the order first seen (its stored name is
    the volunteer's and is left out: a published report should not name volunteers)."""
    where, args = (filters or Filters()).where()
    # One scan of the measurements, grouped by run (a report over a million measurements
    # spent a third of its time scanning them again for each figure); runs are few.
    per_run = db.execute(
        f"""select m.run_id, m.probe_asn, coalesce(m.software_version, ''), count(*),
                   min(m.start_time), max(m.start_time)
            from measurements m where {where} group by 1, 2, 3""",
        args,
    ).fetchall()
    runs_of = {
        row[0]: row[1:]
        for row in db.execute(
            """select r.id, r.probe_asn, r.vantage_id, v.kind, r.settings, r.resolver_asn,
                      r.resolver_network_name
               from runs r left join vantages v on v.id = r.vantage_id"""
        )
    }
    grouped: dict[tuple[Any, Any, Any], list[Any]] = {}  # (asn, vantage, kind) -> figures
    version_counts: dict[str, int] = {}
    run_ids: set[str] = set()
    for run_id, probe_asn, version, count, start, end in per_run:
        run_asn, vantage, kind = (runs_of.get(run_id) or (None, None, None))[:3]
        group = (probe_asn or run_asn, vantage, kind)
        figures = grouped.setdefault(group, [0, set(), start, end])
        figures[0] += count
        figures[1].add(run_id)
        figures[2] = min(figures[2], start) if figures[2] and start else figures[2] or start
        figures[3] = max(figures[3], end) if figures[3] and end else figures[3] or end
        version_counts[version] = version_counts.get(version, 0) + count
        run_ids.add(run_id)
    rows = sorted(
        (
            (asn, vantage, kind, f[0], len(f[1]), f[2], f[3])
            for (asn, vantage, kind), f in grouped.items()
        ),
        key=lambda row: row[5] or "",
    )
    networks: dict[str, dict[str, Any]] = {}
    vantages: dict[str, dict[str, Any]] = {}
    first = last = None
    for asn, vantage, kind, measurements, runs, start, end in rows:
        key = asn or ""
        net = networks.setdefault(
            key,
            {"asn": asn, "measurements": 0, "runs": 0, "vantages": 0, "first": start, "last": end},
        )
        net["measurements"] += measurements
        net["runs"] += runs
        net["vantages"] += 1
        net["first"] = min(net["first"], start) if net["first"] and start else net["first"] or start
        net["last"] = max(net["last"], end) if net["last"] and end else net["last"] or end
        v = vantages.setdefault(
            vantage or "",
            {"number": len(vantages) + 1, "id": vantage, "kind": kind, "networks": [],
             "measurements": 0, "runs": 0},
        )  # fmt: skip
        v["networks"].append(asn)
        v["measurements"] += measurements
        v["runs"] += runs
        first = min(first, start) if first and start else first or start
        last = max(last, end) if last and end else last or end
    runs_total = len(run_ids)
    helpers: dict[str, int] = {}
    resolvers: dict[str, int] = {}
    network_resolvers: dict[tuple[Any, Any, Any], int] = {}
    for run_id in run_ids:
        run_asn, _vantage, _kind, settings, resolver_asn, resolver_name = (
            runs_of.get(run_id) or (None,) * 6
        )
        if resolver_asn is not None:
            found = (run_asn, resolver_asn, resolver_name)
            network_resolvers[found] = network_resolvers.get(found, 0) + 1
        parsed = _json(settings, {})
        if not isinstance(parsed, dict):
            continue
        for url in _strings(parsed.get("helpers"), 50):
            helpers[url] = helpers.get(url, 0) + 1
        for url in _strings(parsed.get("control_resolvers"), 50):
            resolvers[url] = resolvers.get(url, 0) + 1
    for (asn, resolver_asn, resolver_name), _count in sorted(
        network_resolvers.items(), key=lambda item: item[1]
    ):
        if (asn or "") in networks:  # the most frequent comes last and wins
            networks[asn or ""]["resolver"] = {"asn": resolver_asn, "name": resolver_name}
    versions = sorted(version_counts.items(), key=lambda item: -item[1])
    # From the few re-analysed and imported measurements to theirs, not the other way round.
    reanalysed = db.execute(
        f"""select count(distinct x.measurement_id), max(x.at) from reanalyses x
            join measurements m on m.id = x.measurement_id where {where}""",
        args,
    ).fetchone()
    imported = db.execute(
        f"""select count(*) from ooni_imports x
            join measurements m on m.id = x.measurement_id where {where}""",
        args,
    ).fetchone()[0]
    return base_provenance() | {
        "source": "sqlite",
        "bodies": True,
        "first": first,
        "last": last,
        "measurements": sum(n["measurements"] for n in networks.values()),
        "runs": runs_total,
        "networks": sorted(networks.values(), key=lambda n: n["asn"] or ""),
        "vantages": list(vantages.values()),
        "helpers": sorted(helpers, key=lambda u: (-helpers[u], u)),
        "control_resolvers": sorted(resolvers, key=lambda u: (-resolvers[u], u)),
        "analysis_versions": {version or "unknown": count for version, count in versions},
        "reanalysed": reanalysed[0],
        "last_reanalysis": reanalysed[1],
        "imported_from_ooni": imported,
    }
