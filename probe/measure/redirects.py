"""Which redirects the probe follows: http and https only, never to a port browsers refuse,
and the cookies a site sets on the way (a site may need them to end its redirect loop)."""

from __future__ import annotations

from http.cookies import CookieError, SimpleCookie
from urllib.parse import urlsplit

from ..model import failures
from ..model.records import HTTPRequest
from ..model.urls import normalise

#: Ports a browser never fetches from (the Fetch standard's "bad ports"): a redirect there
#: would make the probe talk HTTP to a mail, SSH or FTP server.
BAD_PORTS = frozenset(
    {1, 7, 9, 11, 13, 15, 17, 19, 20, 21, 22, 23, 25, 37, 42, 43, 53, 69, 77, 79, 87, 95, 101,
     102, 103, 104, 109, 110, 111, 113, 115, 117, 119, 123, 135, 137, 139, 143, 161, 179, 389,
     427, 465, 512, 513, 514, 515, 526, 530, 531, 532, 540, 548, 554, 556, 563, 587, 601, 636,
     989, 990, 993, 995, 1719, 1720, 1723, 2049, 3659, 4045, 4190, 5060, 5061, 6000, 6566,
     6665, 6666, 6667, 6668, 6669, 6679, 6697, 10080}
)  # fmt: skip
REDIRECT_NOT_HTTP = failures.unknown("refused to follow a redirect to a scheme other than http(s)")
REDIRECT_BAD_PORT = failures.unknown("refused to follow a redirect to a port browsers refuse")
REDIRECT_INVALID = failures.unknown("redirect to an invalid URL")


def redirect_target(location: str) -> tuple[str | None, str | None]:
    """``(url, None)``: the normalised URL a redirect leads to, when the probe may follow it;
    else ``(None, failure)``. Only http(s), a valid host and port, never a port in BAD_PORTS."""
    try:
        parts = urlsplit(location)
        port = parts.port
    except ValueError:  # a port out of range, a broken IPv6 literal
        return None, REDIRECT_INVALID
    if parts.scheme.lower() not in ("http", "https"):
        return None, REDIRECT_NOT_HTTP
    if not parts.hostname:
        return None, failures.HTTP_INVALID_REDIRECT
    if port is not None and (port == 0 or port in BAD_PORTS):
        return None, REDIRECT_BAD_PORT
    try:
        url, _domain = normalise(location)
    except ValueError:
        return None, REDIRECT_INVALID
    return url, None


def remember_cookies(jar: dict[str, dict[str, str]], host: str, hop: HTTPRequest) -> None:
    """Keep in ``jar[host]`` the cookies ``hop``'s response set."""
    for name, value in hop.headers:
        if name.lower() != "set-cookie":
            continue
        try:
            parsed: SimpleCookie = SimpleCookie()
            parsed.load(value)
        except CookieError:
            continue
        for key, morsel in parsed.items():
            jar.setdefault(host, {})[key] = morsel.value
