"""The run-level offline guard: was the vantage itself offline? (pure)"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from ..model import failures as F
from ..model.records import Observations
from .dns_consistency import control_sources
from .observed import most_common, norm_host, system_lookup

#: Failures that, seen for nearly every target at the same step, mean the vantage is offline.
OFFLINE_FAILURES = F.UNREACHABLE | {F.GENERIC_TIMEOUT}


def _first_failure(obs: Observations) -> tuple[str, str] | None:
    """(step, failure) of the first step that failed for this target, if any."""
    host = norm_host(obs.domain)
    addrs, fail, asked = system_lookup(obs, 0, host)
    if asked and not addrs:
        return "dns", fail or F.DNS_NO_ANSWER
    tcps = [t for t in obs.tcp if t.depth == 0]
    if tcps and all(t.failure for t in tcps):
        return "tcp", most_common(t.failure for t in tcps) or ""
    tls = [t for t in obs.tls if t.depth == 0 and t.purpose == "fetch"]
    if tls and all(t.failure for t in tls):
        return "tls", most_common(t.failure for t in tls) or ""
    if obs.http and obs.http[0].failure:
        return "http", obs.http[0].failure
    return None


OfflineSigns = tuple[bool, tuple[str, str] | None]


def offline_signs(obs: Observations) -> OfflineSigns:
    """What the offline guard needs of one target: whether any control answered (helper or
    control resolver), and the first step that failed with its failure. Small enough to keep
    for every target of a long run."""
    answered = obs.control.response is not None
    if not answered:
        trusted, plain = control_sources(obs, norm_host(obs.domain))
        answered = any(s.answered for s in trusted + plain)
    return answered, _first_failure(obs)


def is_offline(observations: Sequence[Observations | OfflineSigns]) -> bool:
    """True when a run's results say the vantage itself was offline (pure, run-level guard).

    Takes the run's observations, or their :func:`offline_signs`. Two signs, either suffices:

    * no control resolver and no test helper answered for *any* target (we could not reach
      the outside at all); or
    * with at least 5 targets, ≥ 90 % of them failed at the same first step (system DNS, TCP,
      TLS or HTTP) with the same unreachable/timeout failure (``host_unreachable``,
      ``network_unreachable``, ``network_down``, ``generic_timeout_error``): censorship is
      per-site, a dead uplink is not.

    An empty list is not offline. The caller passes ``offline=True`` to :func:`analyze` for
    every target of an offline run.
    """
    if not observations:
        return False
    signs = [o if isinstance(o, tuple) else offline_signs(o) for o in observations]
    if not any(answered for answered, _ in signs):
        return True
    if len(signs) < 5:
        return False
    keys = Counter(first for _, first in signs if first is not None)
    for (_, failure), count in keys.most_common():
        if failure in OFFLINE_FAILURES and count >= 0.9 * len(signs):
            return True
    return False
