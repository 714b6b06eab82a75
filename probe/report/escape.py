"""Escaping for each report format, on top of :func:`~probe.model.text.printable`."""

from __future__ import annotations

import html
import json
import re
from typing import Any

from ..model.text import one_line, printable

#: What Markdown (CommonMark, GFM tables) could read as markup inline: a link needs ``[``,
#: emphasis ``*``/``_``, code a backtick, a table cell ends at ``|``; ``<>&`` become entities.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def html_text(value: Any) -> str:
    """Any value as HTML text (element content or a quoted attribute)."""
    return html.escape(printable(plain(value), newlines=True), quote=True)


def md_text(value: Any) -> str:
    """Any value as inline Markdown that renders as exactly that text (printable's)."""
    text = one_line(plain(value))
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", text)


#: What a spreadsheet reads as the start of a formula (CSV injection). The standard
#: mitigation (OWASP's) is a leading ``'``, which makes the cell text; a tab or carriage
#: return in front (the other characters OWASP names) cannot reach here: printable()
#: escapes them.
_FORMULA_STARTS = ("=", "+", "-", "@")


def csv_cell(value: Any) -> Any:
    """A value for a CSV cell: text printable, and a leading ``'`` on text a spreadsheet
    would evaluate as a formula (``=``, ``+``, ``-``, ``@`` first)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        return value
    text = printable(value)
    if text.lstrip(" ")[:1] in _FORMULA_STARTS:
        return "'" + text
    return text


#: Characters JSON's encoder leaves as they are that a terminal could act on (DEL, C1,
#: bidi controls, ...): anything outside printable ASCII is looked at.
_NOT_PLAIN = re.compile(r"[^\x20-\x7e\n]")


def json_text(value: Any, *, outline: int = 0) -> str:
    """``value`` as JSON in which every character :func:`~probe.model.text.printable` would
    escape is a ``\\uXXXX`` escape (the encoder already escapes C0): any JSON reader gets
    the same value back, and no terminal acts on it. Text in any script stays readable.

    ``outline``: how many levels of objects and arrays get a line per member (indented by one
    space a level); deeper values are written on one line. (``indent=`` would do every level,
    in the json module's pure-Python encoder: 1.3 s of a million-measurement report.)"""
    return _NOT_PLAIN.sub(_json_escape, _outlined(value, outline, "\n"))


#: One encoder for every value (``json.dumps(..., ensure_ascii=False)`` makes a new one each
#: call: most of the cost of a report's 60,000 small values).
_encode = json.JSONEncoder(ensure_ascii=False).encode


def _outlined(value: Any, levels: int, newline: str) -> str:
    if levels <= 0 or not value or not isinstance(value, dict | list):
        return _encode(value)
    if isinstance(value, dict) and not all(isinstance(k, str) for k in value):
        return _encode(value)  # the encoder's spelling of other keys
    inner = newline + " "
    if isinstance(value, list):
        members = [_outlined(v, levels - 1, inner) for v in value]
        return "[" + inner + ("," + inner).join(members) + newline + "]"
    members = [_encode(k) + ": " + _outlined(v, levels - 1, inner) for k, v in value.items()]
    return "{" + inner + ("," + inner).join(members) + newline + "}"


def _json_escape(match: re.Match[str]) -> str:
    char = match.group()
    if printable(char) == char:
        return char
    code = ord(char)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # JSON spells a character beyond the BMP as a surrogate pair
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def plain(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)
