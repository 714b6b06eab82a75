"""The performance benchmarks keep working: a 20-target smoke of bench/check_many.py, and one
round of bench/analyze_store.py over tests/data's fixture.

Speed is never asserted here (it is measured by the benchmark itself); this checks that the
benchmark builds its mix, that probe gets every verdict of it right, that the curl baseline
ran over the same URLs, and that no site address saw more than two connections at once.
"""

from __future__ import annotations

from bench import check_many
from tests.conftest import require_tool


def test_the_mix_has_every_kind_and_blackholes_share_few_addresses():
    sites = check_many.plan(1000)
    kinds = {s.kind for s in sites}
    assert kinds == set(check_many.KINDS)
    dark = {s.ip for s in sites if s.kind == "blackhole"}
    assert len(dark) == 5 and sum(s.kind == "blackhole" for s in sites) == 50
    shared = [s.ip for s in sites if not check_many.KINDS[s.kind].own_addresses]
    assert not dark & set(shared)  # a blackholed address serves no site of another kind
    assert len(shared) / len(set(shared)) > 5  # several sites per address


def test_twenty_targets(clean_lab, helper):
    require_tool("curl", "the baseline needs it: apt-get install curl")
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


def test_analyze_store_times_the_fixture_and_replays_it(tmp_path):
    from bench import analyze_store
    from tests.test_store import FIXTURE, dump, fixture

    figures = analyze_store.bench(FIXTURE, limit=12, rounds=1, profile=True, top=5)
    assert figures["measurements"] == 12 and figures["verdicts_differing_from_stored"] == 0
    assert figures["analyze_ms"]["best"] > 0 and figures["save_ms"]["best"] > 0
    assert all("function calls" in text for text in figures["profile"].values())
    # --per-kind 1: one measurement of each kind, stored as the fixture stored it.
    made = analyze_store.replay(FIXTURE, tmp_path / "one.db", times=1, per_kind=1)
    one = analyze_store.read_only(tmp_path / "one.db")
    kinds = {analyze_store.kind(fixture(), row) for row in analyze_store.measurements(fixture())}
    assert made["measurements"] == len(kinds) < 36
    kept = {row[0] for row in one.execute("select id from measurements")}
    # Every column but run_id (column 1; the copy is a run of its own).
    before = [r[:1] + r[2:] for r in dump(fixture(), "measurements") if r[0][1:-1] in kept]
    assert before == [r[:1] + r[2:] for r in dump(one, "measurements")]
    # --times 2: two runs of new measurements.
    analyze_store.replay(tmp_path / "one.db", tmp_path / "two.db", times=2, per_kind=None)
    two = analyze_store.read_only(tmp_path / "two.db")
    assert two.execute("select count(distinct run_id), count(*) from measurements").fetchone() == (
        2,
        2 * len(kinds),
    )
