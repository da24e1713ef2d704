"""Store-backed rollout actions. Every state change goes through :func:`set_state`."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from netdeploy.inventory import NodeState
from netdeploy.rollout.machine import check_transition
from netdeploy.store.models import Event, Node, utcnow


def set_state(
    session: AsyncSession,
    node: Node,
    to: NodeState | str,
    *,
    reason: str,
    detail: dict[str, Any] | None = None,
    force: bool = False,
) -> Event:
    """Move ``node`` to ``to`` inside the caller's transaction and add its event row.

    Raises :class:`~netdeploy.rollout.machine.IllegalTransition` unless the move is legal or
    ``force`` is set (admin actions). The caller commits, then publishes the returned event
    on the bus, so listeners only ever hear of committed changes.
    """
    to = NodeState(to)
    if not force:
        check_transition(node.state, to)
    event = Event(
        kind="state",
        mac=node.mac,
        cluster=node.cluster,
        from_state=node.state,
        to_state=to,
        detail={"reason": reason, **(detail or {})},
    )
    node.state = to
    node.state_since = utcnow()
    if to not in (NodeState.IMAGING,):
        node.progress = None
    session.add(event)
    return event
