"""When has a node been quiet for too long? Pure: the clock and the limits are handed in.

The phase timeouts (gate.py: imaging 3,600 s by default) are what *fail* a node; they are far
too long to notice a machine that froze at 12 %. A node is **stale** when nobody has heard from
it for much less than that, measured from the later of its last request (``Node.last_seen``:
every agent call and boot request) and its last change of state. How long is too long depends
on who should be talking in that state:

- ``pxe``, ``imaging``: the imaging agent reports progress every few seconds; stale after
  ``[dashboard] stale_after`` (90 s).
- ``imaged``, ``held``: the agent's gate long-poll returns every ``[http] gate_poll_timeout``;
  stale after that plus ``stale_after``.
- ``released``, ``starting``: the node's own OS reports (first logon, cluster join); stale
  after a quarter of its phase timeout.
- any other state: nobody is expected to talk; never stale.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from netdeploy.inventory import NodeState as S
from netdeploy.rollout.gate import DEFAULT_TIMEOUTS, PHASE_OF, as_utc

AGENT_REPORTS = frozenset({S.PXE, S.IMAGING})
AGENT_WAITS = frozenset({S.IMAGED, S.HELD})
OS_BOOTS = frozenset({S.RELEASED, S.STARTING})


def quiet_limit(
    state: str,
    *,
    stale_after: float,
    gate_poll: float,
    timeouts: dict[str, Any] | None = None,
) -> float | None:
    """Seconds of silence after which a node in ``state`` counts as stale; None: never."""
    try:
        node_state = S(state)
    except ValueError:
        return None
    if node_state in AGENT_REPORTS:
        return stale_after
    if node_state in AGENT_WAITS:
        return gate_poll + stale_after
    if node_state in OS_BOOTS:
        phase = PHASE_OF[node_state]
        return float((timeouts or {}).get(phase, DEFAULT_TIMEOUTS[phase])) / 4
    return None


def last_heard(last_seen: datetime | None, state_since: datetime | None) -> datetime | None:
    """The later of the node's last request and its last change of state."""
    moments = [as_utc(t) for t in (last_seen, state_since) if t is not None]
    return max(moments) if moments else None


def quiet_for(last_seen: datetime | None, state_since: datetime | None, now: datetime) -> float:
    heard = last_heard(last_seen, state_since)
    return 0.0 if heard is None else max(0.0, (as_utc(now) - heard).total_seconds())


def is_stale(quiet: float, limit: float | None) -> bool:
    return limit is not None and quiet > limit
