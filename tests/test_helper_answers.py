"""A helper's answer is checked for range, not only type: numbers no helper saw are no evidence.

Status codes are 100..599 (or -1/0 for none), body lengths -1..2**40, AS numbers and ip_info
flags 32-bit and not negative. An answer holding one out of range is refused whole by the
probe's client, with a failure string naming the field, and never reaches the evidence.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from probe.ooni.helper_protocol import check_response

MAX_BODY_LENGTH = 1 << 40  # the protocol's bound (helper_protocol.MAX_BODY_LENGTH)

ANSWER: dict[str, Any] = {
    "tcp_connect": {"192.88.99.100:443": {"status": True, "failure": None}},
    "tls_handshake": {},
    "http_request": {
        "body_length": 1234,
        "discovered_h3_endpoint": "",
        "failure": None,
        "title": "A",
        "headers": {},
        "status_code": 200,
    },
    "dns": {"failure": None, "addrs": ["192.88.99.100"]},
    "ip_info": {"192.88.99.100": {"asn": 65000, "flags": 10}},
}


def with_value(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    answer: dict[str, Any] = json.loads(json.dumps(ANSWER))
    node = answer
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return answer


HTTP = ("http_request",)
INFO = ("ip_info", "192.88.99.100")
OUT_OF_RANGE = [
    (HTTP + ("status_code",), 10**12, "$.http_request.status_code: 1000000000000 is not an HTTP"),
    (HTTP + ("status_code",), 99, "$.http_request.status_code: 99 is not an HTTP"),
    (HTTP + ("status_code",), 600, "$.http_request.status_code: 600 is not an HTTP"),
    (HTTP + ("status_code",), -2, "$.http_request.status_code: -2 is not an HTTP"),
    (HTTP + ("body_length",), -(10**18), "$.http_request.body_length: -1000000000000000000 is"),
    (HTTP + ("body_length",), -2, "$.http_request.body_length: -2 is not a body length"),
    (HTTP + ("body_length",), MAX_BODY_LENGTH + 1, "$.http_request.body_length: "),
    (INFO + ("asn",), -1, "$.ip_info['192.88.99.100'].asn: -1 is not an AS number"),
    (INFO + ("asn",), 2**32, "$.ip_info['192.88.99.100'].asn: 4294967296 is not an AS number"),
    (INFO + ("flags",), -8, "$.ip_info['192.88.99.100'].flags: -8 is not ip_info flags"),
    (INFO + ("flags",), 2**40, "$.ip_info['192.88.99.100'].flags: "),
]


@pytest.mark.parametrize("path, value, message", OUT_OF_RANGE)
def test_a_number_out_of_its_range_refuses_the_answer_naming_the_field(path, value, message):
    with pytest.raises(ValueError) as caught:
        check_response(with_value(path, value))
    assert str(caught.value).startswith(message), caught.value


@pytest.mark.parametrize(
    "path, value",
    [
        (HTTP + ("status_code",), 100),
        (HTTP + ("status_code",), 599),
        (HTTP + ("status_code",), -1),  # the fetch failed, as helpers write it
        (HTTP + ("status_code",), None),  # absent: Go's zero value
        (HTTP + ("body_length",), 0),
        (HTTP + ("body_length",), -1),
        (HTTP + ("body_length",), MAX_BODY_LENGTH),
        (INFO + ("asn",), 0),
        (INFO + ("asn",), 2**32 - 1),
        (INFO + ("flags",), 0),
        (INFO + ("flags",), 16 | 1),  # a bit a newer helper may send
    ],
)
def test_numbers_at_the_edges_of_their_ranges_pass(path, value):
    checked = check_response(with_value(path, value))
    node = checked
    for key in path:
        node = node[key]
    assert node == (0 if value is None else value)


FAKE_HELPER = """
import asyncio, contextlib, json, ssl
from probe.measure.control import HelperClient
from probe.net.kept import KeptClient
from probe.net.connections import Clock

ANSWERS = {answers!r}

async def serve(reader, writer):
    head = await reader.readuntil(b"\\r\\n\\r\\n")
    path = head.split(b" ")[1].decode()
    length = int(head.lower().split(b"content-length: ")[1].split(b"\\r\\n")[0])
    await reader.readexactly(length)
    body = json.dumps(ANSWERS[path.strip("/")]).encode()
    writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\n"
                 b"Content-Length: %d\\r\\nConnection: close\\r\\n\\r\\n" % len(body) + body)
    await writer.drain()
    writer.close()

async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", 8099)
    out = {{}}
    async with contextlib.aclosing(KeptClient(ssl.create_default_context())) as client:
        for case in ANSWERS:
            helper = HelperClient([f"http://127.0.0.1:8099/{{case}}"], client, timeout=5)
            record = await helper.control(
                {{"http_request": "http://a.kg/", "http_request_headers": {{}},
                 "tcp_connect": [], "x_quic_enabled": False}}, Clock())
            out[case] = [record.failure, record.response]
    server.close()
    print(json.dumps(out))

asyncio.run(main())
"""


def test_lab_an_answer_out_of_range_is_a_failure_string_never_evidence(lab):
    # A helper (in the vantage's own namespace, on its loopback) answering numbers no
    # helper saw: the control records a failure naming the field, and no response at all.
    answers = {
        "status": with_value(HTTP + ("status_code",), 10**12),
        "length": with_value(HTTP + ("body_length",), -(10**18)),
        "asn": with_value(INFO + ("asn",), -5),
        "good": ANSWER,
    }
    got = json.loads(lab.python(lab.vantage, FAKE_HELPER.format(answers=answers)))
    unusable = "unknown_failure: helper answer unusable: "
    assert got["status"] == [
        f"{unusable}$.http_request.status_code: 1000000000000 is not an HTTP status code "
        "(100..599, or -1 or 0 for none)",
        None,
    ]
    failure, response = got["length"]
    assert failure.startswith(f"{unusable}$.http_request.body_length: -1000000000000000000 is")
    assert response is None
    failure, response = got["asn"]
    # (the address in the path may be scrubbed: failure strings are scrubbed of dotted quads)
    assert failure.startswith(f"{unusable}$.ip_info[") and "].asn: -5 is not an AS" in failure
    assert response is None
    assert got["good"] == [None, check_response(ANSWER)]  # the client itself works
