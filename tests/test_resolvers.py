"""What a DNS answer gives: the addresses on the CNAME chain from the question, at most
MAX_ADDRESSES of them and their total (a resolver is the network's, and may be hostile).

Every A/AAAA rrset in the answer section used to be taken whatever its owner name, and every
address stored: 6,433 for one name, 110 KB a measurement. The lab's hostile resolver replays
both in tests/test_hostile.py; these are the parser's own tests.
"""

from __future__ import annotations

import dns.message
import dns.name
import dns.rrset
import pytest

from probe.net import resolvers
from probe.net.resolvers import MAX_ADDRESSES, chain_answer


def reply(question: str, qtype: str, *rrsets: tuple[str, str, list[str]]) -> dns.message.Message:
    query = dns.message.make_query(question, qtype)
    answer = dns.message.make_response(query)
    for owner, kind, values in rrsets:
        name = dns.name.from_text(owner)  # absolute
        answer.answer.append(dns.rrset.from_text_list(name, 300, "IN", kind, values))
    return dns.message.from_wire(answer.to_wire(max_size=65535))


def test_only_the_questions_own_addresses_are_taken():
    got = chain_answer(
        reply("24.kg", "A",
              ("www.azattyk.org", "A", ["10.0.0.1"]),  # another owner: poison, not an answer
              ("24.kg", "A", ["192.88.99.100", "192.88.99.101"]),
              ("kloop.kg", "AAAA", ["2001:db8::1"])),
        "A",
    )  # fmt: skip
    assert sorted(got.addresses) == ["192.88.99.100", "192.88.99.101"]
    assert (got.total, got.cnames) == (2, [])


def test_the_cname_chain_is_followed_from_the_question_and_nothing_else():
    got = chain_answer(
        reply("www.24.kg", "A",
              ("elsewhere.kg", "CNAME", ["trap.kg."]),
              ("trap.kg", "A", ["10.0.0.1"]),
              ("cdn.example", "A", ["192.88.99.120"]),
              ("WWW.24.kg", "CNAME", ["edge.24.kg."]),  # names compare without case
              ("edge.24.kg", "CNAME", ["cdn.example."])),
        "A",
    )  # fmt: skip
    assert got.addresses == ["192.88.99.120"]
    assert got.cnames == ["edge.24.kg", "cdn.example"]


def test_a_cname_loop_ends_without_addresses():
    got = chain_answer(
        reply("a.kg", "A", ("a.kg", "CNAME", ["b.kg."]), ("b.kg", "CNAME", ["a.kg."]),
              ("b.kg", "A", ["192.88.99.1"])),
        "A",
    )  # fmt: skip
    # b.kg has a CNAME, so its A record is not an answer (a name with a CNAME has nothing else).
    assert got.addresses == [] and got.total == 0
    assert got.cnames == ["b.kg", "a.kg"]


def test_a_long_chain_is_followed_only_so_far():
    links = [(f"n{i}.kg", "CNAME", [f"n{i + 1}.kg."]) for i in range(40)]
    got = chain_answer(reply("n0.kg", "A", *links, ("n40.kg", "A", ["192.88.99.1"])), "A")
    assert len(got.cnames) == resolvers.MAX_CNAME_CHAIN and got.addresses == []


@pytest.mark.parametrize("count", [MAX_ADDRESSES, MAX_ADDRESSES + 1, 2000])
def test_at_most_max_addresses_are_kept_with_the_total(count):
    addresses = [f"2001:db8::{i:x}" for i in range(1, count + 1)]
    answer = reply("huge.kg", "AAAA", ("huge.kg", "AAAA", addresses))
    got = chain_answer(answer, "AAAA")
    in_order = [rdata.address for rdata in answer.answer[0]]  # as it came (shuffled on wire)
    assert sorted(in_order) == sorted(addresses)
    assert got.addresses == in_order[:MAX_ADDRESSES]
    assert got.total == count


def test_the_ttl_is_the_address_records():
    got = chain_answer(
        reply("a.kg", "A", ("a.kg", "CNAME", ["b.kg."]), ("b.kg", "A", ["192.88.99.1"])), "A"
    )
    assert got.ttl == 300
    assert chain_answer(reply("a.kg", "A"), "A").ttl is None
