"""Compare our final page with the control's: OONI's fields, and a rule that decides.

:func:`http_diff` computes OONI Web Connectivity's comparison fields (stored and exported as
OONI has them). :func:`compare_pages` decides whether we saw the site's page, with a stronger
rule than OONI's: OONI calls two pages the same when their status codes match and any one of
body length, header names or title matches, and since almost every pair of responses shares
some header name, a block page that no fingerprint knows passes as the site. Here a title that
shares no word with the control's, or a body far from the control's size, is a strong sign of a
different page; a header-name overlap is only a tie-breaker. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..model.records import HTTPRequest

#: Header names ignored when comparing headers: OONI's list (probe-cli, webconnectivitylte),
#: and framing headers.
COMMON_HEADERS = frozenset(
    """date content-type server cache-control vary set-cookie location expires x-powered-by
    content-encoding last-modified accept-ranges pragma x-frame-options etag
    x-content-type-options age via p3p x-xss-protection content-language cf-ray
    strict-transport-security link x-varnish""".split()
) | frozenset(
    # Framing and transport headers say nothing about which page it is, but OONI's list lacks
    # them, so any two responses "matched" on Content-Length or Connection.
    """content-length connection transfer-encoding keep-alive alt-svc nel report-to
    server-timing referrer-policy x-cache x-cache-hits x-served-by x-timer
    x-request-id""".split()
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


#: A body this far from the control's size (min/max below it) is another page.
BODY_FAR_THRESHOLD = 0.3

TitleSign = Literal["same", "similar", "different", "disjoint", "missing"]
BodySign = Literal["same", "near", "far"]


@dataclass(frozen=True, slots=True)
class PageComparison:
    """Whether our final page is the control's: ``same`` is None when it cannot be told.

    ``title`` and ``body`` are the signs used (None when not computable), ``why`` the one that
    decided (``"status"``, ``"control status"``, ``"title"``, ``"body length"``,
    ``"headers"``, ``"nothing to compare"``).
    """

    same: bool | None
    why: str
    title: TitleSign | None = None
    body: BodySign | None = None


def _title_sign(ours: str | None, theirs: str | None) -> TitleSign | None:
    ours_text = " ".join((ours or "").lower().split())
    theirs_text = " ".join((theirs or "").lower().split())
    if not ours_text and not theirs_text:
        return None
    if ours_text == theirs_text:
        return "same"
    if not ours_text:
        return "missing"  # the site's page has a title, ours has none
    a, b = _title_words(ours_text), _title_words(theirs_text)
    if not theirs_text or not (a and b):
        return "different"
    if not a & b:
        return "disjoint"
    return "similar" if len(a & b) / len(a | b) >= 0.5 else "different"


def compare_pages(
    hop: HTTPRequest, control_http: dict[str, Any], diff: dict[str, Any]
) -> PageComparison:
    """Decide whether ``hop`` is the page the control fetched (``diff``: :func:`http_diff`).

    In order, first match wins:

    1. The control has no page (no status), or got an error page (4xx/5xx) where we got
       another status: cannot tell (a CDN challenge for the helper's data-centre address is
       not evidence of blocking).
    2. The control got a 2xx page and our status differs: different.
    3. Titles (OONI's long words): no word in common, or the control's page has a title and
       ours none: different; the same title: same.
    4. Body sizes (min/max): above 0.7 the same; below 0.3 different.
    5. Titles that share most words: same; that share few: different.
    6. Neither titles nor sizes tell: header names the two share (beyond common ones) say
       same, else different; without any body size to compare: cannot tell.
    """
    c_status = control_http.get("status_code")
    if not isinstance(c_status, int) or c_status <= 0:
        return PageComparison(None, "control status")
    if c_status != hop.status_code and not 200 <= c_status < 300:
        return PageComparison(None, "control status")
    if diff["status_code_match"] is False:
        return PageComparison(False, "status")
    title = _title_sign(hop.title, _text(control_http.get("title")))
    proportion = diff["body_proportion"]
    body: BodySign | None = None
    if proportion is not None:
        body = (
            "same"
            if proportion > BODY_PROPORTION_THRESHOLD
            else "far"
            if proportion < BODY_FAR_THRESHOLD
            else "near"
        )
    if title in ("disjoint", "missing"):
        return PageComparison(False, "title", title, body)
    if title == "same":
        return PageComparison(True, "title", title, body)
    if body == "same":
        return PageComparison(True, "body length", title, body)
    if body == "far":
        return PageComparison(False, "body length", title, body)
    if title == "similar":
        return PageComparison(True, "title", title, body)
    if title == "different":
        return PageComparison(False, "title", title, body)
    if body == "near":
        return PageComparison(bool(diff["headers_match"]), "headers", title, body)
    return PageComparison(None, "nothing to compare", title, body)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
