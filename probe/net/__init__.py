"""The network primitives, each measured: TCP connections and TLS handshakes
(:mod:`~probe.net.connections`), DNS over UDP, TCP, TLS and HTTPS (:mod:`~probe.net.resolvers`),
one HTTP/1.1 exchange over a measured connection (:mod:`~probe.net.http11`), and the one
mapping from exceptions to failure strings (:mod:`~probe.net.classify`). Each returns records
from :mod:`probe.model.records`; none decides anything."""
