"""Keep the volunteer's own IP addresses out of everything analysed, stored or printed.

A server can echo the client's address anywhere: a block page saying "Your IP address is
192.0.2.7", a header such as ``X-Your-IP``, a cookie, a redirect URL; a hostile test helper
can put it anywhere in its answer. Like OONI's ``probe_ip`` scrubbing, every text the network
sent is searched for the vantage's own addresses, which are replaced by :data:`SCRUBBED`
before the analysis, the store and the CLI see the measurement. Stored bodies are evidence, so
only the address bytes are replaced; the body's hash is recomputed over the scrubbed body (a
hash of the original would let anyone recover the address by trying all 2^32 candidates).

The vantage's addresses are its interfaces' addresses (read from ``/proc`` on Linux; elsewhere
the source address towards the resolver), re-read now and then since a DHCP lease or a mobile
network can change them; :meth:`Scrubber.add` adds more, e.g. a public address learnt later.
Loopback addresses identify nobody and are left alone (a DNS lie to 127.0.0.1 is evidence).
Addresses in IP fields (DNS answers, connected-to addresses) are destinations, not scrubbed.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..model.addresses import canonical_ip, is_loopback
from ..model.records import Observations

SCRUBBED = "[scrubbed]"
#: What replaces a vantage address that is a URL's host (``[scrubbed]`` is no valid host).
SCRUBBED_HOST = "scrubbed.invalid"
#: Anything that may be an IPv6 address (without an embedded IPv4 part, which the IPv4
#: pattern catches), not inside a longer run of hex digits and colons.
_V6_CANDIDATE = r"(?<![0-9A-Fa-f:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![0-9A-Fa-f:])"
#: How often the interface addresses are read again during a run (seconds).
REFRESH_EVERY = 30.0


class Scrubber:
    """Replaces the vantage's addresses in texts and bytes with :data:`SCRUBBED`."""

    def __init__(
        self, addresses: Iterable[str] = (), *, discover: bool = True, towards: str | None = None
    ) -> None:
        self._extra = {a for a in (_canonical(x) for x in addresses) if a}
        self._discover = discover
        self._towards = towards
        self._found: set[str] = set()
        self._read_at = -REFRESH_EVERY
        self._text: re.Pattern[str] | None = None
        self._bytes: re.Pattern[bytes] | None = None
        self._v6: set[str] = set()
        self._refresh()

    @property
    def addresses(self) -> frozenset[str]:
        """The addresses scrubbed (canonical spelling)."""
        return frozenset(self._found | self._extra)

    def add(self, address: str) -> None:
        """Scrub ``address`` too (e.g. the public address, once known)."""
        canonical = _canonical(address)
        if canonical and canonical not in self._extra:
            self._extra.add(canonical)
            self._compile()

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._read_at < REFRESH_EVERY:
            return
        self._read_at = now
        if self._discover:
            found = local_addresses(self._towards)
            if found != self._found:
                self._found = found
                self._compile()
        elif self._text is None:
            self._compile()

    def _compile(self) -> None:
        v4 = {a for a in self.addresses if ":" not in a}
        self._v6 = {a for a in self.addresses if ":" in a}
        # IPv4: the one dotted spelling, with boundaries so 192.0.2.7 never matches inside
        # 192.0.2.70 or 10.192.0.2.7 (it does inside ::ffff:192.0.2.7 and "IP:192.0.2.7").
        # IPv6 has many spellings: every candidate is parsed and compared (see _v6_match).
        patterns = []
        if v4:
            patterns.append(rf"(?<![0-9.])(?:{_alternatives(v4)})(?![0-9]|\.[0-9])")
        if self._v6:
            patterns.append(_V6_CANDIDATE)
        if not patterns:
            self._text = self._bytes = None
            return
        pattern = "|".join(patterns)
        self._text = re.compile(pattern, re.IGNORECASE)
        self._bytes = re.compile(pattern.encode(), re.IGNORECASE)

    def _v6_match(self, token: str) -> bool:
        if ":" not in token:
            return True  # the IPv4 alternative matched
        try:
            return str(ipaddress.IPv6Address(token)) in self._v6
        except ValueError:
            return False

    def text(self, value: str) -> str:
        if self._text is None:
            return value
        return self._text.sub(lambda m: SCRUBBED if self._v6_match(m.group()) else m.group(), value)

    def data(self, value: bytes) -> bytes:
        if self._bytes is None:
            return value
        marker = SCRUBBED.encode()
        return self._bytes.sub(
            lambda m: marker if self._v6_match(m.group().decode("ascii")) else m.group(), value
        )

    def url(self, value: str) -> str:
        """A URL scrubbed and still a URL: a vantage address as its host becomes
        :data:`SCRUBBED_HOST` (a redirect into the volunteer's own machine), and the rest
        (a query such as ``?ip=...``) is scrubbed as text."""
        try:
            parts = urlsplit(value)
            host = parts.hostname
        except ValueError:
            return self.text(value)
        if host is None or _canonical(host) not in self.addresses:
            return self.text(value)
        netloc = SCRUBBED_HOST if parts.port is None else f"{SCRUBBED_HOST}:{parts.port}"
        return self.text(urlunsplit(parts._replace(netloc=netloc)))

    def json(self, value: Any) -> Any:
        """Every string (keys too) in decoded JSON, scrubbed."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.json(item) for item in value]
        if isinstance(value, dict):
            return {self.text(str(k)): self.json(v) for k, v in value.items()}
        return value

    def observations(self, obs: Observations) -> None:
        """Scrub, in place, every text of ``obs`` that came from the network or our errors."""
        self._refresh()
        if self._text is None:
            return
        for query in obs.dns:
            query.failure = self._optional(query.failure)
            query.cnames = [self.text(name) for name in query.cnames]
        for connect in obs.tcp:
            connect.failure = self._optional(connect.failure)
        for handshake in obs.tls:
            handshake.failure = self._optional(handshake.failure)
            handshake.cert_subject = self._optional(handshake.cert_subject)
            handshake.cert_issuer = self._optional(handshake.cert_issuer)
        for hop in obs.http:
            hop.url = self.url(hop.url)
            hop.failure = self._optional(hop.failure)
            hop.title = self._optional(hop.title)
            hop.location = None if hop.location is None else self.url(hop.location)
            hop.headers = [[self.text(name), self.text(value)] for name, value in hop.headers]
            if hop.body is not None:
                body = self.data(hop.body)
                if body != hop.body:
                    hop.body = body
                    hop.body_sha256 = hashlib.sha256(body).hexdigest()
            if hop.raw is not None:
                hop.raw = self.data(hop.raw)
        control = obs.control
        control.failure = self._optional(control.failure)
        if control.response is not None:
            control.response = self.json(control.response)

    def _optional(self, value: str | None) -> str | None:
        return None if value is None else self.text(value)


def _alternatives(forms: set[str]) -> str:
    return "|".join(re.escape(form) for form in sorted(forms, key=len, reverse=True))


def local_addresses(towards: str | None = None) -> set[str]:
    """This machine's (this network namespace's) addresses, loopback excepted.

    Linux: every local address in ``/proc/net/fib_trie`` and ``/proc/net/if_inet6``.
    Anywhere: the source address the kernel picks towards ``towards`` (an IP address; a
    connected UDP socket sends nothing).
    """
    found: set[str] = set()
    try:
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
    except OSError:
        lines = []
    for previous, line in zip(lines, lines[1:], strict=False):
        if "/32 host LOCAL" in line:
            found.add(previous.split()[-1])
    try:
        rows = Path("/proc/net/if_inet6").read_text().splitlines()
    except OSError:
        rows = []
    for row in rows:
        fields = row.split()
        if fields and len(fields[0]) == 32:
            found.add(":".join(fields[0][i : i + 4] for i in range(0, 32, 4)))
    if towards is not None and _canonical(towards):
        found |= _source_address(towards)
    return {a for a in (_canonical(x) for x in found) if a}


def _source_address(destination: str) -> set[str]:
    family = socket.AF_INET6 if ":" in destination else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((destination.strip("[]"), 53))
            return {sock.getsockname()[0]}
    except OSError:  # no route
        return set()


def _canonical(text: str) -> str | None:
    """``text`` as an address worth scrubbing (canonical spelling), or None."""
    canonical = canonical_ip(text)
    if canonical is None or is_loopback(canonical) or canonical in ("0.0.0.0", "::"):
        return None
    return canonical
