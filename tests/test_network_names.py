"""One rule for AS numbers and country codes (probe.model.network): what the options and the
configuration accept, the collector and the OONI importer never refuse."""

from __future__ import annotations

import pytest

from probe.app.config import parse_asn, parse_cc
from probe.errors import InputError
from probe.model import network


@pytest.mark.parametrize(
    "text,expected",
    [("AS8449", "AS8449"), ("as8449", "AS8449"), ("8449", "AS8449"), (" AS12997 ", "AS12997"),
     ("AS4294967295", "AS4294967295"), ("AS4294967296", None), ("AS٣", None), ("AS", None),
     ("AS-1", None), ("AS 8449", None), ("AS99999999999", None), ("", None)],
)  # fmt: skip
def test_an_as_number_is_read_one_way(text, expected):
    assert network.asn(text) == expected


@pytest.mark.parametrize(
    "text,expected",
    [("KG", "KG"), ("kg", "KG"), ("K", None), ("KGZ", None), ("К Г", None), ("КГ", None),
     ("1A", None)],
)  # fmt: skip
def test_a_country_code_is_read_one_way(text, expected):
    assert network.cc(text) == expected


@pytest.mark.parametrize("text", ["AS8449", "as12997", "4294967295", "AS0"])
def test_what_the_config_accepts_the_collector_and_importer_accept(text):
    stored = parse_asn(text)
    assert network.is_asn(stored)


@pytest.mark.parametrize("text", ["AS4294967296", "AS٣", "AS99999999999"])
def test_what_the_collector_refuses_the_config_refuses_too(text):
    assert not network.is_asn(text)
    with pytest.raises(InputError):
        parse_asn(text)


def test_country_codes_agree_between_config_and_collector():
    assert network.is_cc(parse_cc("kg"))
    for bad in ("КГ", "K1"):
        assert not network.is_cc(bad)
        with pytest.raises(InputError):
            parse_cc(bad)
