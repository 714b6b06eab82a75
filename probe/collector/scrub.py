"""The uploader's own addresses, scrubbed from what it sends before anything is stored.

A site may echo the volunteer's address where the probe did not know it (an older probe, a
failed ``/whoami``, another client): the collector knows where the upload comes from and
scrubs those addresses too, with the probe's own :class:`~probe.measure.privacy.Scrubber` (so
in the same spellings). The addresses are the connection's peer and, behind a TLS proxy (whose
own address, 127.0.0.1, identifies nobody), the ones the proxy forwards (``X-Forwarded-For``,
``X-Real-IP``, ``Forwarded: for=``). A client can put any address there, which only scrubs
more of its own measurement. They live in memory for the request (and in a small cache of
compiled scrubbers): never logged nor stored.

:func:`scrubbed` walks the measurement's JSON: every string (a URL's host becomes
``scrubbed.invalid``, an address field ``[scrubbed]``, which our reader takes), the bytes of
OONI's base64 values and of our base64 fields (raw bytes), with a body's hash made again
over the scrubbed body (the original's would give the address away to anyone trying the
2^32 candidates).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from ..measure.privacy import Scrubber
from ..model.addresses import canonical_ip

#: Forwarded addresses taken at most (the last ones: a proxy appends the address it saw).
MAX_FORWARDED = 8
#: Compiled scrubbers kept (building one costs more than analysing a measurement).
CACHE = 256
#: Our export's fields holding raw bytes as a plain base64 string.
_BASE64_FIELDS = frozenset({"x_raw", "raw_response"})
#: A string that is a URL as a whole (a hop's, a redirect's, a resolver's), not a text
#: holding one: its host is scrubbed as a host.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S*\Z")


def forwarded(headers: Mapping[str, str]) -> list[str]:
    """The addresses a proxy says the request came from (canonical, at most
    :data:`MAX_FORWARDED`)."""
    tokens = headers.get("x-forwarded-for", "").split(",")
    tokens += headers.get("x-real-ip", "").split(",")
    for element in headers.get("forwarded", "").split(","):  # RFC 7239
        for pair in element.split(";"):
            name, _, value = pair.strip().partition("=")
            if name.lower() == "for":
                tokens.append(value)
    found = [address for address in map(_address, tokens) if address]
    return found[-MAX_FORWARDED:]


def _address(token: str) -> str | None:
    """``192.0.2.7``, ``192.0.2.7:4711``, ``"[2001:db8::7]:4711"`` -> the address."""
    text = token.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    return canonical_ip(text)


class Scrubbers:
    """The scrubber for a request's addresses (None when none identifies anybody), the
    compiled ones kept in a small cache."""

    def __init__(self, size: int = CACHE) -> None:
        self.size = size
        self._cache: OrderedDict[frozenset[str], Scrubber | None] = OrderedDict()

    def of(self, peer: str | None, headers: Mapping[str, str]) -> Scrubber | None:
        addresses = frozenset(a for a in (canonical_ip(peer or ""), *forwarded(headers)) if a)
        if addresses in self._cache:
            self._cache.move_to_end(addresses)
            return self._cache[addresses]
        scrubber = Scrubber(addresses, discover=False)
        found = scrubber if scrubber.addresses else None  # loopback only: nothing to scrub
        self._cache[addresses] = found
        while len(self._cache) > self.size:
            self._cache.popitem(last=False)
        return found


def scrubbed(scrubber: Scrubber, value: Any) -> Any:
    """Decoded JSON with the scrubber's addresses gone (see the module docstring); equal to
    ``value`` when they were nowhere in it."""
    if isinstance(value, str):
        return scrubber.url(value) if _URL.match(value) else scrubber.text(value)
    if isinstance(value, list):
        return [scrubbed(scrubber, item) for item in value]
    if not isinstance(value, dict):
        return value
    if value.get("format") == "base64" and isinstance(value.get("data"), str):
        data = _base64_scrubbed(scrubber, value["data"])  # OONI's BinaryData
        return value if data is None else dict(value, data=data)
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key in _BASE64_FIELDS and isinstance(item, str):
            out[key] = _base64_scrubbed(scrubber, item) or item
        else:
            out[scrubber.text(key)] = scrubbed(scrubber, item)
    if isinstance(out.get("x_body_sha256"), str):  # a request entry of our export
        before, after = _body(value.get("response")), _body(out.get("response"))
        if after is not None and after != before:
            out["x_body_sha256"] = hashlib.sha256(after).hexdigest()
    return out


def _base64_scrubbed(scrubber: Scrubber, text: str) -> str | None:
    """``text``'s bytes scrubbed, in base64 again; None when unchanged (or not base64: our
    reader refuses it then, and nothing is stored)."""
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error:
        return None
    clean = scrubber.data(raw)
    return None if clean == raw else base64.b64encode(clean).decode("ascii")


def _body(response: Any) -> bytes | None:
    """A response's body as bytes (OONI's MaybeBinaryData), or None."""
    body = response.get("body") if isinstance(response, dict) else None
    if isinstance(body, str):
        return body.encode("utf-8", "surrogatepass")
    if isinstance(body, dict) and isinstance(body.get("data"), str):
        try:
            return base64.b64decode(body["data"], validate=True)
        except binascii.Error:
            return None
    return None
