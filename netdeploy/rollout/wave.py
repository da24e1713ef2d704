"""A release wave: the held nodes a cluster's policy releases together, as one change.

Why (docs/decisions/0014): releasing 4,000 held nodes one by one cost 1.8 s — an event row per
node, and on SQLite a round trip per row (an ``INSERT ... RETURNING`` SQLAlchemy cannot batch
there). A wave is now one ``UPDATE nodes ... WHERE cluster = :c AND state = 'held'`` (plus
``mac IN (...)`` when the wave is not every held node) and one event row naming every MAC
(:func:`netdeploy.eventlog.wave`), so one NOTIFY on PostgreSQL and one item on the bus. Each
node's timeline still shows its release: readers find the wave row by MAC
(:func:`netdeploy.eventlog.of_node`). Parked long-polls are woken after commit, each with its
own view, as before.

Safety is the writer's as before: the cluster rows are locked first (engine ``_LOCK_CLUSTERS``),
the decision is made on nodes read after the lock, and the UPDATE re-checks ``state =
'held'``: if it moves fewer rows than the gate picked, the batch fails and is retried action by
action, rather than release a node that is no longer held.
"""

from __future__ import annotations

from collections.abc import Container, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from netdeploy.inventory import NodeState as S
from netdeploy.rollout.machine import RELEASED_STATES
from netdeploy.rollout.rows import NODES
from netdeploy.store.models import Cluster

# an IN list longer than this is sent in parts (SQLite and asyncpg allow 32,767 parameters)
IN_CHUNK = 10_000


def gate_answer(
    mac: str,
    hostname: str | None,
    state: str,
    cluster: str | None,
    gate: str | None,
    detail: str,
    message: str = "",
) -> dict[str, Any]:
    """What an agent's long-poll learns: may it boot its disk, and why (not)."""
    return {
        "mac": mac,
        "hostname": hostname,
        "state": state,
        "released": state in RELEASED_STATES,  # str == its StrEnum member, same hash
        "cluster": cluster,
        "gate": gate,
        "detail": detail,
        "message": message,  # e.g. why it failed: the agent shows it
    }


@dataclass
class Wave:
    """Nodes released together; woken after commit with the cluster's gate as settled."""

    cluster: Cluster
    seq: int  # the wave's number in this rollout: each node's release_seq
    nodes: list[tuple[str, str | None, str]]  # (mac, hostname, message), in release order
    gate: str = ""
    detail: str = ""

    def seal(self) -> None:
        """Take the cluster's gate as the batch settled it (before commit, like every view)."""
        self.gate, self.detail = self.cluster.gate, self.cluster.gate_detail

    def views(self, wanted: Container[str]) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(mac, gate view)`` of the wave's nodes in ``wanted`` (those someone waits on):
        what ``engine.gate_view`` gives for a released node, built by the same function."""
        for mac, hostname, message in self.nodes:
            if mac in wanted:
                yield (
                    mac,
                    gate_answer(
                        mac,
                        hostname,
                        S.RELEASED.value,
                        self.cluster.name,
                        self.gate,
                        self.detail,
                        message,
                    ),
                )


async def release_held(
    session: AsyncSession,
    cluster: str,
    macs: list[str],
    *,
    every_held: bool,
    seq: int,
    now: datetime,
) -> None:
    """Move ``macs`` of ``cluster`` from held to released in the store: one UPDATE (parts of
    :data:`IN_CHUNK` MACs only when the wave is not every held node and is that large).

    Raises RuntimeError when a node the gate picked is not held in the store: the caller's
    batch is then rolled back, nothing is released twice."""
    statement = (
        update(NODES)
        .where(NODES.c.cluster == cluster, NODES.c.state == S.HELD.value)
        .values(state=S.RELEASED.value, state_since=now, progress=None, release_seq=seq)
    )
    parts = [statement] if every_held else []
    for start in range(0, 0 if every_held else len(macs), IN_CHUNK):
        parts.append(statement.where(NODES.c.mac.in_(macs[start : start + IN_CHUNK])))
    moved = 0
    for part in parts:
        moved += (await session.execute(part)).rowcount  # type: ignore[attr-defined]
    if moved != len(macs):
        raise RuntimeError(
            f"gate picked {len(macs)} held nodes of {cluster} but {moved} are held in the "
            "store; refusing"
        )
