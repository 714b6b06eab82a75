"""URL canonicalisation: what we send on the wire and store, always a valid ASCII URI.

Targets and ``Location`` headers may hold international domain names, non-ASCII paths and
queries, spaces, IPv6 literals. :func:`canonical` turns any of them into one spelling:

* the host in IDNA 2008 with UTS #46 mapping (``faß.de`` is ``xn--fa-hia.de``, not
  ``fass.de`` as Python's built-in IDNA 2003 codec says; ``ЯНДЕКС.РФ`` is
  ``xn--d1acpjx3f.xn--p1ai``), lower case, without a trailing dot; an IP address in its
  compressed form, IPv6 in brackets;
* the default port dropped, a port outside 1..65535 refused;
* path and query percent-encoded as UTF-8, escapes already there (``%XX``) kept as written, a
  lone ``%`` encoded as ``%25``; no user name or password, no fragment (neither is ever sent).

Pure: no network. Errors are ``ValueError`` with the reason.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import unquote, urljoin, urlsplit

import idna

from .addresses import bracket, is_ip_literal

DEFAULT_PORTS = {"http": 80, "https": 443}

# RFC 3986: unreserved, sub-delims, ":" and "@" (pchar), and "/" between segments.
_PATH_SAFE = "A-Za-z0-9\\-._~!$&'()*+,;=:@/"
_NOT_IN_PATH = re.compile(rf"%[0-9A-Fa-f]{{2}}|[^{_PATH_SAFE}]")
_NOT_IN_QUERY = re.compile(rf"%[0-9A-Fa-f]{{2}}|[^{_PATH_SAFE}?]")
# WHATWG URL: tabs and newlines inside a URL are dropped, C0 controls and spaces trimmed.
_TAB_OR_NEWLINE = re.compile(r"[\t\r\n]")
_C0_OR_SPACE = "".join(chr(c) for c in range(0x21))
_ASCII_LABEL = re.compile(r"[a-z0-9_-]+")


def _escape(match: re.Match[str]) -> str:
    text = match.group()
    if len(text) == 3 and text[0] == "%":
        return text  # an existing escape, kept as written
    return "".join(f"%{byte:02X}" for byte in text.encode("utf-8"))


def quote_path(path: str) -> str:
    """``path`` percent-encoded as UTF-8 where RFC 3986 requires, existing escapes kept."""
    return _NOT_IN_PATH.sub(_escape, path)


def quote_query(query: str) -> str:
    """``query`` percent-encoded as UTF-8 where RFC 3986 requires, existing escapes kept."""
    return _NOT_IN_QUERY.sub(_escape, query)


def _ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def ascii_host(host: str) -> str:
    """``host`` as sent in DNS, SNI and ``Host``: IDNA 2008 A-labels or an IP address.

    Raises ``ValueError`` naming the host when it is not a valid domain name. ASCII labels
    may hold ``_`` (not valid IDNA, but real host names have it and resolvers answer them).
    """
    reason = ValueError(f"{host!r} is not a valid domain name")
    text = host
    if (ip := _ip(text)) is not None:
        return ip
    try:
        if "%" in text:
            text = unquote(text, errors="strict")
        text = idna.uts46_remap(text, std3_rules=False, transitional=False)
    except (UnicodeError, idna.IDNAError):
        raise reason from None
    text = text.rstrip(".")
    if (ip := _ip(text)) is not None:
        return ip
    labels = []
    for label in text.split("."):
        if not label:
            raise reason
        if label.isascii():
            # uts46_remap already lower-cased it; xn-- labels must decode to a valid U-label.
            if label.startswith("xn--"):
                try:
                    idna.ulabel(label)
                except (UnicodeError, idna.IDNAError):
                    raise reason from None
            elif not _ASCII_LABEL.fullmatch(label):
                raise reason
        else:
            try:
                label = idna.alabel(label).decode("ascii")
            except (UnicodeError, idna.IDNAError):
                raise reason from None
        if len(label) > 63:
            raise reason
        labels.append(label)
    domain = ".".join(labels)
    if len(domain) > 253:
        raise reason
    return domain


def resolve(base: str, reference: str) -> str:
    """``reference`` (a ``Location``) made absolute against ``base``, as RFC 3986 says.

    Strictly: a reference with a scheme is absolute as it stands, so ``http:///x`` has no
    host (Python's ``urljoin`` alone would read it as ``/x`` on ``base``'s host).
    """
    reference = _TAB_OR_NEWLINE.sub("", reference).strip(_C0_OR_SPACE)
    if urlsplit(reference).scheme:
        return reference
    return urljoin(base, reference)


def canonical(url: str, base: str | None = None) -> str:
    """The canonical absolute http(s) URL for ``url`` (resolved against ``base`` if given).

    Raises ``ValueError`` with the reason: not http(s), no host, an invalid host or port.
    """
    url = resolve(base, url) if base is not None else url.strip(_C0_OR_SPACE)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError("only http:// and https:// URLs can be fetched")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("bad port") from None
    if port == 0:
        raise ValueError("bad port")
    host = parts.hostname
    if not host:
        raise ValueError("no host")
    netloc = bracket(ascii_host(host))
    if port is not None and port != DEFAULT_PORTS[scheme]:
        netloc += f":{port}"
    query = "?" + quote_query(parts.query) if parts.query else ""
    return f"{scheme}://{netloc}{quote_path(parts.path or '/')}{query}"


def request_target(url: str) -> str:
    """The origin-form request target of a canonical URL: path and query."""
    parts = urlsplit(url)
    return (parts.path or "/") + ("?" + parts.query if parts.query else "")


def normalise(text: str) -> tuple[str, str]:
    """``(url, domain)`` for a URL or bare domain; raises ``ValueError`` with the reason.

    The URL is canonical (:func:`probe.model.urls.canonical`): IDNA 2008 host, default port
    dropped, path and query percent-encoded as UTF-8, no fragment.
    """
    text = text.strip()
    if not text:
        raise ValueError("empty target")
    if any(c.isspace() for c in text):
        raise ValueError(f"{text!r} contains white space")
    if "://" not in text:
        if "/" in text:
            raise ValueError(f"{text!r} has a path but no scheme (write https://...)")
        text = f"https://{text}/"
    try:
        parts = urlsplit(text)
    except ValueError as exc:  # an unbalanced IPv6 bracket
        raise ValueError(f"{text!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"{text!r}: only http:// and https:// URLs can be measured")
    host = parts.hostname
    if not host:
        raise ValueError(f"{text!r} has no host")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError(f"{text!r} has a bad port")
    if parts.username or parts.password:
        raise ValueError(f"{text!r}: user names and passwords in URLs are not supported")
    domain = _ascii_host(host, text)
    try:
        url = canonical(text)
    except ValueError as exc:
        raise ValueError(f"{text!r}: {exc}") from None
    return url, domain


def _ascii_host(host: str, text: str) -> str:
    """The host as measured (IDNA 2008, or an IP address); a name needs at least two labels."""
    try:
        domain = ascii_host(host)
    except ValueError:
        raise ValueError(f"{text!r}: {host!r} is not a valid domain name") from None
    if not is_ip_literal(domain) and "." not in domain:
        raise ValueError(f"{text!r}: {host!r} is not a valid domain name")
    return domain
