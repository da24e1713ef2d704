"""The one function that changes a node's rollout state: legal move, timestamp, event row."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from netdeploy import eventlog
from netdeploy.inventory import NodeState
from netdeploy.rollout.machine import check_transition
from netdeploy.store.models import Event, Node, utcnow

if TYPE_CHECKING:  # a type only: rows imports nothing of this module
    from netdeploy.rollout.rows import NodeRow


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
) -> Event:
    """Move ``node`` to ``to`` and add its event row to ``session``.

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
    session.add(event)
    return event
