"""Content decoding for every HTTP reader: gzip, deflate (zlib-wrapped or raw) and br,
stacked, decoded as the body arrives with a cap on the *decoded* size, so a compression bomb
never grows past the cap (a 10 MB gzip of zeros holds 10 GB).

A decoding error is an :class:`~probe.errors.HTTPProtocolError`: for the probe's measurement
it is evidence (the body as it was is kept), for a control server's answer it makes the answer
unusable.
"""

from __future__ import annotations

import zlib
from typing import Any, Protocol

from ..errors import HTTPProtocolError

MAX_CODINGS = 4  # stacked Content-Encodings decoded; more are kept as sent
DECODE_STEP = 65536  # coded bytes handed to a decoder at a time


def _load_brotli() -> Any:
    """The ``brotli`` module if it can bound its output (1.2 and later), else None."""
    try:
        import brotli
    except ImportError:
        return None
    return brotli if hasattr(brotli.Decompressor, "can_accept_more_data") else None


_brotli = _load_brotli()
#: ``br`` is only advertised when we can decode it.
ACCEPT_ENCODING = "gzip, deflate, br" if _brotli is not None else "gzip, deflate"


class _Stage(Protocol):
    def read(self, size: int) -> bytes:
        """At most ``size`` decoded bytes; b"" when nothing more can be had for now."""

    def finished(self) -> bool:
        """Whether the coded stream ended (a body cut short has not)."""


class _Pending:
    """Body bytes as received, not yet decoded."""

    def __init__(self) -> None:
        self.data = b""

    def read(self, size: int) -> bytes:
        data, self.data = self.data[:size], self.data[size:]
        return data

    def finished(self) -> bool:
        return True


def _zlib_wrapped(head: bytes) -> bool:
    """True when ``head`` starts a zlib stream (RFC 1950), False for raw deflate."""
    return head[0] & 0x0F == 8 and head[0] >> 4 <= 7 and (head[0] << 8 | head[1]) % 31 == 0


class _Zlib:
    """gzip, or deflate zlib-wrapped (the standard) or raw (what many servers send)."""

    def __init__(self, source: _Stage, coding: str) -> None:
        self.source = source
        self.coding = coding
        self.tail = b""  # coded bytes the decoder has not consumed yet
        self.decoder = None if coding == "deflate" else zlib.decompressobj(16 + zlib.MAX_WBITS)

    def read(self, size: int) -> bytes:
        while True:
            if self.decoder is None:  # deflate: the first two bytes say which
                self.tail += self.source.read(2 - len(self.tail))
                if len(self.tail) < 2:
                    return b""
                wbits = zlib.MAX_WBITS if _zlib_wrapped(self.tail) else -zlib.MAX_WBITS
                self.decoder = zlib.decompressobj(wbits)
            if self.decoder.eof:
                return b""  # what follows the coded stream is ignored
            try:
                out = self.decoder.decompress(self.tail, size)
            except zlib.error as exc:
                raise HTTPProtocolError(
                    f"invalid HTTP response: cannot decode the {self.coding} body: {exc}"
                ) from exc
            self.tail = self.decoder.unconsumed_tail
            if out:
                return out
            if not self.tail:
                self.tail = self.source.read(DECODE_STEP)
                if not self.tail:
                    return b""

    def finished(self) -> bool:
        return self.decoder is not None and self.decoder.eof and self.source.finished()


class _Brotli:
    """br, with the decoder's output bounded (brotli >= 1.2)."""

    def __init__(self, source: _Stage) -> None:
        self.source = source
        self.decoder = _brotli.Decompressor()
        self.extra = b""  # decoded beyond what was asked: the limit is not exact

    def read(self, size: int) -> bytes:
        while not self.extra:
            if self.decoder.is_finished():
                return b""
            data = self.source.read(DECODE_STEP) if self.decoder.can_accept_more_data() else b""
            if not data and self.decoder.can_accept_more_data():
                return b""
            try:
                self.extra = self.decoder.process(data, output_buffer_limit=size)
            except _brotli.error as exc:
                raise HTTPProtocolError(
                    f"invalid HTTP response: cannot decode the br body: {exc}"
                ) from exc
            if not data and not self.extra:
                return b""
        out, self.extra = self.extra[:size], self.extra[size:]
        return out

    def finished(self) -> bool:
        return bool(self.decoder.is_finished()) and self.source.finished()


def codings(content_encoding: str) -> list[str]:
    """The codings a Content-Encoding lists, in the order applied (identity left out)."""
    listed = [c.strip().lower() for c in content_encoding.split(",")]
    return [c for c in listed if c and c != "identity"]


def supported(content_encoding: str) -> bool:
    """Whether every coding of ``content_encoding`` can be undone here."""
    applied = codings(content_encoding)
    known = {"gzip", "x-gzip", "deflate"} | ({"br"} if _brotli is not None else set())
    return len(applied) <= MAX_CODINGS and set(applied) <= known


def _decoder(content_encoding: str, source: _Pending) -> _Stage:
    """The decoding chain for ``content_encoding``; ``source`` itself when we cannot decode.

    Codings are listed in the order they were applied, so they are undone in reverse. An
    unknown coding (or too many) leaves the body as sent: still evidence, never a failure.
    """
    if not supported(content_encoding):
        return source
    stage: _Stage = source
    for coding in reversed(codings(content_encoding)):
        stage = _Brotli(stage) if coding == "br" else _Zlib(stage, coding)
    return stage


class Body:
    """A body decoded as it arrives and capped at ``cap`` decoded bytes (a bomb never grows
    past it). A body in codings we cannot undo (:func:`supported`) is kept as sent."""

    def __init__(self, content_encoding: str, cap: int) -> None:
        self.cap = cap
        self.parts: list[bytes] = []
        self.size = 0
        self.truncated = False
        self.pending = _Pending()
        self.decoded = _decoder(content_encoding, self.pending)

    def add(self, data: bytes) -> bool:
        """Add body bytes as received; False once more than ``cap`` decoded bytes were seen."""
        self.pending.data += data
        while not self.truncated:
            room = self.cap - self.size
            out = self.decoded.read(room + 1)
            if not out:
                break
            if len(out) > room:
                out = out[:room]
                self.truncated = True
            self.parts.append(out)
            self.size += len(out)
        # Left over only past the end of a coded stream: trailing bytes, ignored.
        self.pending.data = b""
        return not self.truncated

    def finished(self) -> bool:
        """Whether every coded stream of the body ended (False for a body cut short)."""
        return self.decoded.finished()

    def take(self) -> bytes:
        """The bytes decoded since the last :meth:`take` (for a reader that streams them)."""
        out = b"".join(self.parts)
        self.parts.clear()
        return out

    def bytes(self) -> bytes:
        return b"".join(self.parts)
