"""Every exception probe raises on purpose, in one tree.

``ProbeError`` is the root. Its branches say who is at fault and what happens next:

* :class:`InputError`: bad input from a file, a user or a client (a target list, a resolver
  URL, a fingerprint file, an ASN table, a control request). ``str()`` is one line meant for a
  person (``FILE:LINE: reason`` where there is a file); the CLI shows it and exits 2, the helper
  answers it with its HTTP ``status``. Subclasses of ``ValueError`` too, as parsing errors are.
* :class:`NetworkError`: what a server or the path sent is not what the protocol allows (a
  malformed HTTP response, a DNS reply with the wrong ID, a helper's unusable answer). Raised
  inside the network primitives and turned into a failure string for that one step
  (:mod:`probe.net.classify`); it never ends a run.

:class:`StoreError` (the database cannot be used: not SQLite, read-only, full, newer) is its
own branch: no target can be stored, so it ends the run, with one line and what was kept. So
are :class:`CollectorDatabaseError` (the collector's PostgreSQL cannot be used),
:class:`UploadError` (an upload cannot go on; what was not accepted waits for the next) and
:class:`TurnRefused` (the run's time ran out before a target's turn).

Anything else is a bug: it is not caught where it happens, and the runner records an internal
error for that one target.
"""

from __future__ import annotations


class ProbeError(Exception):
    """The root of probe's own exceptions."""


# ------------------------------------------------------------------ bad input


class InputError(ProbeError, ValueError):
    """Bad input from a file, a user or a client; ``str()`` is the line to show."""


class TargetError(InputError):
    """A bad line in a target list; ``str()`` is ``FILE:LINE: reason``."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class ResolverError(InputError):
    """A resolver URL that cannot be used, or a resolv.conf without a nameserver."""


class FingerprintError(InputError):
    """A fingerprint file that is not in probe's format."""


class AsnDBError(InputError):
    """A malformed IP-to-ASN table; ``str()`` is ``FILE:LINE: reason``."""


class ConfigError(InputError):
    """A configuration file that cannot be used; ``str()`` names the file, line and key."""


class OONIFormatError(InputError):
    """An OONI measurement we cannot read: not OONI's format, a test or version we do not
    read, or a field of the wrong type; ``str()`` names the field (``FILE:LINE`` is added
    by the reader)."""


class MergeError(InputError):
    """A database that cannot be merged into this one (not probe's, or a newer schema)."""


class BadRequest(InputError):
    """A client's request to a server of ours is malformed; ``status`` is the HTTP answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# ------------------------------------------------------------------ the local store


class StoreError(ProbeError):
    """The database cannot be used: not SQLite, unwritable, full, or from a newer probe.
    ``str()`` names the file; the run stops (what was stored stays) and the CLI says so."""


class CollectorDatabaseError(ProbeError):
    """The collector's PostgreSQL cannot be used (unreachable, refused, a newer schema);
    ``str()`` says why, without the password."""


class TurnRefused(ProbeError):
    """A target resolved ahead of its turn is not measured: the run reached its
    ``--max-runtime`` before the turn came."""


class UploadError(ProbeError):
    """An upload that cannot go on: the collector refuses the token, or stays unreachable.
    What was not accepted stays in the database for the next upload."""


# ------------------------------------------------------------------ the network's fault


class NetworkError(ProbeError):
    """What the network sent breaks its protocol; becomes a failure string for that step."""


class HTTPProtocolError(NetworkError):
    """The server's reply is not valid HTTP/1.1."""


class DNSWrongQueryID(NetworkError):
    """A DNS reply whose ID does not match the query's."""


class DoHError(NetworkError):
    """A DNS-over-HTTPS server answered with an HTTP error."""


class BogonRefused(NetworkError):
    """The name of one of the probe's own servers (a DoH resolver, a helper, the collector)
    resolved only to addresses the probe does not connect to (private, loopback, reserved)."""


class HelperAnswerError(NetworkError):
    """A test helper answered, but not usefully (an HTTP error, too large, a bad shape)."""
