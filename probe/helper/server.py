"""The test helper: OONI's Web Connectivity control, served from outside the censored network.

``probe helper serve`` answers the protocol :mod:`probe.measure.control` speaks (and OONI's probes
speak): ``GET /`` greets, ``POST /`` takes ``{"http_request": URL, "http_request_headers": ...,
"tcp_connect": ["ip:port", ...]}`` and answers what the helper itself saw for that URL:

1. DNS: the URL's host, A and AAAA, at the helper's resolver (4 s); an IP-literal host is its
   own answer. Failures use the protocol's legacy names (``dns_name_error``,
   ``dns_server_failure``, ``unknown_error``; "no answer" is ``null`` with no addresses).
2. Endpoints: the probe's ``tcp_connect`` list plus the helper's own addresses on the URL's port
   (an http URL without an explicit port also gets 443). Each gets a TCP connect (10 s) and, on
   443 (or the explicit port of an https URL), a TLS handshake (10 s) with SNI = host and the
   certificate verified.
3. Meanwhile, a GET of the URL following redirects (:class:`~probe.measure.measurer.Measurer`,
   done 4 s + 15 s after the request came), reported as the final hop's status, headers (first
   value per name), title and body length; ``-1`` for both numbers when the fetch failed. Its
   own connects and handshakes are those of step 2 for the endpoints it fetches from (its
   first hop's, with TLS on 443 for an http URL's addresses): each endpoint is connected to
   once.
4. ``ip_info``: every address seen, with its AS number (``--asn-db``) and flags
   (1 from the probe, 2 from the helper's DNS, 4 bogon, 8 TLS valid for the host).

``GET /whoami`` tells a probe the address it comes from and that address's AS number, country
and AS name (:mod:`probe.helper.whoami`), so it can record its network and scrub its address.

Hardening: the helper runs on someone's server, so it must never become a way into that server's
own network, nor into the server itself. It refuses to connect to bogons (private, loopback,
link-local, CGNAT, ...: :func:`~probe.model.addresses.is_bogon`) and to its own host's addresses
(:mod:`probe.helper.host`: every address of the host's interfaces, re-read every few seconds,
when it listens on a wildcard; else its address and the services listening on every address)
whatever their origin and spelling: the probe's ``tcp_connect`` list (answered ``status: false``
with :data:`~probe.helper.requests.REFUSED_BOGON` or
:data:`~probe.helper.host.REFUSED_OWN_HOST`), its own DNS answers, IP-literal URLs and redirects
(the Measurer's ``address_refusal``). It connects to the
probe's endpoints only on the ports the URL uses (the URL's port and 443; others get
:data:`~probe.helper.requests.REFUSED_PORT`). Requests are bounded: body size (413), JSON shape
(400), at most ``max_endpoints`` entries in ``tcp_connect`` (more is refused with 400, so a
probe learns its request was not measured instead of getting a silently partial answer),
requests in flight (503), shared among clients so that one cannot shut the helper for the
others (:class:`Slots`), and time (504; a URL whose fetch ran out of time is given a shorter
deadline for a while: :class:`~probe.helper.measurement.SlowHosts`). Open connections are
bounded too, without letting idle or slow clients starve active ones: when ``max_connections``
are open, a new connection closes the longest-idle one (else the slowest sender), never one
being measured or answered. The HTTP itself (limits on heads, bodies and time, keep-alive, the
connections) is probe's one server, :mod:`probe.net.http_server`; this module is the routes.
It logs one line per request, escaped (:func:`~probe.model.text.printable`), without the query
string, and never the client's address.

Differences from OONI's oohelperd, on purpose: bogons the probe lists are answered (refused)
rather than silently left out; TCP and HTTP failures keep our more precise strings where the
protocol has no legacy name (``host_unreachable`` rather than ``connect_error``); OONI probes
only compare those on failed-versus-succeeded. QUIC is not measured (``quic_handshake: {}``,
``http3_request: null``).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import ssl
from typing import Any

from .. import __version__
from ..errors import BadRequest
from ..model.text import one_line
from ..net.http_server import Request, Response, Server
from ..ooni.helper_protocol import HELLO
from . import whoami
from .config import HelperConfig, http_limits
from .measurement import HelperContext, describe, handle_request
from .thread import MeasurementThread

log = logging.getLogger("probe.helper")

SERVER_NAME = f"probe-helper/{__version__}"
#: Seconds given to measurements in flight when the helper stops, and to its cleanup.
SHUTDOWN_GRACE = 5.0


class Slots:
    """The measurement slots, shared among clients so that one cannot take them all.

    A client (:func:`client_of`: its address; an IPv6 client's /64) always gets a slot while
    it holds fewer than half of them (:attr:`share`). Beyond that, it still uses idle capacity,
    but only while a quarter of the slots (:attr:`reserve`) stays free for the others: a slot
    given cannot be taken back before its measurement ends (up to the measurement's deadline),
    so "others first when they come" has to mean slots kept free for them. One busy client, or
    many volunteers behind one NAT address, get three quarters of an idle helper; a client
    coming meanwhile is served at once.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.share = max(1, total // 2)
        self.reserve = max(1, total // 4)
        self.held: dict[str, int] = {}
        self.in_flight = 0

    def take(self, client: str) -> str | None:
        """Take a slot for ``client``; None when taken, else why not (for the 503)."""
        if self.in_flight >= self.total:
            return "too many requests in flight, retry later"
        mine = self.held.get(client, 0)
        if mine >= self.share and self.total - self.in_flight <= self.reserve:
            return "too many requests from your address in flight, retry later"
        self.held[client] = mine + 1
        self.in_flight += 1
        return None

    def give_back(self, client: str) -> None:
        self.in_flight -= 1
        self.held[client] -= 1
        if not self.held[client]:
            del self.held[client]


def client_of(peer: str | None, headers: dict[str, str]) -> str:
    """Whose share a request counts against: the client's address (a local reverse proxy's
    ``X-Forwarded-For``, as for ``/whoami``); for IPv6, its /64, which one subscriber has."""
    address = whoami.client_address(peer, headers) or "unknown"
    if ":" in address:
        return str(ipaddress.IPv6Network(f"{address}/64", strict=False))
    return address


class HelperServer:
    """The helper's routes over probe's HTTP server (:mod:`probe.net.http_server`); every
    measurement (:func:`handle_request`) runs in a :class:`MeasurementThread`."""

    def __init__(self, config: HelperConfig, context: HelperContext) -> None:
        self.config = config
        self.context = context
        self.slots = Slots(config.max_in_flight)
        self.http = Server(self.handle, http_limits(config), name=SERVER_NAME, log=log)
        self.measurements: MeasurementThread | None = None
        self.tls: ssl.SSLContext | None = None

    async def start(self) -> tuple[str, int]:
        """Bind and listen; returns the bound (host, port)."""
        tls = None
        if self.config.certfile:
            tls = self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls.load_cert_chain(self.config.certfile, self.config.keyfile)
            tls.set_alpn_protocols(["http/1.1"])
        _, port = await self.http.start(self.config.host, self.config.port, tls=tls)
        self.measurements = MeasurementThread()
        return self.config.host, port

    def reload_certificate(self) -> None:
        """Read the certificate and key files again (SIGHUP): a renewed certificate serves new
        connections without a restart. A file that cannot be read keeps the one in use."""
        if self.tls is None:
            return
        try:
            self.tls.load_cert_chain(self.config.certfile or "", self.config.keyfile)
        except OSError as exc:  # ssl.SSLError included: a half-written or mismatched pair
            log.error("certificate not reloaded, the old one is kept: %s", one_line(str(exc)))
        else:
            log.info("certificate reloaded")

    async def close(self) -> None:
        """Stop accepting, let measurements finish (a few seconds), then drop connections and
        close the context (in the measurements' thread, where it was used)."""
        await self.http.close(SHUTDOWN_GRACE)
        if self.measurements is not None:
            await self.measurements.stop(self.context.aclose(), SHUTDOWN_GRACE)
        else:  # never started
            await self.context.aclose()

    async def handle(self, request: Request) -> Response:
        """Answer one request (the server's handler)."""
        status, payload, note = await self._route(request)
        body = json.dumps(payload, separators=(",", ":")).encode()
        # After a 500 or a 504, a fresh connection: the client is not kept waiting on this one.
        response = Response(status, body, note=note, close=status in (500, 504))
        if request.path == whoami.PATH:
            response.log_size = False  # its length depends on the client's network (AS name)
        return response

    async def _route(self, request: Request) -> tuple[int, Any, str]:
        if request.path == whoami.PATH:
            return self._whoami(request)
        if request.path not in ("/", ""):
            return 404, {"error": "not found"}, ""
        if request.method == "GET":
            return 200, HELLO, ""
        if request.method != "POST":
            return 405, {"error": "use GET or POST"}, ""
        try:
            data = json.loads(request.body)
        except (ValueError, RecursionError):
            return 400, {"error": "the body is not JSON"}, "bad JSON"
        client = client_of(request.peer, request.headers)
        busy = self.slots.take(client)
        if busy is not None:
            return 503, {"error": busy}, "busy"
        assert self.measurements is not None, "start() first"
        try:
            answer = await self.measurements.run(
                handle_request(data, self.context), self.config.timeout
            )
        except BadRequest as exc:
            return 400, {"error": str(exc)}, f"bad request: {exc}"
        except TimeoutError:
            return 504, {"error": "measurement took too long"}, "timeout"
        except Exception:  # a bug in a measurement: its 500, not the helper's end
            log.exception("internal error while measuring")
            return 500, {"error": "internal error"}, "internal error"
        finally:
            self.slots.give_back(client)
        return 200, answer, describe(data, answer)

    def _whoami(self, request: Request) -> tuple[int, Any, str]:
        # The note stays empty: the log line must not say who asked, nor from which network.
        if request.method != "GET":
            return 405, {"error": "use GET"}, ""
        client = whoami.client_address(request.peer, request.headers)
        try:
            return 200, whoami.answer(client, request.query, self.context.asn), ""
        except BadRequest as exc:
            return exc.status, {"error": str(exc)}, ""
