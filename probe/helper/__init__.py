"""The test helper: OONI's Web Connectivity control, served from outside the censored network.

* :mod:`~probe.helper.requests`: validating a control request, choosing the endpoints;
* :mod:`~probe.helper.measurement`: measuring it (:func:`handle_request`);
* :mod:`~probe.helper.host`: the helper's own host, whose addresses it never connects to;
* :mod:`~probe.helper.server`: the routes, over probe's HTTP server
  (:mod:`probe.net.http_server`), and each client's share of the measurement slots;
* :mod:`~probe.helper.thread`: the measurements' own event loop and thread;
* :mod:`~probe.helper.config`: how to run it; :mod:`~probe.helper.serve`: ``probe helper serve``;
* :mod:`~probe.helper.asn`: IP address to AS number, country and name, for ``ip_info`` and
  ``/whoami``;
* :mod:`~probe.helper.whoami`: ``GET /whoami``, a probe's address and network as seen from here.

The protocol's shapes and names are in :mod:`probe.ooni.helper_protocol`.
"""

from .config import HelperConfig
from .measurement import HelperContext, HelperTimeouts, handle_request, http_result
from .serve import serve
from .server import HelperServer

__all__ = [
    "HelperConfig",
    "HelperContext",
    "HelperServer",
    "HelperTimeouts",
    "handle_request",
    "http_result",
    "serve",
]
