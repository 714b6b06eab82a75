"""The performance benchmark (bench/check_many.py) keeps working: a 20-target smoke of it.

Speed is never asserted here (it is measured by the benchmark itself); this checks that the
benchmark builds its mix, that probe gets every verdict of it right, that the curl baseline
ran over the same URLs, and that no site address saw more than two connections at once.
"""

from __future__ import annotations

import shutil

import pytest

from bench import check_many


def test_the_mix_has_every_kind_and_blackholes_share_few_addresses():
    sites = check_many.plan(1000)
    kinds = {s.kind for s in sites}
    assert kinds == set(check_many.KINDS)
    dark = {s.ip for s in sites if s.kind == "blackhole"}
    assert len(dark) == 5 and sum(s.kind == "blackhole" for s in sites) == 50
    shared = [s.ip for s in sites if not check_many.KINDS[s.kind].own_addresses]
    assert not dark & set(shared)  # a blackholed address serves no site of another kind
    assert len(shared) / len(set(shared)) > 5  # several sites per address


@pytest.mark.skipif(shutil.which("curl") is None, reason="the baseline needs curl")
def test_twenty_targets(clean_lab, helper):
    lab = clean_lab
    sites = check_many.plan(20)
    try:
        figures = check_many.bench(lab, 20, rtt=20, concurrency=64, helper_url=lab.helper_url)
    finally:
        check_many.remove(lab, sites)
    probe = figures["probe"]
    assert probe["wrong"] == {} and probe["right"] == 1.0
    assert sum(probe["verdicts"].values()) == 20
    # Every kind of the mix was measured, blackholes included (they need the TCP timeout).
    assert set(figures["kinds"]) == set(check_many.KINDS)
    assert probe["runtime_by_kind"]["blackhole"][0] >= check_many.TCP_TIMEOUT
    # curl fetched the same URLs: the accessible ones with 200, the others failed or 403/404.
    assert sum(figures["curl"]["status_codes"].values()) == 20
    assert figures["curl"]["status_codes"].get("200", 0) >= 14
    assert 1 <= probe["most_connections_to_one_site_address"] <= 2
    assert probe["db_bytes_per_measurement"] > 0 and probe["peak_rss_mib"] > 0
