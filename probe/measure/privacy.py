"""Keep the volunteer's own IP addresses out of everything analysed, stored or printed.

A server can echo the client's address anywhere: a block page saying "Your IP address is
192.0.2.7", a header such as ``X-Your-IP``, a cookie, a redirect URL; a hostile test helper
can put it anywhere in its answer; a redirect or a DNS answer can name it as a destination.
Like OONI's ``probe_ip`` scrubbing, every text the network sent is searched for the vantage's
own addresses, which are replaced by :data:`SCRUBBED` before the analysis, the store and the
CLI see the measurement. Stored bodies are evidence, so only the address bytes are replaced;
the body's hash is recomputed over the scrubbed body (a hash of the original would let anyone
recover the address by trying all 2^32 candidates).

An address is searched for in the spellings servers and ISPs write it in
(:func:`spellings`), in any letter case. For an IPv4 address, ``192.88.99.2``:

* dotted, also zero-padded (``192.088.099.002``), also after a dot (``ip.192.88.99.2``) but
  not inside a longer run of numbers (``10.192.88.99.2``, ``192.88.99.25``, ``1.192.88.99.2.5``);
* dashed as in reverse-DNS names (``host-192-88-99-2.isp.kg``, ``dslb-192-088-099-002``), and
  reversed before a name (``2.99.88.192.in-addr.arpa``, ``2-99-88-192.static.isp.kg``);
* decimal (``3227017986``, as IP APIs give it) and hexadecimal (``c0586302``, ``0xC0586302``,
  ``p5B0C1234``-style names);
* inside IPv6: IPv4-mapped and -compatible (``::ffff:c058:6302``, ``::ffff:192.88.99.2``),
  NAT64 with any /96 prefix (``64:ff9b::c058:6302``), 6to4 (``2002:c058:6302::1``), Teredo
  (the client's address inverted, ``3fa7:9cfd``);
* base64 of the dotted text at any alignment, standard or URL-safe (a cookie holding
  ``{"ip":"192.88.99.2"}`` encoded).

For an IPv6 address: compressed at any run of zeros or not at all, groups with or without
leading zeros (``2001:db8::7``, ``2001:db8:0:0:0:0:0:7``, ``2001:0db8:0000:...:0007``),
with ``:``, ``-`` (``2001-db8--7.ipv6-literal.net``) or ``%3A`` between groups, the 32 hex
digits, the ``ip6.arpa`` nibbles, and base64 of the compressed text. Boundaries keep a longer
address (``2001:db8::70``, ``2001:db8::7:1``) whole.

The search is for these literal strings, precomputed when the addresses change, in one
compiled pattern over the bytes (lower-cased once): a body costs one scan, however many
spellings there are. An address spelled some other way (UTF-16, an image, encrypted) is not
found: no scrubber can find every encoding a server may choose.

Address fields (DNS answers, connected-to addresses) hold :data:`SCRUBBED` instead of a
vantage address or of an IPv6 address carrying one (6to4, NAT64, mapped); host names (a URL's
host, a DNS question, a TLS server name, a CNAME) holding one become :data:`SCRUBBED_HOST`.
The measurer never connects to these addresses either (:meth:`Scrubber.is_own`, the
``own_address`` policy of :class:`~probe.measure.measurer.Settings`).

The vantage's addresses are its interfaces' addresses (read from ``/proc`` on Linux; elsewhere
the source address towards the resolver), re-read now and then since a DHCP lease or a mobile
network can change them; :meth:`Scrubber.add` adds more, e.g. the public address ``/whoami``
tells (:mod:`.identity`), before the first target is measured. Loopback addresses identify
nobody and are left alone (a DNS lie to 127.0.0.1 is evidence). What the user wrote (the
target's input, URL and domain) is kept as written.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..model.addresses import SCRUBBED, SCRUBBED_HOST, canonical_ip, embedded_ipv4, is_loopback
from ..model.records import Observations

#: How often the interface addresses are read again during a run (seconds).
REFRESH_EVERY = 30.0

_MARK = SCRUBBED.encode()
_DIGITS = frozenset(b"0123456789")
_HEX = frozenset(b"0123456789abcdef")  # the text searched is lower-cased
_LETTERS = frozenset(b"abcdefghijklmnopqrstuvwxyz")

# How a spelling must sit in the text to count (see _fits): its kind and its separator.
#: Decimal numbers with a separator (dotted, dashed) or none (the 32-bit integer): no digit
#: right before or after, nor a separator next to one (``10.192.88.99.2``, ``192.88.99.2.5``).
_DECIMAL = "decimal"
#: A reversed decimal spelling: only as the start of a name (``2.99.88.192.in-addr.arpa``).
_REVERSED = "reversed"
#: Hexadecimal, IPv6 groups: no hex digit right before or after, nor a separator and one
#: after (``2001:db8::7:1`` is another address).
_HEXADECIMAL = "hex"
#: Anywhere (base64, the ip6.arpa nibbles: too long to be part of something else by chance).
_ANYWHERE = "anywhere"

Kind = tuple[str, bytes]


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
        self._all: frozenset[str] = frozenset()
        self._v4: frozenset[int] = frozenset()
        self._pattern: re.Pattern[bytes] | None = None
        self._kinds: dict[bytes, frozenset[Kind]] = {}
        self._refresh()
        if self._pattern is None:
            self._compile()

    @property
    def addresses(self) -> frozenset[str]:
        """The addresses scrubbed (canonical spelling), the IPv4 addresses the vantage's IPv6
        addresses carry (6to4, Teredo) included."""
        return self._all

    def add(self, address: str) -> None:
        """Scrub ``address`` too (e.g. the public address, once known)."""
        canonical = _canonical(address)
        if canonical and canonical not in self._extra:
            self._extra.add(canonical)
            self._compile()

    def _refresh(self) -> None:
        now = time.monotonic()
        if not self._discover or now - self._read_at < REFRESH_EVERY:
            return
        self._read_at = now
        found = local_addresses(self._towards)
        if found != self._found:
            self._found = found
            self._compile()

    def _compile(self) -> None:
        known = self._found | self._extra
        for address in list(known):
            if ":" in address:
                # The last: Teredo's client (its first is the Teredo server's).
                carried = embedded_ipv4(ipaddress.IPv6Address(address))[-1:]
                known |= {str(v4) for v4 in carried}
        self._all = frozenset(a for a in (_canonical(x) for x in known) if a)
        self._v4 = frozenset(int(ipaddress.IPv4Address(a)) for a in self._all if ":" not in a)
        kinds: dict[bytes, set[Kind]] = {}
        for address in self._all:
            for text, kind in spellings(address):
                kinds.setdefault(text, set()).add(kind)
        self._kinds = {text: frozenset(k) for text, k in kinds.items()}
        self._pattern = re.compile(_trie(self._kinds)) if kinds else None

    def is_own(self, ip: str) -> bool:
        """Whether ``ip`` (any spelling) is one of the vantage's addresses, or an IPv6 address
        that carries one of its IPv4 addresses (mapped, 6to4, Teredo, NAT64 with any /96
        prefix): a connection there reaches the volunteer's own machine or router."""
        self._refresh()
        canonical = canonical_ip(ip)
        if canonical is None:
            return False
        if canonical in self._all:
            return True
        if ":" not in canonical:
            return False
        address = ipaddress.IPv6Address(canonical)
        carried = {int(v4) for v4 in embedded_ipv4(address)} | {int(address) & 0xFFFFFFFF}
        return bool(carried & self._v4)

    def data(self, value: bytes) -> bytes:
        """``value`` with every spelling of a vantage address replaced by :data:`SCRUBBED`."""
        pattern = self._pattern
        if pattern is None:
            return value
        lowered = value.lower()  # ASCII only: every offset stays the same
        pieces: list[bytes] = []
        done = start = 0
        while (match := pattern.search(lowered, start)) is not None:
            begin, end = match.span()
            if any(_fits(lowered, begin, end, kind) for kind in self._kinds[match.group()]):
                pieces += (value[done:begin], _MARK)
                done = start = end
            else:
                start = begin + 1
        if not pieces:
            return value
        pieces.append(value[done:])
        return b"".join(pieces)

    def text(self, value: str) -> str:
        """``value`` with every spelling of a vantage address replaced by :data:`SCRUBBED`."""
        if self._pattern is None:
            return value
        # Through UTF-8: the spellings are ASCII, and ASCII bytes never split a character.
        raw = value.encode("utf-8", "surrogatepass")
        scrubbed = self.data(raw)
        return value if scrubbed is raw else scrubbed.decode("utf-8", "surrogatepass")

    def address(self, ip: str) -> str:
        """An address field: :data:`SCRUBBED` when ``ip`` is the vantage's (see
        :meth:`is_own`), else ``ip`` as it was."""
        return SCRUBBED if self.is_own(ip) else ip

    def host(self, name: str) -> str:
        """A host name or IP literal as a host: :data:`SCRUBBED_HOST` when it is or spells a
        vantage address (``host-192-88-99-2.isp.kg``); the same name in every field, so
        the analysis still ties a redirect's DNS question to its hop."""
        if self.is_own(name) or self.text(name) != name:
            return SCRUBBED_HOST
        return name

    def url(self, value: str) -> str:
        """A URL scrubbed and still a URL: a host that is or spells a vantage address becomes
        :data:`SCRUBBED_HOST` (a redirect into the volunteer's own machine), and the rest
        (a query such as ``?ip=...``) is scrubbed as text."""
        try:
            parts = urlsplit(value)
            host = parts.hostname
            port = parts.port
        except ValueError:
            return self.text(value)
        if host is None or (self.host(host) == host and self.text(parts.netloc) == parts.netloc):
            return self.text(value)
        netloc = SCRUBBED_HOST if port is None else f"{SCRUBBED_HOST}:{port}"
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
        """Scrub, in place, every text and address of ``obs`` that came from the network or
        our errors (not what the user wrote: the input, URL and domain)."""
        self._refresh()
        if self._pattern is None:
            return
        for query in obs.dns:
            query.hostname = self.host(query.hostname)
            query.resolver = self.url(query.resolver)
            query.failure = self._optional(query.failure)
            query.addresses = [self.address(a) for a in query.addresses]
            query.cnames = [self.host(name) for name in query.cnames]
            query.duplicate_replies = [self._reply(reply) for reply in query.duplicate_replies]
        for connect in obs.tcp:
            connect.ip = self.address(connect.ip)
            connect.failure = self._optional(connect.failure)
        for handshake in obs.tls:
            handshake.ip = self.address(handshake.ip)
            handshake.server_name = self.host(handshake.server_name)
            handshake.failure = self._optional(handshake.failure)
            handshake.cert_subject = self._optional(handshake.cert_subject)
            handshake.cert_issuer = self._optional(handshake.cert_issuer)
        for hop in obs.http:
            hop.url = self.url(hop.url)
            hop.ip = None if hop.ip is None else self.address(hop.ip)
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
        control.helper = None if control.helper is None else self.url(control.helper)
        control.failure = self._optional(control.failure)
        if control.response is not None:
            control.response = self.json(control.response)

    def _reply(self, reply: dict[str, Any]) -> Any:
        """A duplicate DNS reply: its addresses as address fields, the rest as text."""
        addresses = reply.get("addresses")
        if isinstance(addresses, list):
            reply = {**reply, "addresses": [self.address(str(a)) for a in addresses]}
        return self.json(reply)

    def _optional(self, value: str | None) -> str | None:
        return None if value is None else self.text(value)


def spellings(address: str) -> list[tuple[bytes, Kind]]:
    """The spellings of ``address`` (canonical) searched for, lower-case, each with how it
    must sit in a text (see the module docstring)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv4Address):
        return _v4_spellings(ip)
    return _v6_spellings(ip)


def _v4_spellings(ip: ipaddress.IPv4Address) -> list[tuple[bytes, Kind]]:
    octets = list(ip.packed)
    number = int(ip)
    high, low = number >> 16, number & 0xFFFF
    out: list[tuple[bytes, Kind]] = []
    for sep in ".-":
        for width in (0, 3):  # 192.88.99.2, 192.088.099.002
            forward = sep.join(f"{o:0{width}}" for o in octets)
            backward = sep.join(f"{o:0{width}}" for o in reversed(octets))
            out += [(forward.encode(), (_DECIMAL, sep.encode()))]
            out += [(backward.encode(), (_REVERSED, sep.encode()))]
    out.append((str(number).encode(), (_DECIMAL, b"")))
    hexes = [f"{number:08x}"]
    # Two IPv6 groups: mapped, compatible, NAT64 /96 and 6to4 carry it so, and Teredo inverted.
    for first, second in ((high, low), (high ^ 0xFFFF, low ^ 0xFFFF)):
        hexes += [f"{first:x}:{second:x}", f"{first:04x}:{second:04x}"]
    # No separator rule: 6to4 goes on with more groups (2002:c058:6302:1::5).
    out += [(h.encode(), (_HEXADECIMAL, b"")) for h in hexes]
    out += [(core, (_ANYWHERE, b"")) for core in _base64_cores(str(ip).encode())]
    return out


def _v6_spellings(ip: ipaddress.IPv6Address) -> list[tuple[bytes, Kind]]:
    number = int(ip)
    groups = [(number >> (112 - 16 * i)) & 0xFFFF for i in range(8)]
    zero_runs = []  # (start, end) of every run of zero groups
    i = 0
    while i < 8:
        if groups[i]:
            i += 1
            continue
        j = i
        while j < 8 and not groups[j]:
            j += 1
        zero_runs.append((i, j))
        i = j
    forms = set()
    for width in (0, 4):
        written = [f"{g:0{width}x}" for g in groups]
        forms.add(":".join(written))
        for start, end in zero_runs:
            forms.add(":".join(written[:start]) + "::" + ":".join(written[end:]))
    out: list[tuple[bytes, Kind]] = []
    for form in sorted(forms):
        for sep in (":", "-", "%3a"):
            out.append((form.replace(":", sep).encode(), (_HEXADECIMAL, sep.encode())))
    out.append((f"{number:032x}".encode(), (_HEXADECIMAL, b"")))
    out.append((".".join(reversed(f"{number:032x}")).encode() + b".ip6.arpa", (_ANYWHERE, b"")))
    out += [(core, (_ANYWHERE, b"")) for core in _base64_cores(str(ip).encode())]
    return out


def _base64_cores(text: bytes) -> set[bytes]:
    """The base64 characters that encode only ``text``'s bits, for each of the three ways it
    can align in a longer encoded string; standard and URL-safe alphabets, ``+`` and ``/``
    also percent-encoded (a cookie), lower-cased (the text searched is)."""
    cores = set()
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + text + bytes(2))
        # Characters covering bits [6i, 6i + 6) of the stream; text's bits are
        # [8 * offset, 8 * (offset + len(text))).
        core = encoded[-(-8 * offset // 6) : 8 * (offset + len(text)) // 6]
        cores |= {core, core.translate(bytes.maketrans(b"+/", b"-_"))}
        cores.add(core.replace(b"+", b"%2b").replace(b"/", b"%2f"))
    return {core.lower() for core in cores}


def _fits(text: bytes, begin: int, end: int, kind: Kind) -> bool:
    """Whether the spelling at ``text[begin:end]`` stands alone as ``kind`` says."""
    how, sep = kind
    if how == _ANYWHERE:
        return True
    before = text[begin - 1] if begin else None
    after = text[end] if end < len(text) else None
    if how in (_DECIMAL, _REVERSED):
        if before in _DIGITS or after in _DIGITS:
            return False
        # A separator next to a digit continues the number: 10.192.88.99.2, 192.88.99.2.5.
        if sep and text.endswith(sep, 0, begin) and _byte(text, begin - 2) in _DIGITS:
            return False
        if sep and text.startswith(sep, end) and _byte(text, end + 1) in _DIGITS:
            return False
        if how == _REVERSED:  # only as the start of a name: 2.99.88.192.in-addr.arpa
            return after is not None and after in b".-" and _byte(text, end + 1) in _LETTERS
        return True
    if before in _HEX or after in _HEX:
        return False
    if sep and text.startswith(sep, end) and _byte(text, end + len(sep)) in _HEX:
        return False  # 2001:db8::7:1 is another address
    if sep == b":" and after == ord(".") and _byte(text, end + 1) in _DIGITS:
        return False  # 2001:db8::7.1.2.3 too (its last 32 bits written as IPv4)
    return True


def _byte(text: bytes, index: int) -> int | None:
    return text[index] if 0 <= index < len(text) else None


def _trie(kinds: dict[bytes, Any]) -> bytes:
    """One pattern matching each of ``kinds``' keys, longest first, as a trie: the regular
    expression engine then tries a few branches per byte, not one per spelling."""
    root: dict[int | None, Any] = {}
    for word in kinds:
        node = root
        for byte in word:
            node = node.setdefault(byte, {})
        node[None] = {}

    def emit(node: dict[int | None, Any]) -> bytes:
        branches = [
            re.escape(bytes([byte])) + emit(child)
            for byte, child in sorted((k, v) for k, v in node.items() if k is not None)
        ]
        if not branches:
            return b""
        if len(branches) == 1 and None not in node:
            return branches[0]
        return b"(?:" + b"|".join(branches) + b")" + (b"?" if None in node else b"")

    return emit(root)


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
