"""The 2022 re-enactment (results/reenact_2022.py, --short) in the lab, under faketime: the
timeline it gives has each block start and end on the re-enacted dates, per URL and network."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
from typing import Any

import pytest

from results import reenact_2022
from tests.conftest import missing_tool

AZATTYK, AZATTYK_HTTP = "https://www.azattyk.org/", "http://www.azattyk.org/"
KG24, KG24_HTTP = "https://24.kg/", "http://24.kg/"
RESPUBLICA, RESPUBLICA_HTTP = "https://respublica.kg/", "http://respublica.kg/"
DNS_SNI, HTTP_PAGE = "AS12997", "AS8449"


@pytest.fixture(scope="module")
def reenacted(tmp_path_factory) -> reenact_2022.Outcome:
    if os.geteuid() != 0:
        pytest.fail("the censorship lab needs root; run the test suite as root", pytrace=False)
    if reenact_2022.libfaketime() is None:
        missing_tool("libfaketime is not installed: apt-get install faketime")
    work = tmp_path_factory.mktemp("reenact")
    return reenact_2022.run(work / "out", short=True, workdir=work, log=io.StringIO())


def timeline(outcome: reenact_2022.Outcome) -> list[dict[str, Any]]:
    text = (outcome.out / "timeline.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def events(outcome: reenact_2022.Outcome) -> set[tuple[str, str, str, str | None, str]]:
    """(input, network, first day, last day or None, method) of every event."""
    return {
        (e["input"], e["asn"], e["start"][:10], e["end"] and e["end"][:10], e["blocking"])
        for e in timeline(outcome)
        if e["kind"] == "event"
    }


def test_every_block_starts_and_ends_on_its_re_enacted_day(reenacted):
    assert events(reenacted) == {
        # Radio Azattyk from 26 October: by the SNI (its http:// redirects to https://) on one
        # network, by a block page on cleartext HTTP on the other.
        (AZATTYK, DNS_SNI, "2022-10-26", None, "tls"),
        (AZATTYK_HTTP, DNS_SNI, "2022-10-26", None, "tls"),
        (AZATTYK_HTTP, HTTP_PAGE, "2022-10-26", None, "http-diff"),
        # 24.kg from 25 August: withdrawn on 20 October where the DNS lied; kept on the other.
        (KG24, DNS_SNI, "2022-08-25", "2022-10-20", "dns"),
        (KG24_HTTP, DNS_SNI, "2022-08-25", "2022-10-20", "dns"),
        (KG24_HTTP, HTTP_PAGE, "2022-08-25", None, "http-diff"),
        # respublica.kg from 15 June.
        (RESPUBLICA, DNS_SNI, "2022-06-15", None, "dns"),
        (RESPUBLICA_HTTP, DNS_SNI, "2022-06-15", None, "dns"),
        (RESPUBLICA_HTTP, HTTP_PAGE, "2022-06-15", None, "http-diff"),
    }
    assert [e for e in timeline(reenacted) if e["kind"] != "event"] == []  # no anomaly


def test_24kg_stays_blocked_after_the_withdrawal_on_one_network_only(reenacted):
    kept = [e for e in timeline(reenacted) if (e["input"], e["asn"]) == (KG24_HTTP, HTTP_PAGE)]
    assert len(kept) == 1 and kept[0]["end"] is None
    assert kept[0]["last_blocked"][:10] > "2022-10-20"
    after = [line for line in reenacted.lines if line["when"] >= "2022-10-20"]
    verdicts = {(line["network"], line["input"]): line["verdict"] for line in after}
    assert verdicts[(DNS_SNI, KG24)] == verdicts[(DNS_SNI, KG24_HTTP)] == "accessible"
    assert verdicts[(HTTP_PAGE, KG24_HTTP)] == "blocked"


def test_a_block_page_on_cleartext_http_leaves_https_accessible(reenacted):
    page = [line for line in reenacted.lines if line["network"] == HTTP_PAGE]
    respublica = {line["input"]: line for line in page if line["when"] >= "2022-06-15"}
    assert respublica[RESPUBLICA_HTTP]["verdict"] == "blocked"
    assert respublica[RESPUBLICA_HTTP]["blockpage"] is not None
    assert respublica[RESPUBLICA]["verdict"] == "accessible"
    (event,) = [
        e for e in timeline(reenacted) if (e["input"], e["asn"]) == (RESPUBLICA_HTTP, HTTP_PAGE)
    ]
    assert event["blockpages"] and event["failures"] == []
    # On that network no https:// URL is ever blocked.
    assert {line["verdict"] for line in page if line["input"].startswith("https:")} == {
        "accessible"
    }


def test_the_stored_times_are_the_re_enacted_days(reenacted):
    with sqlite3.connect(f"file:{reenacted.db}?mode=ro", uri=True) as conn:
        stored = conn.execute(
            "select distinct substr(start_time, 1, 10), probe_asn, probe_cc from measurements"
        ).fetchall()
    expected = {
        (day.isoformat(), network, "KG")
        for day in reenact_2022.SHORT_DAYS
        for network in (DNS_SNI, HTTP_PAGE)
    }
    assert set(stored) == expected


def test_the_artefacts_say_they_are_a_lab_re_enactment(reenacted):
    out = reenacted.out
    readme = (out / "README.md").read_text()
    assert "not a measurement of the real networks" in readme
    assert "python -m results.reenact_2022" in readme
    html = (out / "report.html").read_text()
    for url in (AZATTYK, AZATTYK_HTTP, KG24, KG24_HTTP, RESPUBLICA, RESPUBLICA_HTTP):
        assert f'data-input="{url}"' in html
    assert DNS_SNI in html and HTTP_PAGE in html
    if "report --title" not in reenacted.missing:
        assert "not a measurement of real networks" in html
    if "bundle" not in reenacted.missing:
        check = subprocess.run(
            [sys.executable, "-m", "probe.cli", "verify-bundle", str(out / "bundle.zip")],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr


def test_the_days_cover_june_to_december_with_every_change():
    full = reenact_2022.days(short=False)
    assert full[0].isoformat() == "2022-06-01" and full[-1].isoformat() == "2022-12-31"
    assert max((b - a).days for a, b in zip(full, full[1:], strict=False)) <= 6
    for day in ("2022-06-15", "2022-08-25", "2022-10-20", "2022-10-26", "2022-12-26"):
        assert day in {d.isoformat() for d in full}
