"""OONI's data format for Web Connectivity: versions, names, placeholders, vocabularies and
the limits of what is read (shared by the export, the import and the file reader)."""

from __future__ import annotations

import re
import uuid

DATA_FORMAT_VERSION = "0.2.0"
TEST_NAME = "web_connectivity"
#: The Web Connectivity layout our export follows (LTE's tags and keys).
EXPORT_TEST_VERSION = "0.5.28"
SOFTWARE_NAME = "probe"
PROBE_IP = "127.0.0.1"  # OONI's placeholder: the probe's address is never published
RESOLVER_IP = "127.0.0.2"  # OONI's placeholder for an unknown resolver address
TEST_NAMES = frozenset({"web_connectivity", "web_connectivity@v0.5"})
#: The vantage name OONI measurements are filed under: OONI does not identify its probes.
OONI_VANTAGE_NAME = "OONI Probe (public measurements)"
#: Namespace of the ids given to imported OONI measurements and reports (stable: importing
#: the same measurement twice finds it already there).
NAMESPACE = uuid.UUID("6c7f1a8e-3b0e-4f4e-9d0b-0b1e5e1c0a10")
#: Entries of one list read at most (a measurement with more is not a real one).
MAX_ENTRIES = 10_000
#: Longest line (and largest single-object file) read, in bytes.
MAX_LINE_BYTES = 32 * 1024 * 1024

RCODES = {
    0: "NOERROR",
    1: "FORMERR",
    2: "SERVFAIL",
    3: "NXDOMAIN",
    4: "NOTIMP",
    5: "REFUSED",
    6: "YXDOMAIN",
    7: "YXRRSET",
    8: "NXRRSET",
    9: "NOTAUTH",
    10: "NOTZONE",
}
RCODE_NUMBERS = {name: number for number, name in RCODES.items()}
#: Our DNS engines as OONI names them, and back (OONI's system-resolver names all mean ours).
TO_OONI_ENGINE = {"system": "system", "udp": "udp", "tcp": "tcp", "tls": "dot", "https": "doh"}
FROM_OONI_ENGINE = {"udp": "udp", "tcp": "tcp", "dot": "tls", "doh": "https"}
SYSTEM_ENGINES = frozenset({"system", "getaddrinfo", "golang_net_resolver", "go", "unknown"})
TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
EXTENSIONS = {
    "dnst": 0,
    "httpt": 0,
    "netevents": 0,
    "tcpconnect": 0,
    "tlshandshake": 0,
    "tunnel": 0,
}
