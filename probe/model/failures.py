"""The one failure vocabulary of probe.

Every network step records ``failure: str | None``; ``None`` means success. The strings are
OONI's (ooni/spec df-007-errors), so our measurements and OONI's can be compared and
exchanged.

=====================================  ====================================================
string                                 meaning
=====================================  ====================================================
``connection_refused``                 a RST answered our SYN (nothing listening, or a censor)
``connection_reset``                   a RST on an established connection (DPI on SNI/Host)
``eof_error``                          the peer or a middlebox closed (FIN) mid-handshake/request
``generic_timeout_error``              any timeout; typical of blackholing
``host_unreachable``                   EHOSTUNREACH (often an ICMP from a router)
``network_unreachable``                ENETUNREACH (no route: offline, or IPv6 missing)
``network_down``                       ENETDOWN
``dns_nxdomain_error``                 the resolver said NXDOMAIN
``dns_no_answer``                      a valid reply with no record of the type asked
``dns_refused_error``                  rcode REFUSED
``dns_servfail_error``                 rcode SERVFAIL
``dns_server_misbehaving``             any other bad rcode, or a malformed reply
``dns_reply_with_wrong_query_id``      a reply whose ID does not match the query
``dns_bogon_error``                    a resolver that rejects bogons saw one (helper only)
``dns_temporary_failure``              getaddrinfo's EAI_AGAIN (a resolver we only reach by name)
``dns_non_recoverable_failure``        getaddrinfo's EAI_FAIL
``ssl_invalid_hostname``               the certificate does not match the SNI
``ssl_unknown_authority``              the chain is not rooted in the trust store
``ssl_invalid_certificate``            other certificate trouble (expired, malformed)
``ssl_failed_handshake``               the TLS handshake failed for another reason
``http_invalid_redirect_location_host``  a redirect whose Location has no host
``interrupted``                        cancelled by the user or by the run's deadline
``unknown_failure: <text>``            anything else, with the text
=====================================  ====================================================

The test helper protocol spells some of these the old way (``dns_name_error``,
``connection_refused_error``, ...): :mod:`probe.ooni.helper_protocol` translates. Exceptions
become these strings in one place, :mod:`probe.net.classify`; this module knows no network.
A text may hold addresses (the target's, which are evidence); the vantage's own are replaced
with the rest of the measurement's, by :class:`probe.measure.privacy.Scrubber`.
"""

from __future__ import annotations

CONNECTION_REFUSED = "connection_refused"
CONNECTION_RESET = "connection_reset"
EOF_ERROR = "eof_error"
GENERIC_TIMEOUT = "generic_timeout_error"
HOST_UNREACHABLE = "host_unreachable"
NETWORK_UNREACHABLE = "network_unreachable"
NETWORK_DOWN = "network_down"
DNS_NXDOMAIN = "dns_nxdomain_error"
DNS_NO_ANSWER = "dns_no_answer"
DNS_REFUSED = "dns_refused_error"
DNS_SERVFAIL = "dns_servfail_error"
DNS_MISBEHAVING = "dns_server_misbehaving"
DNS_WRONG_ID = "dns_reply_with_wrong_query_id"
DNS_TEMPORARY = "dns_temporary_failure"
DNS_NON_RECOVERABLE = "dns_non_recoverable_failure"
SSL_INVALID_HOSTNAME = "ssl_invalid_hostname"
SSL_UNKNOWN_AUTHORITY = "ssl_unknown_authority"
SSL_INVALID_CERTIFICATE = "ssl_invalid_certificate"
SSL_FAILED_HANDSHAKE = "ssl_failed_handshake"
HTTP_INVALID_REDIRECT = "http_invalid_redirect_location_host"
INTERRUPTED = "interrupted"
UNKNOWN = "unknown_failure"

TOO_MANY_REDIRECTS = "unknown_failure: stopped after too many redirects"
#: An address the policy forbids was not connected to (the helper never connects to bogons).
REFUSED_BOGON = "unknown_failure: refused to connect to a bogon address"
#: A redirect or a DNS answer named the vantage's own address (its machine, or behind a NAT
#: the home router's admin page): it was not connected to.
REFUSED_OWN_ADDRESS = "unknown_failure: refused to connect to the vantage's own address"
#: The connects the probe refused to make: they say nothing about the network.
#: A step that timed out, measured again, and timed out again while the probe's own event loop
#: stalled: the machine was too busy, which says nothing about the network.
LOOP_STALLED = "unknown_failure: event loop stalled"
REFUSED = frozenset({REFUSED_BOGON, REFUSED_OWN_ADDRESS})

#: Failures that say the network path is gone rather than that one site is blocked.
UNREACHABLE = frozenset({HOST_UNREACHABLE, NETWORK_UNREACHABLE, NETWORK_DOWN})


def unknown(text: str) -> str:
    """An ``unknown_failure`` with an explanation."""
    return f"{UNKNOWN}: {text}"
