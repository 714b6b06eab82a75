"""Blockpage and DNS fingerprints."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probe.analysis import fingerprints
from probe.analysis.fingerprints import (
    MATCH_BODY_BYTES,
    Fingerprints,
    Match,
    decode_body,
    default,
    response_text,
)
from probe.model.records import HTTPRequest
from probe.store import load_observations

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


# --------------------------------------------------------------------------------------------
# Matching takes shortcuts (a literal every match contains is looked for first; a signature
# that is only literal text is that substring search). These tests hold the shortcuts to the
# plain rule: the first rule, in order, whose regexp / text test says yes.

SIGNATURES = [r for r in default()._blockpages + default()._false_positives if r.regex]
QUICK = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))


def reference_match(fps: Fingerprints, hop: HTTPRequest) -> Match | None:
    """match_http as the module docstring states it, without shortcuts."""
    if hop.status_code is None and not hop.headers and not hop.body and not hop.raw:
        return None
    body = decode_body(hop)
    whole = response_text(hop, body)

    def says_yes(rule, value):
        if rule.type == "regexp":
            return rule.regex.search(value) is not None
        if rule.type == "contains":
            return rule.pattern in value
        return value == rule.pattern if rule.type == "full" else value.startswith(rule.pattern)

    def first(rules):
        for rule in rules:
            if rule.location == "body":
                values = [body]
            elif rule.location == "response":
                values = [whole]
            else:
                name = rule.location.removeprefix("header.")
                values = [v.strip() for k, v in hop.headers if k.lower() == name]
            if any(says_yes(rule, value) for value in values):
                return rule
        return None

    hit = first(fps._blockpages)
    if hit is None:
        return None
    return (first(fps._false_positives) or hit).match()


@pytest.mark.parametrize(
    ("pattern", "needle", "only"),
    [
        ("fortinet\\.net", "fortinet.net", True),
        ("<title>a</title>", "<title>a</title>", True),
        ("URL .* Sp.*er Gate", "er Gate", False),  # the longest literal run
        ("abc(de)?f", "abc", False),  # a group is not at the top level
        ("ab?cd", "cd", False),  # nor a literal under a quantifier
        ("a|bcd", None, False),  # nor one of alternatives
        ("(?i)blocked", None, False),  # case-insensitive: no needle
        ("(?x) blocked \\ page", "blocked page", True),  # verbose: the regex's own reading
        ("[ab]x", "x", False),
        ("", None, False),
    ],
)
def test_needle_is_a_literal_every_match_contains(pattern, needle, only):
    assert fingerprints._needle(pattern) == (needle, only)


def _check_signature(rule) -> None:
    @settings(max_examples=3, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.from_regex(rule.regex))
    def check(text):
        assert rule.regex.search(text), rule.id
        assert rule.needle is None or rule.needle in text, rule.id
        assert rule.test(text), rule.id

    check()


def test_every_shipped_signature_s_matches_contain_its_needle():
    assert sum(rule.needle_only for rule in SIGNATURES) > 1000  # the shortcut is the rule
    for rule in SIGNATURES:
        _check_signature(rule)


def _near(text: str, data: st.DataObject) -> str:
    """``text`` or a small edit of it: one character gone, changed, or a cut."""
    if not text:
        return text
    at = data.draw(st.integers(0, len(text) - 1))
    edit = data.draw(st.sampled_from(["same", "drop", "change", "cut"]))
    if edit == "drop":
        return text[:at] + text[at + 1 :]
    if edit == "change":
        return text[:at] + data.draw(st.characters()) + text[at + 1 :]
    return text[:at] if edit == "cut" else text


@QUICK
@given(st.data())
def test_a_signature_s_test_is_its_regexp_search(data):
    rule = data.draw(st.sampled_from(SIGNATURES))
    text = _near(data.draw(st.from_regex(rule.regex)), data)
    assert rule.test(text) == (rule.regex.search(text) is not None)


HEADER_NAMES = st.sampled_from(["Server", "Location", "LOCATION", "Content-Type", "X-Filter"])


@QUICK
@given(st.data())
def test_match_http_is_the_first_rule_that_matches(data):
    fps = default()
    pages = [data.draw(st.from_regex(r.regex)) for r in data.draw(st.lists(
        st.sampled_from(SIGNATURES), max_size=3))]  # fmt: skip
    body = "".join(_near(page, data) for page in pages) + data.draw(st.text(max_size=20))
    values = st.one_of(
        st.text(max_size=30),
        st.just(" http://homeline.kg/access/blockpage.html "),
        st.sampled_from(SIGNATURES).flatmap(lambda r: st.from_regex(r.regex)),
    )
    headers = data.draw(st.lists(st.tuples(HEADER_NAMES, values), max_size=4))
    hop = HTTPRequest(
        url="http://example.kg/",
        status_code=data.draw(st.sampled_from([None, 200, 302])),
        headers=[list(h) for h in headers],
        body=body.encode("utf-8") if data.draw(st.booleans()) else None,
        raw=body.encode("utf-8") if data.draw(st.booleans()) else None,
    )
    assert fps.match_http(hop) == reference_match(fps, hop)


def test_match_http_is_the_first_rule_that_matches_on_the_lab_s_pages():
    from tests.test_store import fixture

    db = fixture()
    ids = [row[0] for row in db.execute("select id from measurements")]
    hops = [hop for i in ids for hop in load_observations(db, i).http]
    assert sum(hop.body is not None for hop in hops) >= 10
    matched = [default().match_http(hop) for hop in hops]
    assert matched == [reference_match(default(), hop) for hop in hops]
    assert any(matched)
