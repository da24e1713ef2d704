"""What the dashboard shows, read from the store in one session: no aiohttp, no HTML here."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from netdeploy.eventlog import LogFilterError, query_events
from netdeploy.inventory import NodeState
from netdeploy.store.db import newest_event_id
from netdeploy.store.models import Cluster, Image, Node

# Cluster.gate values in the admin's words (DESIGN: the first node forms the cluster alone).
GATE_LABELS = {
    "waiting": "waiting for first node",
    "formed": "formed",
    "releasing": "releasing",
    "complete": "complete",
    "stopped": "stopped on failure",
}

# Which admin buttons a node in each state offers. The rollout service has the last word and
# refuses anything else with a message; this only keeps pointless buttons off the screen.
NODE_ACTIONS: dict[str, list[str]] = {
    "release": [NodeState.HELD, NodeState.IMAGED],
    "retry": [NodeState.FAILED],
    "fail": [
        NodeState.PXE,
        NodeState.IMAGING,
        NodeState.IMAGED,
        NodeState.HELD,
        NodeState.RELEASED,
        NodeState.STARTING,
        NodeState.FAILED,  # failed and stopping the rollout: "fail" = go on without it
    ],
}


def actions_for(state: str) -> list[str]:
    return [action for action, states in NODE_ACTIONS.items() if state in states]


@dataclass
class NodeView:
    mac: str
    hostname: str | None
    cluster: str | None
    role: str  # "first node" | "member" | "standalone" | "unknown"
    state: str
    state_since: datetime | None
    progress: float | None
    message: str
    last_ip: str | None

    @property
    def dom_id(self) -> str:
        return "n-" + self.mac.replace(":", "")

    @property
    def label(self) -> str:
        return self.hostname or self.mac

    @property
    def actions(self) -> list[str]:
        return actions_for(self.state)


@dataclass
class ClusterView:
    name: str
    image: str
    first_node: str
    release_policy: str
    gate: str
    gate_detail: str
    nodes: list[NodeView]

    @property
    def gate_label(self) -> str:
        return GATE_LABELS.get(self.gate, self.gate)


@dataclass
class DashboardView:
    clusters: list[ClusterView]
    standalone: list[NodeView]
    discovered: list[NodeView]
    images: list[Image]
    events: list[dict[str, Any]]
    last_event_id: int
    state_counts: dict[str, int]
    log_node: str = ""
    log_cluster: str = ""
    log_error: str = ""
    all_nodes: list[NodeView] = field(default_factory=list)
    # discovered machines come a page at a time (a flood of unknown MACs must not make the
    # page heavy): the newest seen first, DISCOVERED_PAGE per page
    discovered_total: int = 0
    discovered_page: int = 0

    @property
    def discovered_pages(self) -> int:
        return max(1, -(-self.discovered_total // DISCOVERED_PAGE))

    @property
    def labels(self) -> dict[str, str]:
        return {n.mac: n.label for n in self.all_nodes}


def _node_view(node: Node, clusters: dict[str, Cluster]) -> NodeView:
    if node.state == NodeState.DISCOVERED or not node.in_config:
        role = "unknown"
    elif node.cluster and node.cluster in clusters:
        first = clusters[node.cluster].first_node
        role = "first node" if (node.hostname or "").lower() == first.lower() else "member"
    else:
        role = "standalone"
    return NodeView(
        mac=node.mac,
        hostname=node.hostname,
        cluster=node.cluster,
        role=role,
        state=node.state,
        state_since=node.state_since,
        progress=node.progress,
        message=node.message or "",
        last_ip=node.last_ip,
    )


DISCOVERED_PAGE = 50


async def load_view(
    session: AsyncSession,
    *,
    log_node: str = "",
    log_cluster: str = "",
    log_limit: int = 100,
    discovered_page: int = 0,
) -> DashboardView:
    # the newest event id first: the page's live stream resumes after it, so a change committed
    # while the rest is read is replayed rather than lost (replaying one twice is harmless)
    last_event_id = await newest_event_id(session)
    clusters = {c.name: c for c in (await session.scalars(select(Cluster))).all()}
    is_discovered = Node.state == NodeState.DISCOVERED
    nodes = list((await session.scalars(select(Node).where(~is_discovered))).all())
    discovered_total = await session.scalar(select(func.count()).where(is_discovered)) or 0
    discovered_page = max(0, min(discovered_page, (discovered_total - 1) // DISCOVERED_PAGE))
    page = await session.scalars(
        select(Node)
        .where(is_discovered)
        .order_by(Node.last_seen.desc(), Node.mac)
        .offset(discovered_page * DISCOVERED_PAGE)
        .limit(DISCOVERED_PAGE)
    )
    views = [_node_view(n, clusters) for n in nodes]
    # first node on top, then by host name: the order an admin reads a rollout in
    views.sort(key=lambda v: (v.role != "first node", v.label))
    by_cluster: dict[str, list[NodeView]] = {name: [] for name in clusters}
    standalone, discovered = [], []
    for view in views:
        if view.role == "unknown":
            discovered.append(view)
        elif view.cluster in by_cluster:
            by_cluster[view.cluster].append(view)
        else:
            standalone.append(view)
    discovered.extend(_node_view(n, clusters) for n in page)  # newest first, as queried
    counts: dict[str, int] = {}
    for view in views:
        counts[view.state] = counts.get(view.state, 0) + 1
    if discovered_total:
        counts[NodeState.DISCOVERED] = discovered_total
    log_error = ""
    try:
        events = await query_events(
            session, node=log_node or None, cluster=log_cluster or None, limit=log_limit
        )
    except LogFilterError as exc:
        events, log_error = [], str(exc)
    return DashboardView(
        clusters=[
            ClusterView(
                name=c.name,
                image=c.image,
                first_node=c.first_node,
                release_policy=c.release_policy,
                gate=c.gate,
                gate_detail=c.gate_detail or "",
                nodes=by_cluster[c.name],
            )
            for c in sorted(clusters.values(), key=lambda c: c.name)
        ],
        standalone=standalone,
        discovered=discovered,
        images=list((await session.scalars(select(Image).order_by(Image.name))).all()),
        events=events,
        last_event_id=last_event_id,
        state_counts={s: counts[s] for s in NodeState if s in counts},
        log_node=log_node,
        log_cluster=log_cluster,
        log_error=log_error,
        all_nodes=sorted(views, key=lambda v: v.label),
        discovered_total=discovered_total,
        discovered_page=discovered_page,
    )
