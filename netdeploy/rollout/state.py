"""The one function that changes a node's rollout state: legal move, timestamp, event row."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from netdeploy import eventlog
from netdeploy.inventory import NodeState
from netdeploy.rollout.machine import check_transition
from netdeploy.store.models import Event, Node, utcnow

if TYPE_CHECKING:  # a type only: rows imports nothing of this module
    from netdeploy.rollout.rows import NodeRow


# entering these ends every credential of the node (reset and retry enter registered):
# a token dies with its phase, rollout, retry or reset (docs/security.md)
PHASE_ENDS: frozenset[NodeState] = frozenset(
    {NodeState.REGISTERED, NodeState.JOINED, NodeState.FAILED}
)
CREDENTIALS = (
    "token",
    "token_rollout",
    "token_phase",
    "claim",
    "claim_prev",
    "report_token",
    "report_at",
)


# what a cluster's first node keeps through its join, an unhealthy report and a phase timeout:
# its report token, so its report script can still say what the cluster itself sees (issue 16:
# health and the member list after the join; a late healthy report after a timeout). Reset and
# retry end it like every other credential (docs/security.md, "What the first node keeps").
REPORT = ("report_token", "report_at")


def end_phase(node: Node | NodeRow, *, keep_report: bool = False) -> None:
    """Every credential of ``node`` dies: boot token, claim, report token (unless kept)."""
    for name in CREDENTIALS:
        if keep_report and name in REPORT:
            continue
        if getattr(node, name) is not None:
            setattr(node, name, None)


class EventSink(Protocol):
    def add(self, instance: Any) -> None: ...


def set_state(
    session: EventSink,
    node: Node | NodeRow,
    to: NodeState | str,
    *,
    reason: str,
    detail: dict[str, Any] | None = None,
    force: bool = False,
    keep_report: bool = False,
) -> Event:
    """Move ``node`` to ``to`` and add its event row to ``session``.

    ``keep_report``: a first node's report token survives a join or failure (see REPORT).

    ``session`` is the rollout writer's batch (or, for the config import the writer runs,
    its session); ``node`` a :class:`Node` or the writer's ``NodeRow``.

    Raises :class:`~netdeploy.rollout.machine.IllegalTransition` unless the move is legal or
    ``force`` is set (admin actions). The writer commits, then publishes the returned event
    on the bus, so listeners only ever hear of committed changes.
    """
    to = NodeState(to)
    if not force:
        check_transition(node.state, to)
    event = eventlog.state_change(node.mac, node.cluster, node.state, to, reason, **(detail or {}))
    node.state = to
    node.state_since = utcnow()
    if to not in (NodeState.IMAGING,):
        node.progress = None
    if to in PHASE_ENDS:
        end_phase(node, keep_report=keep_report and to != NodeState.REGISTERED)
    session.add(event)
    return event
