"""Reading an HTTP answer from a server we do not trust, with a hard cap on its size.

httpx's ``response.content`` reads a body whole, however large: a hostile test helper or DoH
server (or a man in the middle) could send gigabytes into memory. :func:`read_capped` reads a
streamed response chunk by chunk and gives up as soon as the cap is passed, counting decoded
bytes: gzip and deflate are inflated here with a bound on each step, so a small compressed
bomb cannot expand past the cap either.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import httpx

from ..errors import NetworkError


async def read_capped(
    response: httpx.Response, cap: int, too_large: Callable[[str], NetworkError]
) -> bytes:
    """The body of a streamed ``response``, at most ``cap`` bytes once decoded.

    Raises ``too_large(reason)`` past the cap, or for an encoding other than identity, gzip
    or deflate.
    """
    encoding = response.headers.get("content-encoding", "").strip().lower()
    decoder = None
    if encoding == "gzip":
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        decoder = zlib.decompressobj()
    elif encoding not in ("", "identity"):
        raise too_large(f"unsupported content-encoding {encoding[:40]!r}")
    body = bytearray()
    async for chunk in response.aiter_raw():
        if decoder is not None:
            try:
                chunk = decoder.decompress(chunk, cap + 1 - len(body))
            except zlib.error as exc:
                raise too_large(f"bad {encoding} body: {exc}") from None
            if decoder.unconsumed_tail:  # more output than the room left
                raise too_large(f"answer larger than {cap} bytes")
        body += chunk
        if len(body) > cap:
            raise too_large(f"answer larger than {cap} bytes")
    return bytes(body)
