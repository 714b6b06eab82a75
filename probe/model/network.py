"""How a network is named: its AS number (``"AS8449"``) and country code (``"KG"``), one rule
for every place that reads or checks one (options, config, the helper's answer, OONI files,
the collector's uploads and queries), so what one accepts the others never refuse."""

from __future__ import annotations

import re

#: The largest AS number (32-bit, RFC 6793).
MAX_ASN = 0xFFFFFFFF
_ASN = re.compile(r"(?:AS)?([0-9]{1,10})", re.IGNORECASE)
_CC = re.compile(r"[A-Z]{2}")


def asn(text: str) -> str | None:
    """``"AS8449"`` from ``AS8449``, ``as8449`` or ``8449`` (ASCII digits, at most 2**32 - 1);
    None for anything else."""
    match = _ASN.fullmatch(text.strip())
    if match is None or int(match.group(1)) > MAX_ASN:
        return None
    return f"AS{int(match.group(1))}"


def cc(text: str) -> str | None:
    """A two-letter country code, upper case (``kg`` is ``"KG"``); None for anything else."""
    code = text.strip().upper()
    return code if _CC.fullmatch(code) else None


def is_asn(text: str) -> bool:
    """Whether ``text`` is an AS number written as stored and exported: ``"AS8449"``."""
    return asn(text) == text


def is_cc(text: str) -> bool:
    """Whether ``text`` is a country code written as stored and exported: ``"KG"``."""
    return cc(text) == text
