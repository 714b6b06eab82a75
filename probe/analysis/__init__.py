"""From observations to a verdict: pure functions, no I/O, no clock, no network library.

The analysis is the only place a verdict is decided, and it depends on nothing but
:mod:`probe.model` and :mod:`probe.ooni` (the helper protocol's shapes), so it re-runs over
stored or imported observations and a collector can use it without the network stack.

* :mod:`~probe.analysis.decision`: :func:`analyze`, the rules, first match wins;
* :mod:`~probe.analysis.dns_consistency`: the network's DNS against the control's;
* :mod:`~probe.analysis.http_comparison`: a cleartext page against the control's;
* :mod:`~probe.analysis.fingerprints`: known block pages and censors' DNS answers;
* :mod:`~probe.analysis.explain`: the verdict's evidence in sentences;
* :mod:`~probe.analysis.offline`: the run-level flag (was the vantage cut off?).
"""

from .decision import analyze
from .dns_consistency import DNSAnalysis, analyze_dns, dns_consistency
from .explain import explain
from .fingerprints import Fingerprints, Match
from .http_comparison import http_diff
from .offline import OfflineSigns, is_offline, offline_signs

__all__ = [
    "DNSAnalysis",
    "Fingerprints",
    "Match",
    "OfflineSigns",
    "analyze",
    "analyze_dns",
    "explain",
    "dns_consistency",
    "http_diff",
    "is_offline",
    "offline_signs",
]
