"""Property-based tests (hypothesis) of the parsers that take input from strangers.

* target lists (probe.app.targets): any text or bytes give targets or a ``TargetError`` naming a
  line that exists, never another exception;
* the helper's request parser (probe.helper.requests.parse_request): any JSON value gives a
  ``HelperRequest`` or ``BadRequest``;
* endpoints (parse_endpoint): anything gives None or a canonical (ip, port) that round-trips.
"""

from __future__ import annotations

import ipaddress
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from probe.app import targets
from probe.errors import BadRequest, TargetError
from probe.helper.requests import HelperRequest, parse_endpoint, parse_request
from probe.model.addresses import canonical_ip, endpoint

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------- target lists

#: Characters that have broken line-oriented parsers: every Unicode line break, controls.
TRICKY = "\n\r\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\ufeff\t #,\"'/:.[]%@\u00a0\u200d\u202e"

entries = st.one_of(
    st.sampled_from(["24.kg", "https://kloop.kg/", "http://[2001:db8::1]:8080/x", "яндекс.рф"]),
    st.sampled_from(["# comment", "", "   ", "url,category_code", "ftp://x.kg/", "nodot"]),
    st.text(alphabet=st.sampled_from(list(TRICKY) + list("abk.gс")), max_size=30),
    st.text(max_size=30),
)
list_texts = st.one_of(
    st.lists(entries, max_size=12).map("\n".join),
    st.lists(entries, max_size=12).map("\r\n".join),
    st.text(max_size=300),
)


def _line_count(text: str) -> int:
    return len(text.split("\n"))


def _check_outcome(parse, text: str, name: str, lines: list[str]) -> None:
    """``parse`` gives targets whose sources are real lines, or a TargetError naming one."""
    try:
        found = parse()
    except TargetError as exc:
        source, _, number = exc.source.rpartition(":")
        assert source == name
        assert 1 <= int(number) <= len(lines), (exc, len(lines))
        assert str(exc).startswith(f"{name}:{number}: ")
        return
    for target in found:
        source, _, number = target.source.rpartition(":")
        assert source == name and 1 <= int(number) <= len(lines)
        assert target.url.startswith(("http://", "https://"))
        assert all(c.isprintable() and not c.isspace() for c in target.url)
        if parse.__name__ != "csv":
            assert target.input in lines[int(number) - 1]  # from that very line


@SETTINGS
@given(list_texts)
@example("# note\u2028evil.example\n24.kg")
@example('url,category_code\n"' + "x" * 140_000 + '",NEWS\n')
def test_plain_text_parser_never_raises_anything_else(text):
    def text_parser():
        return targets.parse_text(text, "list.txt")

    _check_outcome(text_parser, text, "list.txt", text.removeprefix("\ufeff").split("\n"))


@SETTINGS
@given(list_texts)
@example('url\n"unclosed\n')
@example("url,category_code\n\x00,NEWS\n")
def test_csv_parser_never_raises_anything_else(text):
    def csv():
        return targets.parse_csv(text, "list.csv")

    _check_outcome(csv, text, "list.csv", text.removeprefix("\ufeff").split("\n"))


@SETTINGS
@given(
    st.one_of(
        st.binary(max_size=400),
        list_texts.map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.lists(st.sampled_from([b"24.kg", b"\xff\xfe", b"\xe9", b"\r", b"# x", b"\x00"])).map(
            b"\n".join
        ),
    ),
    st.sampled_from(["list.txt", "list.csv"]),
)
@example(b"\xef\xbb\xbfurl,category_code\r\nhttps://24.kg/,NEWS\r\n", "list.txt")
def test_files_of_any_bytes_give_targets_or_a_real_line(data, name):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        lines = data.split(b"\n")

        def load():
            return targets.load_file(path)

        try:
            found = load()
        except TargetError as exc:
            where, _, number = exc.source.rpartition(":")
            assert where == str(path)
            assert 1 <= int(number) <= len(lines), (exc, len(lines))
            return
        assert targets.count([path]) == len({t.url for t in found})
        for target in found:
            assert 1 <= int(target.source.rpartition(":")[2]) <= len(lines)


# ---------------------------------------------------------------- the helper's requests

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
urls = st.one_of(
    st.text(max_size=40),
    st.builds(
        "{}://{}{}/{}".format,
        st.sampled_from(["http", "https", "HTTP", "ftp", "", "javascript"]),
        st.sampled_from(["24.kg", "[::1]", "10.0.0.1", "яндекс.рф", "a b", "x:y@h", "", "%00"]),
        st.sampled_from(["", ":0", ":80", ":65536", ":-1", ":+1", ":٨٠", ":"]),
        st.text(max_size=10),
    ),
)
endpoint_texts = st.one_of(
    st.text(max_size=30),
    st.builds(
        "{}:{}".format,
        st.sampled_from(["192.88.99.1", "[2001:db8::1]", "[fe80::1%eth0]", "10.0.0.1", "x.kg"]),
        st.one_of(st.integers(-5, 70000).map(str), st.text(max_size=6)),
    ),
)
requests = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"http_request": st.one_of(urls, json_values)},
        optional={
            "http_request_headers": st.one_of(
                json_values,
                st.dictionaries(
                    st.sampled_from(["User-Agent", "accept", "Cookie", "Host"]),
                    st.one_of(st.lists(st.text(max_size=20), max_size=2), json_values),
                ),
            ),
            "tcp_connect": st.one_of(json_values, st.lists(endpoint_texts, max_size=8)),
        },
    ),
)


@SETTINGS
@given(requests)
@example({"http_request": "http://24.kg:99999/"})
@example({"http_request": "https://24.kg/", "http_request_headers": {"Accept": [3]}})
def test_parse_request_accepts_or_refuses_any_json(data):
    data = json.loads(json.dumps(data))  # exactly what the server would have decoded
    try:
        req = parse_request(data, max_endpoints=4)
    except BadRequest as exc:
        assert exc.status == 400 and str(exc)
        return
    assert isinstance(req, HelperRequest)
    assert req.scheme in ("http", "https") and 0 < req.port < 65536
    assert len(req.endpoints) <= 4
    for key, ip, port in req.endpoints:
        assert parse_endpoint(key) == (ip, port)
    for value in req.headers.values():
        assert "\r" not in value and "\n" not in value


@SETTINGS
@given(st.one_of(endpoint_texts, json_values))
def test_parse_endpoint_is_none_or_a_canonical_endpoint(text):
    parsed = parse_endpoint(text)
    if parsed is None:
        return
    ip, port = parsed
    assert 0 < port < 65536
    assert str(ipaddress.ip_address(ip)) == ip
    assert parse_endpoint(endpoint(ip, port)) == parsed  # round trip


@SETTINGS
@given(st.ip_addresses(), st.integers(1, 65535))
def test_every_address_and_port_round_trips(ip, port):
    # parse_endpoint answers in the one canonical spelling (IPv4-mapped IPv6 is the IPv4 address)
    assert parse_endpoint(endpoint(str(ip), port)) == (canonical_ip(str(ip)), port)
