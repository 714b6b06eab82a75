"""Which character set a fetched page is in, and its text.

Pages in the region still come in legacy charsets (windows-1251, KOI8-R). The order follows
the HTML standard's encoding sniffing, simplified: a byte-order mark, then the Content-Type
header's ``charset=``, then a ``<meta charset>`` or ``<meta http-equiv="Content-Type"
content="...; charset=...">`` in the first bytes of the page; otherwise UTF-8, with
replacement characters for what does not decode. Labels are mapped as browsers map them
(``iso-8859-1`` and ``us-ascii`` mean windows-1252). Pure: no network.
"""

from __future__ import annotations

import codecs
import re

#: How far into the body a ``<meta>`` declaration is looked for (the standard says 1024;
#: pages with long heads put it later, and browsers find it there too).
META_PRESCAN = 4096

_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

#: WHATWG Encoding labels that mean something else than Python's codec of the same name.
_WHATWG = {
    "ascii": "cp1252",
    "us-ascii": "cp1252",
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "l1": "cp1252",
    "iso-8859-9": "cp1254",
    "latin5": "cp1254",
    "tis-620": "cp874",
    "iso-8859-11": "cp874",
    "gb2312": "gbk",
    "x-gbk": "gbk",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "x-mac-cyrillic": "mac-cyrillic",
    "x-mac-ukrainian": "mac-cyrillic",
    "x-cp1251": "cp1251",
    "x-user-defined": "cp1252",
}

_HEADER_CHARSET = re.compile(r"""charset\s*=\s*["']?\s*([^\s"';,]+)""", re.IGNORECASE)
_META_CHARSET = re.compile(
    rb"""<meta\s[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9_.:+-]+)""", re.IGNORECASE
)


def codec_for(label: str) -> str | None:
    """Python's codec name for a charset label, as browsers read it; None when unknown."""
    label = label.strip().lower()
    label = _WHATWG.get(label, label)
    try:
        name = codecs.lookup(label).name
        b"a".decode(name, "replace")  # LookupError unless a text encoding (not base64, ...)
    except LookupError:
        return None
    # Browsers support neither: UTF-7 can smuggle markup past filters, UTF-32 is unused.
    return None if name == "utf-7" or name.startswith("utf-32") else name


def charset_of(content_type: str | None, body: bytes) -> str | None:
    """The charset (a Python codec name) ``body`` declares; None when it declares none."""
    for bom, name in _BOMS:
        if body.startswith(bom):
            return name
    if content_type:
        declared = _HEADER_CHARSET.search(content_type)
        if declared and (codec := codec_for(declared.group(1))):
            return codec
    for meta in _META_CHARSET.finditer(body[:META_PRESCAN]):
        codec = codec_for(meta.group(1).decode("ascii"))
        if codec is None:
            continue
        # A page whose bytes we read as ASCII cannot be UTF-16: browsers read it as UTF-8.
        return "utf-8" if codec.startswith("utf-16") else codec
    return None


def decode_text(body: bytes, charset: str | None) -> str:
    """``body`` as text in ``charset`` (UTF-8 when None or unknown), never raising.

    Bytes that do not decode become U+FFFD; a byte-order mark is dropped.
    """
    codec = codec_for(charset) if charset else None
    codec = codec or "utf-8"
    for bom, name in _BOMS:
        if body.startswith(bom) and codecs.lookup(name).name == codecs.lookup(codec).name:
            body = body[len(bom) :]
            break
    return body.decode(codec, "replace")


_TITLE = re.compile(r"<title[^>]*>([^<]{1,512})</title>", re.IGNORECASE)


def title_of(body: bytes, content_type: str | None = None) -> str | None:
    """The page's ``<title>`` in the page's charset, whitespace collapsed, or None.

    The charset comes from ``content_type`` (the header) or the page (BOM, ``<meta>``); the
    pattern is OONI's (at most 512 characters, no ``<``). Our fetch and an OONI import read
    titles with this one function, so a re-analysis compares like with like.

    The title is kept as the server sent it, control characters and all (the evidence is
    faithful; what shows it escapes it, :func:`probe.model.text.printable`), but for NUL,
    which becomes U+FFFD as an HTML parser makes it: no JSON or SQL store refuses the title.
    """
    match = _TITLE.search(decode_text(body, charset_of(content_type, body)))
    if not match:
        return None
    return " ".join(match.group(1).replace("\x00", "\ufffd").split()) or None
