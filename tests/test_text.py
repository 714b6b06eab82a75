"""The one escaping function for text a stranger sent (probe.model.text)."""

import pytest

from probe.model.text import is_clean_text, one_line, printable


@pytest.mark.parametrize(
    ("hostile", "shown"),
    [
        ("\x1b]0;owned\x07title", "\\x1b]0;owned\\x07title"),  # OSC 0: the terminal's title
        ("\x1b[2J", "\\x1b[2J"),  # clears the screen
        ("\x1b]52;c;aGk=\x07", "\\x1b]52;c;aGk=\\x07"),  # OSC 52: writes the clipboard
        ("\x9b31m", "\\x9b31m"),  # C1 CSI, one byte
        ("\x85next", "\\x85next"),  # C1 NEL
        ("gpj\u202eexe.", "gpj\\u202eexe."),  # RIGHT-TO-LEFT OVERRIDE
        ("a\u2066b\u2069", "a\\u2066b\\u2069"),  # bidi isolates
        ("a\u200fb", "a\\u200fb"),  # RIGHT-TO-LEFT MARK
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("line\u2028sep", "line\\u2028sep"),
        ("\ud800", "\\ud800"),  # a lone surrogate
        ("tag\U000e0041", "tag\\U000e0041"),  # a tag character
        ("a\\x1b", "a\\\\x1b"),  # a backslash cannot forge an escape
        ("del\x7f", "del\\x7f"),
        ("nul\x00", "nul\\x00"),
    ],
)
def test_printable_escapes_what_a_terminal_or_page_would_act_on(hostile, shown):
    assert printable(hostile) == shown
    assert all(c.isprintable() for c in printable(hostile))


def test_printable_keeps_text_in_any_script():
    for text in ("Радио Азаттык", "Азаттык Үналгысы", "راديو", "中文 页面", "Café — “news”"):
        assert printable(text) == text


def test_newlines_may_stay_line_breaks():
    assert printable("a\nb\tc\r") == "a\\nb\\tc\\r"
    assert printable("a\nb\tc\r", newlines=True) == "a\nb\tc\\r"


def test_one_line_folds_and_cuts():
    assert one_line("  Blocked\n\n  by   order ") == "Blocked by order"
    assert one_line("abcdefgh", 5) == "abcd\u2026"
    assert one_line("a\x1b[2Jb", 40) == "a\\x1b[2Jb"


def test_clean_text_is_what_json_and_sql_take():
    assert is_clean_text("plain\ttext\r\nwith lines, Кыргызча")
    assert not is_clean_text("nul\x00")
    assert not is_clean_text("lone \ud800 surrogate")
    assert not is_clean_text("bell \x07")
