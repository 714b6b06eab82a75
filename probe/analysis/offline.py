"""The run-level offline flag: was the vantage itself cut off? (pure)

A run is *offline* when no target's control answered (no test helper, no control resolver) and
no target connected anywhere: then every verdict is inconclusive already (no control), and the
flag tells the volunteer and the reports why. The flag never changes a verdict: a control that
answered means the vantage was online, and a volunteer checking a short list of blackholed
outlets must see them blocked, not "offline".
"""

from __future__ import annotations

from collections.abc import Sequence

from ..model.records import Observations
from .dns_consistency import control_sources
from .observed import norm_host

#: What the flag needs of one target: (a control answered, a connection succeeded).
OfflineSigns = tuple[bool, bool]


def offline_signs(obs: Observations) -> OfflineSigns:
    """The two facts the offline flag needs of one target; small enough to keep for a long run."""
    answered = obs.control.response is not None
    if not answered:
        trusted, plain = control_sources(obs, norm_host(obs.domain))
        answered = any(s.answered for s in trusted + plain)
    connected = any(t.failure is None for t in obs.tcp)
    return answered, connected


def is_offline(observations: Sequence[Observations | OfflineSigns]) -> bool:
    """True when no control answered and nothing connected, for any target of the run.

    Takes the run's observations, or their :func:`offline_signs`. An empty run is not offline.
    """
    if not observations:
        return False
    signs = [o if isinstance(o, tuple) else offline_signs(o) for o in observations]
    return not any(answered or connected for answered, connected in signs)
