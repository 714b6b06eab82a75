"""`probe report` shows the evidence itself and where its data came from (issue 23).

A database written row by row, as a run stores it (no network): a block page with its body
(zlib-compressed, as the store keeps it) beside the page the test helper fetched, a DNS lie
beside the control resolvers' answers, a TLS reset beside the helper's handshake. Each format
must hold the block page's title, size and SHA-256 and the control's title, in sentences
without the analysis' internal ids; what the network sent (titles, headers, body text with
ESC, U+202E and ``<script>``) comes out escaped; the provenance names the probe version, the
fingerprint set's hash, the helpers, the resolvers, the vantages and networks with their AS
names and counts.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import uuid
import zlib
from importlib import resources
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from probe import __version__
from probe.cli import cli
from probe.model.records import Finding
from probe.store import open_db
from probe.store.evidence import fingerprint_set

HOSTILE = "\x1b]0;pwned\x07\u202egpj.exe<script>alert(1)</script>"
#: Raw characters no report may hold (C0 but tab and newline, DEL, C1, bidi controls).
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
BLOCK_TITLE = "Доступ ограничен"
BLOCK_BODY = (
    f"<html><head><title>{BLOCK_TITLE}</title><script>var x = 'script-only-marker';</script></head>"
    "<body><h1>Доступ к сайту ограничен</h1><p>По решению суда.</p>"
    "<p>Note: \x1b]0;pwned\x07\u202egpj.exe &lt;script&gt;alert(2)&lt;/script&gt;</p>"
    "</body></html>"
).encode()
BLOCK_SHA = hashlib.sha256(BLOCK_BODY).hexdigest()
CONTROL_TITLE = "Kloop — новости"
SETTINGS = {
    "resolver": "udp://192.168.1.1:53",  # the home router: never shown
    "control_resolvers": ["https://cloudflare-dns.com/dns-query", "udp://8.8.8.8:53"],
    "helpers": ["https://th.example.org/"],
}
NAMES = {"AS8449": "ElCat", "AS12389": "Rostelecom"}


def day(n: int) -> str:
    return f"2026-10-{20 + n:02d} 08:00:00"


class Writer:
    """Runs, measurements and their observations written as the store writes them."""

    def __init__(self, path: Path) -> None:
        self.db = open_db(path)
        self.db.execute(
            "insert into vantages (id, name, kind, added_at) values "
            "('remote-1', 'alice at home', 'remote', ?)",
            [day(0)],
        )

    def run(self, when: str, asn: str, vantage: str | None = None) -> str:
        run_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{when}/{asn}/{vantage}"))
        self.db.execute(
            "insert or ignore into runs (id, started_at, finished_at, status, probe_asn, "
            "probe_cc, offline, targets, settings, probe_network_name, resolver_asn, "
            "resolver_network_name, vantage_id, software_version) "
            "values (?, ?, ?, 'complete', ?, 'KG', 0, 1, ?, ?, ?, ?, "
            "coalesce(?, (select id from vantages where kind = 'local')), ?)",
            [run_id, when, when, asn, json.dumps(SETTINGS), NAMES[asn], asn, NAMES[asn],
             vantage, __version__],
        )  # fmt: skip
        return run_id

    def measurement(
        self,
        when: str,
        domain: str,
        asn: str,
        verdict: str,
        blocking: str | None,
        evidence: list[dict[str, Any]],
        *,
        vantage: str | None = None,
    ) -> str:
        run_id = self.run(when, asn, vantage)
        measurement_id = str(uuid.uuid4())
        self.db.execute(
            "insert into measurements (id, run_id, input, url, domain, start_time, probe_asn, "
            "probe_cc, verdict, blocking, confirmed, reason, evidence, software_version) "
            "values (?, ?, ?, ?, ?, ?, ?, 'KG', ?, ?, 0, 'stored reason', ?, ?)",
            [measurement_id, run_id, f"http://{domain}/", f"http://{domain}/", domain, when,
             asn, verdict, blocking, json.dumps(evidence), __version__],
        )  # fmt: skip
        return measurement_id

    def dns(self, measurement_id: str, host: str, engine: str, resolver: str, *addresses: str):
        self.db.execute(
            "insert into dns_queries (measurement_id, depth, t0, t, hostname, query_type, "
            "engine, resolver, rcode, addresses, cnames) "
            "values (?, 0, 0, 0, ?, 'A', ?, ?, 'NOERROR', ?, '[]')",
            [measurement_id, host, engine, resolver, json.dumps(list(addresses))],
        )

    def control(self, measurement_id: str, response: dict[str, Any]) -> None:
        self.db.execute(
            "insert into controls (measurement_id, helper, failure, response, t0, t) "
            "values (?, 'https://th.example.org/', null, ?, 0, 0)",
            [measurement_id, json.dumps(response)],
        )

    def page(self, measurement_id: str, url: str, body: bytes, headers: list[list[str]]):
        self.db.execute(
            "insert into http_requests (measurement_id, depth, t0, t, hop, url, method, ip, "
            "port, status_code, headers, title, body_length, body_sha256, body_truncated, "
            "body, body_encoding, informational) "
            "values (?, 0, 0, 0, 0, ?, 'GET', '10.10.34.35', 80, 200, ?, ?, ?, ?, 0, ?, "
            "'zlib', '[]')",
            [measurement_id, url, json.dumps(headers), f"{BLOCK_TITLE} {HOSTILE}", len(body),
             hashlib.sha256(body).hexdigest(), zlib.compress(body)],
        )  # fmt: skip


def helper_page(title: str, length: int, **extra: Any) -> dict[str, Any]:
    return {
        "tcp_connect": {},
        "tls_handshake": {},
        "http_request": {
            "body_length": length,
            "failure": None,
            "title": title,
            "headers": {"Server": "nginx"},
            "status_code": 200,
        },
        "dns": {"failure": None, "addrs": ["104.18.1.1"]},
        "ip_info": {"104.18.1.1": {"asn": 13335, "flags": 2}},
        **extra,
    }


def story(path: Path) -> Path:
    """A block page, a DNS lie and a TLS reset, each blocked twice (an event)."""
    w = Writer(path)
    # kloop.kg on AS8449: the ISP's resolver lies, the ISP serves a block page.
    for n in (1, 2):
        m = w.measurement(
            day(n),
            "kloop.kg",
            "AS8449",
            "blocked",
            "http-diff",
            [
                {
                    "finding": Finding.DNS_ANSWER_DIFFERS.value,
                    "step": "dns",
                    "ours": {"addresses": ["10.10.34.35"]},
                    "control": {
                        "addresses": ["104.18.1.1"],
                        "sources": ["https://cloudflare-dns.com/dns-query"],
                    },
                },
                {
                    "finding": Finding.PAGE_DIFFERS.value,
                    "step": "http",
                    "ours": {"status": 200, "title": BLOCK_TITLE, "body_length": len(BLOCK_BODY),
                             "by": "title"},
                    "control": {"status": 200, "title": CONTROL_TITLE, "body_length": 48213},
                },
            ],
        )  # fmt: skip
        if n == 1:
            w.dns(m, "kloop.kg", "system", "udp://192.168.1.1:53", "10.10.34.35")
            w.dns(m, "kloop.kg", "https", "https://cloudflare-dns.com/dns-query", "104.18.1.1")
            w.dns(m, "kloop.kg", "udp", "udp://8.8.8.8:53", "104.18.1.1")
            w.control(m, helper_page(f"{CONTROL_TITLE}", 48213))
            w.page(
                m,
                "http://kloop.kg/",
                BLOCK_BODY,
                [["Server", "censor-box"], [f"X-Note{HOSTILE}", f"value {HOSTILE}"]],
            )
    # azattyk.org on AS12389, from another volunteer's vantage: TLS reset after the SNI.
    for n in (3, 4):
        m = w.measurement(
            day(n),
            "azattyk.org",
            "AS12389",
            "blocked",
            "tls",
            [
                {
                    "finding": Finding.TLS_FAILED.value,
                    "step": "tls",
                    "ours": {"failure": "connection_reset", "sni": "azattyk.org"},
                    "control": {"tls": "ok", "points_to": "sni_filtering"},
                }
            ],
            vantage="remote-1",
        )
        if n == 3:
            w.db.execute(
                "insert into tls_handshakes (measurement_id, depth, t0, t, ip, port, "
                "server_name, failure, purpose) values (?, 0, 0, 0, '192.0.2.80', 443, "
                "'azattyk.org', 'connection_reset', 'fetch')",
                [m],
            )
            w.db.execute(
                "insert into tcp_connects (measurement_id, depth, t0, t, ip, port) "
                "values (?, 0, 0, 0, '192.0.2.80', 443)",
                [m],
            )
            w.control(
                m,
                helper_page(
                    "Azattyk",
                    90000,
                    tls_handshake={
                        "192.0.2.80:443": {
                            "server_name": "azattyk.org",
                            "status": True,
                            "failure": None,
                        }
                    },
                    tcp_connect={"192.0.2.80:443": {"status": True, "failure": None}},
                ),
            )
    w.measurement(day(5), "azattyk.org", "AS12389", "accessible", None, [], vantage="remote-1")
    w.db.conn.commit()
    return path


def report(db: Path, fmt: str, *extra: str) -> str:
    result = CliRunner().invoke(cli, ["report", "--db", str(db), "--format", fmt, *extra])
    assert result.exit_code == 0, result.output
    assert RAW.search(result.stdout.replace("\r\n", "\n")) is None, fmt
    return result.stdout


def _event(data: dict[str, Any], domain: str) -> dict[str, Any]:
    return next(e for e in data["events"] if e["domain"] == domain)


# ------------------------------------------------------------------ the evidence itself


def test_every_format_holds_the_block_page_beside_the_control_page(tmp_path):
    db = story(tmp_path / "p.db")
    size = f"{len(BLOCK_BODY):,} bytes".replace(",", " ")
    for fmt in ("md", "html"):
        text = report(db, fmt)
        assert BLOCK_TITLE in text and CONTROL_TITLE in text, fmt
        assert BLOCK_SHA in text and size in text, fmt
        assert "censor" in text and "Доступ к сайту ограничен" in text, fmt  # headers, text
        assert "script-only-marker" not in text, fmt  # a script is no text of the page
        assert "48 213 bytes" in text, fmt  # the control's size
    data = json.loads(report(db, "json"))
    page = _event(data, "kloop.kg")["detail"]["observed"]["page"]
    assert page["title"].startswith(BLOCK_TITLE) and page["sha256"] == BLOCK_SHA
    assert page["size"] == len(BLOCK_BODY) and page["status"] == 200
    assert ["Server", "censor-box"] in page["headers"]
    assert page["text"][:3] == [BLOCK_TITLE, "Доступ к сайту ограничен", "По решению суда."]
    control = _event(data, "kloop.kg")["detail"]["observed"]["control"]
    assert control["page"]["title"] == CONTROL_TITLE and control["page"]["size"] == 48213
    rows = {r["domain"]: r for r in csv.DictReader(io.StringIO(report(db, "csv")))}
    assert rows["kloop.kg"]["page_sha256"] == BLOCK_SHA
    assert rows["kloop.kg"]["page_size"] == str(len(BLOCK_BODY))
    assert rows["kloop.kg"]["control_page_title"] == CONTROL_TITLE
    assert rows["kloop.kg"]["dns_answer"] == "10.10.34.35"


def test_dns_and_tls_evidence_read_as_sentences(tmp_path):
    text = report(story(tmp_path / "p.db"), "md")
    assert (
        "the network's resolver (in AS8449 (ElCat)) answered 10.10.34.35; DNS over HTTPS at "
        "cloudflare-dns.com answered 104.18.1.1 in AS13335; plain DNS (UDP) at 8.8.8.8 "
        "answered 104.18.1.1 in AS13335; the test helper's resolver answered 104.18.1.1 in "
        "AS13335"
    ) in text
    assert (
        "TLS handshake with 192.0.2.80 port 443, server name (SNI) azattyk.org: failed, the "
        "connection was reset (connection\\_reset); the test helper's handshake with the same "
        "address and name succeeded"
    ) in text
    assert "which points to SNI filtering" in text  # explain's sentence for the stored finding
    assert "192.168.1.1" not in text  # the home router's address is no evidence to publish


def test_no_internal_ids_or_dict_reprs_in_the_prose(tmp_path):
    db = story(tmp_path / "p.db")
    ids = {f.value for f in Finding}
    for fmt in ("md", "html"):
        text = report(db, fmt)
        for finding in ids:
            assert finding not in text and finding.replace("_", "\\_") not in text, (fmt, finding)
        for method in ("http-diff", "tcp_ip"):
            assert method not in text.split("<svg", 1)[0], (fmt, method)
        assert not re.search(r"\{['\"&]|&#x27;\w+&#x27;:|': ", text), fmt  # no dict repr/dump
        assert "the control saw -" not in text
    # The ids stay in the JSON.
    data = json.loads(report(db, "json"))
    findings = [e["finding"] for e in _event(data, "kloop.kg")["detail"]["evidence"]]
    assert findings == ["dns_answer_differs", "page_differs"]


def test_hostile_page_text_titles_and_headers_are_escaped_in_each_format(tmp_path):
    db = story(tmp_path / "p.db")
    md = report(db, "md")
    # printable()'s backslashes, and Markdown's ], escaped for Markdown
    assert "<script" not in md and "\\\\x1b\\]0;pwned\\\\x07" in md and "\\\\u202egpj" in md
    html = report(db, "html")
    assert "<script" not in html and "&lt;script&gt;" in html and "\\u202egpj" in html
    assert "X-Note\\x1b]0;pwned" in html  # the header's name, visible and inert
    assert "gpj.exe &lt;script&gt;alert(2)" in html and "gpj.exe &lt;script&gt;alert(2)" in md
    raw = report(db, "json")
    assert "<script>" in raw  # JSON keeps the value: it is data, not a page
    data = json.loads(raw)
    page = _event(data, "kloop.kg")["detail"]["observed"]["page"]
    # The text as the page reads (entities decoded): its markup is text, escaped elsewhere.
    assert "Note: \x1b]0;pwned\x07\u202egpj.exe <script>alert(2)</script>" in page["text"]
    assert [f"X-Note{HOSTILE}", f"value {HOSTILE}"] in page["headers"]
    text = report(db, "csv")
    cells = [c for row in csv.reader(io.StringIO(text)) for c in row]
    assert any("\\x1b]0;pwned" in c for c in cells)


def test_a_compressed_bomb_is_never_inflated_beyond_what_is_shown(tmp_path):
    db = story(tmp_path / "p.db")
    conn = open_db(db)
    bomb = zlib.compress(b"<p>" + b"A" * (64 << 20))  # 64 MiB of text in ~64 KiB
    conn.execute("update http_requests set body = ?", [bomb])
    conn.execute("insert into http_requests (measurement_id, hop, body, body_encoding) "
                 "values ('nothing', 0, x'00', 'zlib')")  # fmt: skip
    conn.conn.commit()
    data = json.loads(report(db, "json"))
    page = _event(data, "kloop.kg")["detail"]["observed"]["page"]
    assert len(page["text"]) == 1 and len(page["text"][0]) <= 240


# ------------------------------------------------------------------ provenance and title


def test_provenance_names_version_fingerprints_helpers_resolvers_vantages(tmp_path):
    db = story(tmp_path / "p.db")
    data = json.loads(report(db, "json"))
    about = data["provenance"]
    digest = hashlib.sha256()
    for name in ("fingerprints.json", "censoredplanet_blockpage_signatures.json",
                 "censoredplanet_false_positive_signatures.json"):  # fmt: skip
        content = resources.files("probe").joinpath("data", name).read_bytes()
        digest.update(name.encode() + b"\0" + hashlib.sha256(content).digest())
    assert about["fingerprints"]["sha256"] == digest.hexdigest() == fingerprint_set()["sha256"]
    assert about["probe_version"] == __version__
    assert about["helpers"] == ["https://th.example.org/"]
    assert about["control_resolvers"] == SETTINGS["control_resolvers"]
    assert (about["measurements"], about["runs"]) == (5, 5)
    nets = {n["asn"]: n for n in about["networks"]}
    assert nets["AS8449"].items() >= {"measurements": 2, "runs": 2, "network_name": "ElCat"}.items()
    assert nets["AS12389"]["measurements"] == 3 and nets["AS12389"]["vantages"] == 1
    kinds = sorted((v["kind"], v["networks"][0], v["measurements"]) for v in about["vantages"])
    assert kinds == [("local", "AS8449", 2), ("remote", "AS12389", 3)]
    assert (about["first"], about["last"]) == (day(1), day(5))
    md = report(db, "md")
    head = md.split("## Summary by target and network", 1)[0]
    for shown in (
        f"probe {__version__}",
        digest.hexdigest(),
        "https://th.example.org/",
        "DNS over HTTPS at cloudflare-dns.com",
        "plain DNS (UDP) at 8.8.8.8",
        "| AS8449 (ElCat) | 1 | 2 | 2 |",
        "| AS12389 (Rostelecom) | 1 | 3 | 3 |",
        "| Vantage 2 | merged from another volunteer's database | AS12389 (Rostelecom) | 3 | 3 |",
        "5 measurements in 5 runs, from 2 vantages,",
        "Inconclusive:",
        "An event needs 2 blocked measurements in a row",
    ):
        assert shown in head, shown
    assert "alice" not in md and "alice" not in report(db, "html")  # volunteers are not named


def test_title_is_escaped_in_every_format(tmp_path):
    db = story(tmp_path / "p.db")
    title = "Kyrgyzstan <b>October</b> | [x](javascript:1) " + HOSTILE
    md = report(db, "md", "--title", title)
    assert md.startswith("# Kyrgyzstan &lt;b&gt;October&lt;/b&gt; \\| \\[x\\](javascript:1) ")
    html = report(db, "html", "--title", title)
    assert "<title>Kyrgyzstan &lt;b&gt;October&lt;/b&gt;" in html and "<b>" not in html
    assert "<h1>Kyrgyzstan &lt;b&gt;October" in html
    assert json.loads(report(db, "json", "--title", title))["title"] == title
    assert "<h1>Website blocking report</h1>" in report(db, "html")


def test_the_collector_report_says_it_keeps_no_bodies(tmp_path):
    from probe.collector import bridge
    from probe.report import Options
    from probe.store.research import iter_summaries, measurement_details, network_names

    path = story(tmp_path / "p.db")
    db = open_db(path)
    for fmt, expected in (("md", "page bodies"), ("html", "page bodies"), ("json", '"bodies"')):
        out = io.StringIO()
        bridge.write_report(
            iter_summaries(db),
            lambda ids: measurement_details(db, ids),
            out,
            fmt=fmt,
            generated_at="2026-12-01T00:00:00Z",
            filters={},
            options=Options(),
            network_names=network_names(db),
        )
        text = out.getvalue()
        assert expected in text and BLOCK_SHA not in text, fmt
        assert "which points to SNI filtering" in text or fmt == "json"  # the stored evidence
    about = json.loads(out.getvalue())["provenance"]
    assert about["bodies"] is False and about["probe_version"] == __version__
    assert {n["asn"] for n in about["networks"]} == {"AS8449", "AS12389"}
