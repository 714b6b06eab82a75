"""What a stranger sent, made safe to show to a person.

Pages, headers, DNS names, failure texts and helper answers come from the network, which may be
hostile: a page title holding ``\\x1b]0;...\\x07`` retitles the researcher's terminal, ``\\x1b[2J``
clears it, OSC 52 writes to its clipboard, and U+202E (RIGHT-TO-LEFT OVERRIDE) makes
``gpj.exe`` read as ``exe.jpg`` in a report. :func:`printable` is the one escaping function for
every text shown to people: the terminal (check's table, show, runs, timeline), log lines,
Markdown, HTML and CSV reports (which add their own quoting on top).
"""

from __future__ import annotations

#: Characters that reorder text without being controls in every library's eyes: the bidi
#: embeddings, overrides and isolates, and the marks, all Unicode category Cf.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _shown(char: str) -> bool:
    # str.isprintable() is False for C0 and C1 controls (Cc), format characters (Cf, the bidi
    # controls among them), surrogates (Cs), private use (Co), unassigned (Cn) and every
    # separator but the space (Zl, Zp, and Zs other than U+0020).
    return char.isprintable() and char not in _BIDI and char != "\\"


def printable(text: str, *, newlines: bool = False) -> str:
    """``text`` with a visible escape (``\\x1b``, ``\\u202e``, ``\\\\``) for every character
    a terminal or a page could act on: control characters (C0, DEL, C1), format characters
    (bidi overrides, zero-width ones), line and paragraph separators, surrogates, private use
    and unassigned code points. Backslashes are doubled so no escape can be forged. With
    ``newlines``, ``\\n`` stays a line break (a multi-line excerpt); ``\\t`` then too."""
    if text.isascii() and text.isprintable() and "\\" not in text:
        return text  # the common case, at C speed
    out = []
    for char in text:
        if _shown(char) or (newlines and char in "\n\t"):
            out.append(char)
        elif char == "\\":
            out.append("\\\\")
        else:
            out.append(_escape(ord(char)))
    return "".join(out)


_SHORT = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}


def _escape(code: int) -> str:
    if code in _SHORT:
        return _SHORT[code]
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def one_line(text: str, limit: int | None = None) -> str:
    """:func:`printable`, whitespace runs folded to one space, cut to ``limit`` characters with
    an ellipsis: a title or a reason in a table cell."""
    folded = " ".join(text.split())
    if limit is not None and len(folded) > limit:
        folded = folded[: max(limit - 1, 0)] + "\u2026"
    return printable(folded)


def is_clean_text(text: str) -> bool:
    """True when ``text`` holds no NUL, no lone surrogate and no other C0 control than
    tab, line feed and carriage return: text every JSON and SQL store takes as it is."""
    return not any((ord(c) < 0x20 and c not in "\t\n\r") or "\ud800" <= c <= "\udfff" for c in text)


__all__ = ["is_clean_text", "one_line", "printable"]


#: The longest network (AS) name kept (iptoasn's longest descriptions are about 100).
MAX_NAME = 200


def plain_name(text: str, limit: int = MAX_NAME) -> str:
    """A name from a stranger (an AS name in a table or a helper's answer) as stored: one space
    between words, nothing a terminal or a page could act on (controls, bidi overrides), at
    most ``limit`` characters."""
    return "".join(c for c in " ".join(text.split()) if c.isprintable())[:limit]
