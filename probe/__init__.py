"""probe: measure website blocking (DNS, TCP/IP, TLS/SNI, HTTP) against a control."""

__version__ = "0.1.0"
