"""Blockpage and DNS fingerprints."""

from __future__ import annotations

import json

import pytest

from probe.analysis.fingerprints import MATCH_BODY_BYTES, Fingerprints, default
from probe.model.records import HTTPRequest

ELCAT = (
    b'<html><body><p class="error">Access to the requested website has been blocked by '
    b"judicial decision!</p></body></html>"
)


def response(body=b"", headers=(), status=200, url="http://example.kg/"):
    return HTTPRequest(
        url=url,
        ip="192.88.99.1",
        status_code=status,
        headers=[list(h) for h in headers],
        body=body,
        body_length=len(body),
    )


def test_default_is_cached_and_loads_every_source():
    fps = default()
    assert fps is default()
    assert len(fps) > 1000  # ours + ~620 Censored Planet blockpages + ~460 false positives


def test_kg_homeline_location_header():
    hop = response(status=302, headers=[("Location", "http://homeline.kg/access/blockpage.html")])
    match = default().match_http(hop)
    assert match is not None
    assert match.id == "probe.kg_homeline_location"
    assert match.scope == "isp" and match.countries == ("KG",)
    assert match.location == "header.location"
    assert not match.false_positive


def test_kg_location_must_be_exact():
    hop = response(status=302, headers=[("Location", "http://homeline.kg/access/other.html")])
    assert default().match_http(hop) is None


def test_elcat_body():
    match = default().match_http(response(ELCAT))
    assert match is not None and match.id == "probe.kg_elcat_judicial"
    assert match.location == "body"


def test_censoredplanet_signature_alone_matches_elcat():
    cp_only = Fingerprints.load()
    cp_only._blockpages = [r for r in cp_only._blockpages if r.id.startswith("cp.")]
    match = cp_only.match_http(response(ELCAT))
    assert match is not None and match.id == "cp.c_isp_kg_elcat"
    assert match.scope == "isp"


def test_censoredplanet_header_signature_sees_header_lines():
    hop = response(headers=[("Server", "Barracuda/NGFirewall")])
    match = default().match_http(hop)
    assert match is not None and match.id == "cp.a_prod_barracuda_2"
    assert match.scope == "prod"


def test_false_positive_signature_suppresses_blockpage():
    blocky = b"<html><b>Category:</b> news</html>"
    match = default().match_http(response(blocky))
    assert match is not None and match.id == "cp.f_gen_category"
    assert not match.false_positive
    both = blocky + b"<p><em>Thank you for using nginx.</em></p>"
    match = default().match_http(response(both))
    assert match is not None
    assert match.false_positive and match.scope == "fp"
    assert match.id == "cp.x_fpru_nginx"


def test_analysis_does_not_confirm_a_false_positive():
    from probe.analysis import analyze
    from tests.test_analysis import DOMAIN, page, site

    url = f"http://{DOMAIN}/"
    body = b"<b>Category:</b><p><em>Thank you for using nginx.</em></p>"
    v = analyze(site(url, http=[page(url, body=body, title="Welcome", headers=[])]))
    assert v.verdict == "blocked" and v.blocking == "http-diff"
    assert v.confirmed is False
    assert v.blockpage is None  # a known false positive is no block page
    assert "false positive cp.x_fpru_nginx" in v.reason


def test_own_false_positive_entry(tmp_path):
    extra = tmp_path / "fp.json"
    extra.write_text(
        json.dumps(
            [
                {
                    "id": "lab.fp_judicial_article",
                    "location": "body",
                    "type": "regexp",
                    "pattern": "<article>.*blocked by judicial decision",
                    "scope": "fp",
                    "countries": [],
                    "source": "lab",
                    "notes": "a news article quoting the block page",
                }
            ]
        )
    )
    fps = Fingerprints.load([extra])
    article = b"<article>Users saw 'Access to the requested website has been blocked by judicial "
    article += b"decision!' yesterday</article>"
    match = fps.match_http(response(article))
    assert match is not None and match.id == "lab.fp_judicial_article" and match.false_positive


def test_dns_fingerprint_from_extra_file(tmp_path):
    extra = tmp_path / "lab.json"
    extra.write_text(
        json.dumps(
            [
                {
                    "id": "lab.blockpage_ip",
                    "location": "dns",
                    "type": "full",
                    "pattern": "192.88.99.7",
                    "scope": "isp",
                    "countries": ["kg"],
                    "source": "lab",
                    "notes": "",
                },
                {
                    "id": "lab.blockpage_v6",
                    "location": "dns",
                    "type": "full",
                    "pattern": "2001:0DB8:0000::0007",
                    "scope": "isp",
                    "countries": [],
                    "source": "lab",
                    "notes": "",
                },
            ]
        )
    )
    fps = Fingerprints.load([extra])
    match = fps.match_dns(["93.184.216.34", "192.88.99.7"])
    assert match is not None and match.id == "lab.blockpage_ip"
    assert match.location == "dns" and match.countries == ("KG",)
    assert fps.match_dns(["2001:db8::7"]).id == "lab.blockpage_v6"
    assert fps.match_dns(["192.88.99.8"]) is None
    assert default().match_dns(["192.88.99.7"]) is None


@pytest.mark.parametrize(
    "hop",
    [
        response(b"<html><title>Welcome</title><body>Ordinary news page</body></html>"),
        response(b"", headers=[("Location", "https://example.kg/")], status=301),
        HTTPRequest(url="http://example.kg/", failure="connection_reset"),
        response(b"\xff\xfe\x00binary garbage \x80\x81" * 100),
    ],
)
def test_ordinary_pages_do_not_match(hop):
    assert default().match_http(hop) is None


def test_only_the_first_64_kib_of_a_body_is_matched():
    late = b"a" * MATCH_BODY_BYTES + ELCAT
    assert default().match_http(response(late)) is None
    early = ELCAT + b"a" * (4 * MATCH_BODY_BYTES)
    assert default().match_http(response(early)).id == "probe.kg_elcat_judicial"


@pytest.mark.parametrize(
    "entry",
    [
        {"id": "x", "location": "cookie", "type": "full", "pattern": "a"},
        {"id": "x", "location": "body", "type": "fuzzy", "pattern": "a"},
        {"id": "x", "location": "body", "type": "full", "pattern": "a", "scope": "evil"},
        {"id": "x", "location": "body", "type": "full"},
    ],
)
def test_bad_extra_file_is_rejected(tmp_path, entry):
    extra = tmp_path / "bad.json"
    extra.write_text(json.dumps([entry]))
    with pytest.raises(ValueError):
        Fingerprints.load([extra])


def test_shipped_entries_are_ours():
    from importlib import resources

    text = resources.files("probe").joinpath("data", "fingerprints.json").read_text()
    entries = json.loads(text)
    assert {e["id"] for e in entries} >= {"probe.kg_homeline_location", "probe.kg_elcat_judicial"}
    assert all(e["id"].startswith("probe.") for e in entries)


def test_fingerprints_match_pages_in_their_own_charset(tmp_path):
    # A Russian notice in windows-1251, declared in the header only: decoded as UTF-8 it
    # would be replacement characters and no Cyrillic pattern could match.
    extra = tmp_path / "ru.json"
    extra.write_text(
        '[{"id": "lab.ru_notice", "location": "body", "type": "contains", '
        '"pattern": "Доступ к информационному ресурсу", "scope": "isp"}]'
    )
    fps = Fingerprints.load([extra], censoredplanet=False)
    body = "<html><body>Доступ к информационному ресурсу ограничен</body></html>"
    hop = HTTPRequest(
        url="http://x.kg/",
        status_code=200,
        headers=[["Content-Type", "text/html; charset=windows-1251"]],
        body=body.encode("cp1251"),
    )
    assert fps.match_http(hop).id == "lab.ru_notice"
    hop.headers = [["Content-Type", "text/html"]]  # undeclared: read as UTF-8, no match
    assert fps.match_http(hop) is None


def test_fingerprints_match_the_raw_bytes_of_a_reply_that_was_not_http(tmp_path):
    extra = tmp_path / "raw.json"
    extra.write_text(
        '[{"id": "lab.raw_notice", "location": "body", "type": "contains", '
        '"pattern": "blocked by order", "scope": "isp"}]'
    )
    fps = Fingerprints.load([extra], censoredplanet=False)
    hop = HTTPRequest(url="http://x.kg/", failure="unknown_failure: invalid HTTP response: x",
                      raw=b"BLOCKED\r\nblocked by order of the court\r\n")  # fmt: skip
    assert fps.match_http(hop).id == "lab.raw_notice"
