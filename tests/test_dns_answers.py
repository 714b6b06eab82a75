"""DNS answers in a whole run, against the lab's hostile resolver: only the question's own
records are taken (along its CNAME chain), and at most 64 addresses are stored, with the
total beside them; a database from before the total was counted still opens, analyses and
exports.
"""

from __future__ import annotations

import json
import shutil
import sqlite3

from sqlite_utils import Database

from probe import analysis
from probe.model.addresses import SCRUBBED
from probe.model.records import DNSQuery
from probe.net.resolvers import MAX_ADDRESSES
from probe.ooni.export import Provenance, to_ooni
from probe.store import Store, load_observations, open_db
from probe.store.sqlite import _verdict_row
from tests.lab.hostile import HOSTILE_IP, HUGE_A, HUGE_AAAA, ZONE
from tests.test_hostile import hostile, lines_of, probe_check, rows  # noqa: F401 (a fixture)
from tests.test_store import FIXTURE, sample


def test_records_owned_by_other_names_are_not_answers(lab, hostile, tmp_path):  # noqa: F811
    """The resolver adds the block-page address under another owner name, or at the end of an
    unrelated CNAME chain: the probe neither stores it nor connects to it."""
    db = tmp_path / "p.db"
    stray, chain = f"http://stray.{ZONE}/", f"http://chain.{ZONE}/"
    results = lines_of(probe_check(lab, db, [stray, chain]), 2)
    for url, cnames in ((stray, []), (chain, [f"web.{ZONE}"])):
        mid = results[url]["measurement_id"]
        answers = rows(db, "select query_type, addresses, cnames, addresses_total from "
                       "dns_queries where measurement_id = ?", mid)  # fmt: skip
        assert {qtype for qtype, *_ in answers} == {"A", "AAAA"}
        for qtype, addresses, got_cnames, total in answers:
            # AAAA: the answer holds only another name's record.
            expected = [HOSTILE_IP] if qtype == "A" else []
            assert (json.loads(addresses), total) == (expected, len(expected)), (url, qtype)
            assert json.loads(got_cnames) == (cnames if qtype == "A" else []), url
        connected = rows(db, "select distinct ip from tcp_connects where measurement_id = ?", mid)
        assert connected == [(HOSTILE_IP,)], url


def test_a_huge_answer_stores_64_addresses_and_the_total(lab, hostile, tmp_path):  # noqa: F811
    db = tmp_path / "p.db"
    huge = f"http://huge.{ZONE}/"
    # 2,000 records come over TCP after a truncated UDP answer: time to spare on a busy machine.
    results = lines_of(probe_check(lab, db, [huge], "--dns-timeout", "15"), 1)
    mid = results[huge]["measurement_id"]
    answers = rows(db, "select query_type, addresses, addresses_total, length(addresses), "
                   "failure from dns_queries where measurement_id = ? and engine = 'system'",
                   mid)  # fmt: skip
    got = {q: (json.loads(addresses), total, size, failure)
           for q, addresses, total, size, failure in answers}  # fmt: skip
    for qtype, every in (("A", HUGE_A), ("AAAA", HUGE_AAAA)):
        kept, total, size, failure = got[qtype]
        assert len(kept) == MAX_ADDRESSES, (qtype, failure)
        assert set(kept) <= set(every) | {SCRUBBED}  # the vantage's own address is among them
        assert total == len(every)
        assert size < 2048  # not 40 KB for one query
    # What the OONI export says of it is the addresses kept.
    (a_query,) = [q for q in export_of(db, mid)["test_keys"]["queries"]
                  if q["query_type"] == "A" and q["engine"] == "system"]  # fmt: skip
    assert len(a_query["answers"]) == MAX_ADDRESSES


def export_of(path, measurement_id):
    return exported(open_db(path, readonly=True), measurement_id)


def exported(db, measurement_id):
    """The measurement in OONI's format, as `probe export` and uploads write it."""
    obs = load_observations(db, measurement_id)
    run_id = db["measurements"].get(measurement_id)["run_id"]
    return to_ooni(obs, analysis.analyze(obs), Provenance(measurement_id, run_id, None, None, None))


def test_a_database_from_before_the_total_opens_analyses_and_exports(tmp_path):
    """m040 adds the column to an existing database (the store tests' fixture, written before
    it); its rows keep NULL (not counted), and analysis and export go on as before."""
    path = tmp_path / "old.db"
    shutil.copy(FIXTURE, path)
    assert "addresses_total" not in Database(sqlite3.connect(path))["dns_queries"].columns_dict
    db = open_db(path)
    assert "addresses_total" in db["dns_queries"].columns_dict
    counts = "select count(*), count(addresses_total) from dns_queries"
    assert db.execute(counts).fetchone()[1] == 0 < db.execute(counts).fetchone()[0]
    for row in db.query("select * from measurements"):
        obs = load_observations(db, row["id"])
        assert {q.addresses_total for q in obs.dns} == {None}
        assert _verdict_row(analysis.analyze(obs)).items() <= row.items(), row["url"]
        assert exported(db, row["id"])["test_keys"]["queries"]
    # A new measurement stores its totals beside the old rows.
    counted = sample()
    counted.dns = [DNSQuery("24.kg", "A", "system", "udp://192.88.99.10:53", None, "NOERROR",
                            ["192.88.99.11"], ttl=300, addresses_total=1)]  # fmt: skip
    run_id = Store(db).start_run(inputs=[], settings={}, targets=1)
    new = Store(db).save(run_id, counted, analysis.analyze(counted))
    assert [q.addresses_total for q in load_observations(db, new).dns] == [1]
    queries = exported(db, new)["test_keys"]["queries"]
    assert [q["answers"] for q in queries] == [
        [{"answer_type": "A", "ipv4": "192.88.99.11", "ttl": 300}]
    ]
