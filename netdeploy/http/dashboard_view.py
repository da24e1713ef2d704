"""What the dashboard shows, read from the store in one session: no aiohttp, no HTML here."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from netdeploy.eventlog import LogFilterError, query_events
from netdeploy.inventory import NodeState
from netdeploy.rollout.membership import membership_json
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
    in_cluster: str = ""  # its membership as the cluster reports it (issue 16), "" unknown

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
    membership: dict[str, Any] = field(default_factory=dict)  # rollout.membership_json

    @property
    def members_line(self) -> str:
        """The member list as the cluster itself reported it, in one line ("" without kind)."""
        seen = self.membership
        if not seen.get("verified"):
            return ""
        if seen.get("reported_by") is None:
            return "the cluster has not reported its member list yet"
        members = ", ".join(
            f"{m['name']} {m['state']}" + ("" if m["configured"] else " (not configured)")
            for m in seen["members"]
        )
        return f"the cluster lists: {members or 'nobody'} (reported by {seen['reported_by']})"

    alarm: str = ""  # an identity alarm (docs/security.md): the gate is stopped

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


async def load_view(
    session: AsyncSession, *, log_node: str = "", log_cluster: str = "", log_limit: int = 100
) -> DashboardView:
    # the newest event id first: the page's live stream resumes after it, so a change committed
    # while the rest is read is replayed rather than lost (replaying one twice is harmless)
    last_event_id = await newest_event_id(session)
    clusters = {c.name: c for c in (await session.scalars(select(Cluster))).all()}
    nodes = (await session.scalars(select(Node))).all()
    views = [_node_view(n, clusters) for n in nodes]
    # first node on top, then by host name: the order an admin reads a rollout in
    views.sort(key=lambda v: (v.role != "first node", v.label))
    by_cluster: dict[str, list[NodeView]] = {name: [] for name in clusters}
    membership_of: dict[str, dict[str, Any]] = {}
    standalone, discovered = [], []
    for view in views:
        if view.role == "unknown":
            discovered.append(view)
        elif view.cluster in by_cluster:
            by_cluster[view.cluster].append(view)
        else:
            standalone.append(view)
    for name, members in by_cluster.items():  # the cluster's own view, beside the config
        cluster = clusters[name]
        seen = membership_json(
            (cluster.settings or {}).get("kind"),
            cluster.membership,
            [(v.hostname or v.mac, v.state) for v in members],
        )
        for view in members:
            view.in_cluster = seen["nodes"].get(view.hostname or view.mac, "")
        membership_of[name] = seen
    counts: dict[str, int] = {}
    for view in views:
        counts[view.state] = counts.get(view.state, 0) + 1
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
                membership=membership_of[c.name],
                alarm=c.alarm or "",
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
    )
