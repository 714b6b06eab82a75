"""Compare our final cleartext response with the control's (OONI LTE's HTTP diff).

Pure: no I/O. See :func:`http_diff`.
"""

from __future__ import annotations

from typing import Any

from ..model.records import HTTPRequest

#: Header names OONI ignores when comparing headers (probe-cli, webconnectivitylte).
COMMON_HEADERS = frozenset(
    """date content-type server cache-control vary set-cookie location expires x-powered-by
    content-encoding last-modified accept-ranges pragma x-frame-options etag
    x-content-type-options age via p3p x-xss-protection content-language cf-ray
    strict-transport-security link x-varnish""".split()
)

#: Body proportion above which two bodies "match" (strictly greater, as OONI).
BODY_PROPORTION_THRESHOLD = 0.7


def _title_words(title: str | None) -> set[str]:
    return {w.lower() for w in (title or "").split(" ") if len(w.encode("utf-8")) >= 5}


def http_diff(hop: HTTPRequest, control_http: dict[str, Any] | None) -> dict[str, Any]:
    """Compare our final response with the helper's ``http_request`` (OONI Web Connectivity LTE).

    Returns ``body_proportion``, ``body_length_match``, ``status_code_match``,
    ``headers_match``, ``title_match``; each is None when it cannot be computed:

    * ``body_proportion`` = min/max of the two body lengths, only when our body is non-empty
      and not truncated and the helper's ``body_length`` > 0; ``body_length_match`` is
      ``body_proportion > 0.7`` (strictly).
    * ``status_code_match``: equal codes → True; different codes → None when the helper's code
      is not 2xx, else False. Both codes must be > 0.
    * ``headers_match``: the header names (lower-cased) minus :data:`COMMON_HEADERS` of both
      responses intersect. Values are ignored; two empty sets do not match.
    * ``title_match``: title words (split on single spaces, ≥ 5 UTF-8 bytes, lower-cased):
      True when no long word is in only one of the titles (two empty titles match).

    Headers and title need a helper status > 0.
    """
    out: dict[str, Any] = {
        "body_proportion": None,
        "body_length_match": None,
        "status_code_match": None,
        "headers_match": None,
        "title_match": None,
    }
    if not control_http:
        return out
    c_status = control_http.get("status_code")
    c_status = c_status if isinstance(c_status, int) else -1
    c_length = control_http.get("body_length")
    c_length = c_length if isinstance(c_length, int) else -1

    p_length = hop.body_length if hop.body_length is not None else len(hop.body or b"")
    if p_length > 0 and not hop.body_truncated and c_length > 0:
        proportion = min(p_length, c_length) / max(p_length, c_length)
        out["body_proportion"] = proportion
        out["body_length_match"] = proportion > BODY_PROPORTION_THRESHOLD

    p_status = hop.status_code or 0
    if p_status > 0 and c_status > 0:
        if p_status == c_status:
            out["status_code_match"] = True
        elif 200 <= c_status < 300:
            out["status_code_match"] = False

    if c_status > 0:
        ours = {name.lower() for name, _ in hop.headers} - COMMON_HEADERS
        theirs = {str(name).lower() for name in (control_http.get("headers") or {})}
        out["headers_match"] = bool(ours & (theirs - COMMON_HEADERS))
        out["title_match"] = not (_title_words(hop.title) ^ _title_words(control_http.get("title")))
    return out


def no_diff(diff: dict[str, Any]) -> bool:
    return diff["status_code_match"] is True and any(
        diff[k] is True for k in ("body_length_match", "headers_match", "title_match")
    )
