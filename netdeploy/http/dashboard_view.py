"""What the dashboard shows, read from the store in one session: no aiohttp, no HTML here."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from netdeploy.config import Config
from netdeploy.eventlog import LogFilterError, query_events
from netdeploy.inventory import NodeState
from netdeploy.rollout import liveness
from netdeploy.rollout.gate import natural_key
from netdeploy.rollout.membership import membership_json
from netdeploy.rollout.rollup import rollup
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


# The gate's own words name CLI commands (`netdeploy retry NODE` ...); the page has buttons for
# them, so it shows the sentence without the commands (dashboard.js strips live updates alike).
_COMMAND_ASIDE = re.compile(r"\s*\(`netdeploy[^)]*\)")
_COMMAND_CLAUSE = re.compile(r"[;:]\s*[^;:]*`netdeploy[^`]*`[^;]*$")


def without_commands(text: str) -> str:
    return _COMMAND_CLAUSE.sub("", _COMMAND_ASIDE.sub("", text))


# Clusters in the order an admin must look at them (lower first).
def _urgency(gate: str, nodes: list[NodeView]) -> int:
    if gate == "stopped" or any(n.alarm for n in nodes):
        return 0
    if any(n.state == NodeState.FAILED for n in nodes):
        return 1
    if any(n.stale for n in nodes):
        return 2
    if gate == "complete":
        return 5
    if any(n.state not in (NodeState.REGISTERED, NodeState.JOINED) for n in nodes):
        return 3
    return 4


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
    heard: datetime | None = None  # the later of its last request and its last change of state
    quiet: float = 0.0  # seconds since then
    quiet_limit: float | None = None  # stale after this much quiet (None: nobody should talk)
    alarm: str = ""  # a second claim of the node (issue 22 fills this); shown first

    @property
    def stale(self) -> bool:
        return liveness.is_stale(self.quiet, self.quiet_limit)

    @property
    def needs_attention(self) -> bool:
        return self.state == NodeState.FAILED or self.stale or bool(self.alarm)

    @property
    def attention_rank(self) -> tuple[int, float]:
        rank = 0 if self.alarm else 1 if self.state == NodeState.FAILED else 2
        return (rank, -self.quiet)

    @property
    def tile_fill(self) -> int:
        """Progress as a tenth (the rack tile's fill): imaging shows its %, later states full."""
        if self.state == NodeState.IMAGING:
            return min(10, int((self.progress or 0) // 10))
        return 10 if self.state in _FULL else 0

    @property
    def dom_id(self) -> str:
        return "n-" + self.mac.replace(":", "")

    @property
    def label(self) -> str:
        return self.hostname or self.mac

    @property
    def actions(self) -> list[str]:
        return actions_for(self.state)


_FULL = frozenset(
    {NodeState.IMAGED, NodeState.HELD, NodeState.RELEASED, NodeState.STARTING, NodeState.JOINED}
)


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
    rollup: str = ""
    release_order: tuple[str, ...] = ()

    @property
    def gate_label(self) -> str:
        return GATE_LABELS.get(self.gate, self.gate)

    @property
    def gate_text(self) -> str:
        return without_commands(self.gate_detail)

    @property
    def urgency(self) -> int:
        return _urgency(self.gate, self.nodes)

    @property
    def blockers(self) -> list[NodeView]:
        """Failed nodes the gate waits on an admin for: their buttons go by the gate."""
        return [n for n in self.nodes if n.state == NodeState.FAILED]

    @property
    def next_release(self) -> NodeView | None:
        """With the manual policy, the held node the gate would release next."""
        if not self.release_order or self.gate not in ("formed", "releasing"):
            return None
        return next((n for n in self.nodes if n.label == self.release_order[0]), None)


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
    state_filter: str = ""

    @property
    def attention(self) -> list[NodeView]:
        """Alarmed, failed and stale nodes: what the first screen shows before anything else."""
        return sorted(
            (n for n in self.all_nodes if n.needs_attention), key=lambda n: n.attention_rank
        )

    @property
    def stale_count(self) -> int:
        return sum(n.stale for n in self.all_nodes)

    def shown(self, node: NodeView) -> bool:
        """Whether the state filter (``?state=``, the clickable counts) keeps ``node``."""
        f = self.state_filter
        return not f or node.state == f or (f == "stale" and node.stale)

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


def _node_view(
    node: Node, clusters: dict[str, Cluster], config: Config | None, now: datetime
) -> NodeView:
    if node.state == NodeState.DISCOVERED or not node.in_config:
        role = "unknown"
    elif node.cluster and node.cluster in clusters:
        first = clusters[node.cluster].first_node
        role = "first node" if (node.hostname or "").lower() == first.lower() else "member"
    else:
        role = "standalone"
    cluster = clusters.get(node.cluster) if node.cluster else None
    limit = None
    if config is not None and role != "unknown":
        limit = liveness.quiet_limit(
            node.state,
            stale_after=config.dashboard.stale_after,
            gate_poll=config.http.gate_poll_timeout,
            timeouts=(cluster.settings or {}).get("timeouts") if cluster else None,
        )
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
        heard=liveness.last_heard(node.last_seen, node.state_since),
        quiet=liveness.quiet_for(node.last_seen, node.state_since, now),
        quiet_limit=limit,
    )


def stale_limits(config: Config, clusters: list[Cluster]) -> dict[str, dict[str, float]]:
    """Per cluster ("" for nodes without one), the quiet limit of each state: the page marks
    nodes stale as the seconds pass, and after a change of state, without asking us."""

    def limits(timeouts: dict[str, Any] | None) -> dict[str, float]:
        out = {}
        for state in NodeState:
            limit = liveness.quiet_limit(
                state,
                stale_after=config.dashboard.stale_after,
                gate_poll=config.http.gate_poll_timeout,
                timeouts=timeouts,
            )
            if limit is not None:
                out[str(state)] = limit
        return out

    table = {"": limits(None)}
    for c in clusters:
        table[c.name] = limits((c.settings or {}).get("timeouts"))
    return table


DISCOVERED_PAGE = 50


async def load_view(
    session: AsyncSession,
    *,
    log_node: str = "",
    log_cluster: str = "",
    log_limit: int = 100,
    config: Config | None = None,
    now: datetime | None = None,
    state_filter: str = "",
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
    now = now or datetime.now(UTC)
    views = [_node_view(n, clusters, config, now) for n in nodes]
    # first node on top, then by host name: the order an admin reads a rollout in
    views.sort(key=lambda v: (v.role != "first node", natural_key(v.label)))
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
    discovered.extend(_node_view(n, clusters, config, now) for n in page)  # newest first
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
    cluster_views = []
    for c in clusters.values():
        members = by_cluster[c.name]
        for view in members:  # an identity alarm names its node: "MAC: what happened"
            if c.alarm and c.alarm.startswith(f"{view.mac}:"):
                # not a node's state: the page's copy of the cluster's alarm that names it
                view.alarm = c.alarm
        summary = rollup(
            c.release_policy, c.first_node, [(n.hostname or n.mac, n.state) for n in members]
        )
        cluster_views.append(
            ClusterView(
                name=c.name,
                image=c.image,
                first_node=c.first_node,
                release_policy=c.release_policy,
                gate=c.gate,
                gate_detail=c.gate_detail or "",
                nodes=members,
                membership=membership_of[c.name],
                alarm=c.alarm or "",
                rollup=summary.text,
                release_order=summary.release_order,
            )
        )
    # the stopped cluster with its failed node first, the finished ones last
    cluster_views.sort(key=lambda c: (c.urgency, c.name))
    return DashboardView(
        clusters=cluster_views,
        standalone=standalone,
        discovered=discovered,
        images=list((await session.scalars(select(Image).order_by(Image.name))).all()),
        events=events,
        last_event_id=last_event_id,
        state_counts={s: counts[s] for s in NodeState if s in counts},
        log_node=log_node,
        log_cluster=log_cluster,
        log_error=log_error,
        all_nodes=sorted(views, key=lambda v: natural_key(v.label)),
        state_filter=state_filter,
        discovered_total=discovered_total,
        discovered_page=discovered_page,
    )
