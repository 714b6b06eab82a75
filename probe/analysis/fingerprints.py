"""Blockpage and DNS fingerprints: recognise a censor's answer when we see one.

Three sources are loaded, in this order of precedence:

1. ``probe/data/fingerprints.json`` (the package's data folder): our own small set (ids
   ``probe.*``), written by us. A JSON list of objects ``{"id", "location", "type", "pattern",
   "scope", "countries", "source", "notes"}`` where ``location`` is ``"body"``,
   ``"header.<lowercase-name>"`` or ``"dns"`` (the answer IP), ``type`` is ``"full"``
   (equality), ``"prefix"``, ``"contains"`` or ``"regexp"`` (Python regex, DOTALL) and ``scope``
   one of ``isp nat prod inst vbw fp`` (Citizen Lab's vocabulary; ``fp`` marks a known false
   positive). Extra files in the same format can be added with :meth:`Fingerprints.load` (e.g. a
   lab's blockpage IP as a ``dns`` fingerprint).
2. Censored Planet's blockpage signatures (ids ``cp.<name>``, Apache-2.0, see NOTICE).
3. Censored Planet's false-positive signatures (ids ``cp.<name>``, scope ``fp``).

Censored Planet signatures are Python regexes (DOTALL) matched, as Censored Planet does,
against the whole response: the header lines ``Name: value`` joined with ``\\r\\n``, a blank
line, then the body.

**False positives win.** A page that matches a blockpage pattern *and* a false-positive
signature (ours with scope ``fp`` or Censored Planet's) is not a blockpage:
:meth:`Fingerprints.match_http` then returns the false-positive :class:`Match`
(``match.false_positive`` is True). This is Censored Planet's rule ("false positives are
checked first"), evaluated lazily: the false-positive list is only scanned when some
blockpage pattern matched, which gives the same answer at half the cost.

**Speed.** ~1,100 regexes over a 512 KiB body cost about 0.25 s of CPU, too much for thousands
of targets a minute, and one big alternation is slower still with Python's ``re`` (it cannot use
the literal-prefix search then). Block pages are small, so bodies are decoded once (in the
charset the page declares, else UTF-8, ``errors="replace"``) and only their first
:data:`MATCH_BODY_BYTES` (64 KiB) are matched; header fingerprints always see every header.
Patterns are compiled once, and the shipped set is cached by :func:`default`. Nearly every
Censored Planet signature is literal text (``fortinet\\.net``): each rule knows, once, a run of
literal text that every match contains (its *needle*, read from the regex's parse tree), so a
page is first searched for the needle, and the regex runs only when it is there and the pattern
is more than that text. Each response's views (decoded body, whole text, headers by name) are
made once, when a rule first needs them.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import FingerprintError
from ..model.addresses import canonical_ip
from ..model.charset import charset_of, decode_text
from ..model.records import HTTPRequest

try:  # CPython's own regex parser (private): a Python without it only loses the shortcut
    from re import _parser as _sre_parser  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover
    _sre_parser = None

#: Only this many leading bytes of a body are matched (block pages are a few KiB).
MATCH_BODY_BYTES = 64 * 1024

OURS = "fingerprints.json"
CP_BLOCKPAGES = "censoredplanet_blockpage_signatures.json"
CP_FALSE_POSITIVES = "censoredplanet_false_positive_signatures.json"

SCOPES = frozenset({"isp", "nat", "prod", "inst", "vbw", "fp"})
TYPES = frozenset({"full", "prefix", "contains", "regexp"})

# Censored Planet names start with a letter that says what blocks: a_prod_, b_nat_, ...
_CP_SCOPE = {"a": "prod", "b": "nat", "c": "isp", "d": "inst", "f": "vbw"}


@dataclass(frozen=True, slots=True)
class Match:
    """A fingerprint that matched: its id, scope, expected countries and where it looked."""

    id: str
    scope: str | None
    countries: tuple[str, ...]
    location: str  # "body", "header.<name>", "dns" or "response" (Censored Planet)

    @property
    def false_positive(self) -> bool:
        """True for a known false-positive signature: the page is *not* a blockpage."""
        return self.scope == "fp"


@dataclass(frozen=True, slots=True)
class _Rule:
    id: str
    location: str
    type: str
    pattern: str
    regex: re.Pattern[str] | None
    scope: str | None
    countries: tuple[str, ...]
    #: The header a ``header.<name>`` rule looks at (lower case), else None.
    header: str | None = None
    #: For a regexp: text that every match contains (see :func:`_needle`), or None.
    needle: str | None = None
    #: The regexp is only its needle: found in the value is matched.
    needle_only: bool = False

    def match(self) -> Match:
        return Match(self.id, self.scope, self.countries, self.location)

    def test(self, value: str) -> bool:
        if self.type == "regexp":
            # Most signatures are literal text: a substring search says no (or yes) at once.
            if self.needle is not None:
                if self.needle not in value:
                    return False
                if self.needle_only:
                    return True
            assert self.regex is not None
            return self.regex.search(value) is not None
        if self.type == "contains":
            return self.pattern in value
        if self.type == "full":
            return value == self.pattern
        return value.startswith(self.pattern)


def _rule(
    fid: str,
    location: str,
    kind: str,
    pattern: str,
    scope: str | None,
    countries: tuple[str, ...] = (),
) -> _Rule:
    """A rule with what matching needs computed once (raises :class:`re.error`)."""
    header = location[len("header.") :] if location.startswith("header.") else None
    if kind != "regexp":
        return _Rule(fid, location, kind, pattern, None, scope, countries, header)
    regex = re.compile(pattern, re.DOTALL)
    needle, needle_only = _needle(pattern)
    return _Rule(fid, location, kind, pattern, regex, scope, countries, header, needle, needle_only)


def _needle(pattern: str) -> tuple[str | None, bool]:
    """The longest run of literal characters at the top level of ``pattern`` (every match
    contains it), and whether the pattern is that run alone; (None, False) when there is none.

    Read from the parse tree of Python's own regex parser (``re._parser``, 3.11+), so escapes,
    ``(?x)`` and the like mean what they mean to the regex: a literal under a quantifier, in a
    group or in an alternative is not at the top level, and a pattern with ``(?i)`` has no
    needle.
    """
    if _sre_parser is None:
        return None, False
    parsed = _sre_parser.parse(pattern, re.DOTALL)
    if parsed.state.flags & re.IGNORECASE:
        return None, False
    runs: list[str] = []
    run: list[str] = []
    for op, value in parsed:
        if op is _sre_parser.LITERAL:
            run.append(chr(value))
            continue
        if run:
            runs.append("".join(run))
            run = []
    if run:
        runs.append("".join(run))
    if not runs:
        return None, False
    needle = max(runs, key=len)
    return needle, len(runs) == 1 and len(needle) == len(parsed)


def _normalise_ip(text: str) -> str:
    return canonical_ip(text.strip()) or text.strip()


def _rule_from_entry(entry: dict[str, Any], origin: str) -> _Rule:
    """Validate one entry of our JSON format."""
    try:
        fid, location, kind, pattern = (entry[k] for k in ("id", "location", "type", "pattern"))
    except KeyError as exc:
        raise FingerprintError(f"{origin}: fingerprint {entry!r} lacks {exc}") from None
    if not (location in ("body", "dns") or location.startswith("header.")):
        raise FingerprintError(f"{origin}: fingerprint {fid}: bad location {location!r}")
    if kind not in TYPES:
        raise FingerprintError(f"{origin}: fingerprint {fid}: bad type {kind!r}")
    scope = entry.get("scope")
    if scope is not None and scope not in SCOPES:
        raise FingerprintError(f"{origin}: fingerprint {fid}: bad scope {scope!r}")
    if location.startswith("header."):
        location = location.lower()
    if location == "dns" and kind == "full":
        pattern = _normalise_ip(pattern)
    countries = tuple(c.upper() for c in entry.get("countries") or ())
    try:
        return _rule(fid, location, kind, pattern, scope, countries)
    except re.error as exc:
        raise FingerprintError(f"{origin}: fingerprint {fid}: bad regexp: {exc}") from None


def _read_ours(text: str, origin: str) -> list[_Rule]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FingerprintError(f"{origin}:{exc.lineno}: not JSON: {exc.msg}") from None
    if not isinstance(data, list):
        raise FingerprintError(f"{origin}: expected a JSON list of fingerprints")
    return [_rule_from_entry(entry, origin) for entry in data]


def _read_cp(text: str, false_positive: bool) -> list[_Rule]:
    """Censored Planet's JSON lines ``{"fingerprint", "pattern"}`` as rules."""
    rules = []
    seen: set[tuple[str, str]] = set()
    for line in text.splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        name, pattern = entry["fingerprint"], entry["pattern"]
        if (name, pattern) in seen:
            continue
        seen.add((name, pattern))
        scope = "fp" if false_positive else _CP_SCOPE.get(name[:1]) if name[1:2] == "_" else None
        rules.append(_rule(f"cp.{name}", "response", "regexp", pattern, scope))
    return rules


def _data(name: str) -> str:
    return resources.files("probe").joinpath("data", name).read_text(encoding="utf-8")


def sources(
    extra_files: Iterable[str | Path] = (), *, censoredplanet: bool = True
) -> tuple[list[tuple[str, str]], tuple[str, str] | None]:
    """The texts :meth:`Fingerprints.load` compiles: ours as (origin, text), shipped first,
    then ``extra_files``; Censored Planet's two files (or None)."""
    ours = [(OURS, _data(OURS))]
    ours += [(str(path), Path(path).read_text(encoding="utf-8")) for path in extra_files]
    shipped = (_data(CP_BLOCKPAGES), _data(CP_FALSE_POSITIVES)) if censoredplanet else None
    return ours, shipped


def decode_body(hop: HTTPRequest, limit: int = MATCH_BODY_BYTES) -> str:
    """The first ``limit`` bytes of the hop's body as text, in the charset the page declares
    (UTF-8 otherwise; undecodable bytes replaced). A reply that was not HTTP at all is matched
    by its raw bytes, so a censor's non-HTTP notice can be fingerprinted too."""
    body = hop.body or hop.raw
    if not body:
        return ""
    head = body[:limit]
    return decode_text(head, charset_of(hop.header("content-type"), head))


def response_text(hop: HTTPRequest, body_text: str | None = None) -> str:
    """Header lines and body as Censored Planet matches them."""
    if body_text is None:
        body_text = decode_body(hop)
    head = "\r\n".join(f"{name}: {value}" for name, value in hop.headers)
    return f"{head}\r\n\r\n{body_text}" if head else body_text


class _Seen:
    """One response as the rules look at it, each view made once, when first needed: the
    decoded body, the whole response text (Censored Planet's), the header values by name."""

    __slots__ = ("_headers", "_whole", "body", "hop")

    def __init__(self, hop: HTTPRequest) -> None:
        self.hop = hop
        self.body = decode_body(hop)
        self._whole: str | None = None
        self._headers: dict[str, list[str]] | None = None

    def whole(self) -> str:
        if self._whole is None:
            self._whole = response_text(self.hop, self.body)
        return self._whole

    def header_values(self, name: str) -> list[str]:
        """The values of header ``name`` (lower case), stripped, in order."""
        if self._headers is None:
            self._headers = {}
            for key, value in self.hop.headers:
                self._headers.setdefault(key.lower(), []).append(value.strip())
        return self._headers.get(name, [])


class Fingerprints:
    """A compiled set of fingerprints; see the module docstring for sources and precedence."""

    def __init__(
        self,
        ours: Sequence[_Rule] = (),
        cp_blockpages: Sequence[_Rule] = (),
        cp_false_positives: Sequence[_Rule] = (),
    ) -> None:
        self._dns = [r for r in ours if r.location == "dns" and r.scope != "fp"]
        self._dns_fp = [r for r in ours if r.location == "dns" and r.scope == "fp"]
        http = [r for r in ours if r.location != "dns"]
        self._blockpages = [r for r in http if r.scope != "fp"] + list(cp_blockpages)
        self._false_positives = [r for r in http if r.scope == "fp"] + list(cp_false_positives)

    @classmethod
    def load(
        cls, extra_files: Iterable[str | Path] = (), *, censoredplanet: bool = True
    ) -> Fingerprints:
        """Our shipped fingerprints, then ``extra_files`` (our format), then Censored Planet's."""
        return cls.from_texts(*sources(extra_files, censoredplanet=censoredplanet))

    @classmethod
    def from_texts(
        cls, ours: Iterable[tuple[str, str]], censoredplanet: tuple[str, str] | None = None
    ) -> Fingerprints:
        """The set made of these files' texts: ``ours`` as (origin, text) in precedence order
        (origin names the file in errors), then Censored Planet's blockpage and
        false-positive texts. An evidence bundle rebuilds its fingerprints this way."""
        rules = [rule for origin, text in ours for rule in _read_ours(text, origin)]
        if censoredplanet is None:
            return cls(rules)
        blockpages, false_positives = censoredplanet
        return cls(
            rules,
            _read_cp(blockpages, false_positive=False),
            _read_cp(false_positives, false_positive=True),
        )

    def __len__(self) -> int:
        return sum(map(len, (self._dns, self._dns_fp, self._blockpages, self._false_positives)))

    def _first(self, rules: Iterable[_Rule], seen: _Seen) -> _Rule | None:
        for rule in rules:
            if rule.location == "response":
                hit = rule.test(seen.whole())
            elif rule.header is not None:
                hit = any(map(rule.test, seen.header_values(rule.header)))
            else:
                hit = rule.test(seen.body)
            if hit:
                return rule
        return None

    def match_http(self, hop: HTTPRequest) -> Match | None:
        """The fingerprint matching this response, or None.

        A blockpage match that a false-positive signature also matches returns the
        false-positive :class:`Match` instead (``.false_positive`` is True).
        """
        if hop.status_code is None and not hop.headers and not hop.body and not hop.raw:
            return None
        seen = _Seen(hop)
        hit = self._first(self._blockpages, seen)
        if hit is None:
            return None
        false_positive = self._first(self._false_positives, seen)
        return (false_positive or hit).match()

    def match_dns(self, addresses: Iterable[str]) -> Match | None:
        """The ``dns`` fingerprint matching any of these answer addresses, or None."""
        ips = [_normalise_ip(a) for a in addresses]
        for rules in (self._dns_fp, self._dns):
            for rule in rules:
                if any(rule.test(ip) for ip in ips):
                    return rule.match()
        return None


@functools.cache
def default() -> Fingerprints:
    """The shipped fingerprint set, compiled once per process."""
    return Fingerprints.load()
