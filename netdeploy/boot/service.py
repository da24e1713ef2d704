"""Answer boot requests from the store: decide, apply the state change it implies, record it.

Every request a booting machine makes of us (first stage, per-MAC script, pxelinux config) leaves
one ``Event(kind="boot")`` with what it asked (``via``, ``path``, ``ip``) and what we decided and
why, so an admin can follow a machine that "does nothing" request by request (PEERS.md: silent
boot failures). One short transaction per request: read the node, write the event, commit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from netdeploy.boot.plan import BootPlan, BootUrls, NodeFacts, boot_plan
from netdeploy.inventory import NodeState
from netdeploy.rollout.service import set_state
from netdeploy.server import Context
from netdeploy.store.models import Capture, Cluster, Event, Node, utcnow
from netdeploy.tokens import issue_token

log = logging.getLogger("netdeploy.boot")

BOOT_REQUESTS = Counter(
    "netdeploy_boot_requests",
    "Boot requests answered, by protocol and decision (chain, image, wait, discover, local)",
    ["via", "decision"],
)

# Booting the agent is "the node is in PXE": registered → pxe (DESIGN). A failed node stays
# failed until the admin retries it (decision 0002); every other state is left as it is.
ADVANCE_ON_BOOT: dict[NodeState, NodeState] = {NodeState.REGISTERED: NodeState.PXE}


@dataclass(frozen=True)
class BootAnswer:
    plan: BootPlan
    token: str | None  # plain token for the kernel command line; only for agent plans


def urls_of(ctx: Context) -> BootUrls:
    return BootUrls(ctx.public_url)


def facts_of(
    node: Node | None, mac: str, cluster: Cluster | None, capture: Capture | None = None
) -> NodeFacts:
    marked = (capture.state, capture.image) if capture is not None else None
    if node is None:
        return NodeFacts(mac, None, capture=marked)
    return NodeFacts(
        mac=node.mac,
        state=NodeState(node.state),
        hostname=node.hostname,
        cluster=node.cluster,
        gate=cluster.gate if cluster else None,
        image=node.image,
        capture=marked,
    )


async def _node_and_cluster(session: AsyncSession, mac: str) -> tuple[Node | None, Cluster | None]:
    node = await session.get(Node, mac)
    cluster = await session.get(Cluster, node.cluster) if node and node.cluster else None
    return node, cluster


def _discovered(mac: str, ip: str, via: str) -> tuple[Node, Event]:
    node = Node(
        mac=mac,
        hostname=None,
        in_config=False,
        state=NodeState.DISCOVERED,
        state_since=utcnow(),
        vars={},
        message="",
    )
    event = Event(
        kind="state",
        mac=mac,
        to_state=NodeState.DISCOVERED,
        detail={"reason": f"unknown MAC booted via {via} from {ip}"},
    )
    return node, event


async def answer_boot(ctx: Context, mac: str, *, via: str, path: str, ip: str) -> BootAnswer:
    """Decide what ``mac`` (canonical) boots now, apply the implied state change, record it.

    Agent plans get a fresh token: its digest replaces ``Node.token`` (the previous token of this
    node stops working), the plain token goes on the kernel command line only.
    """
    for attempt in (1, 2):  # a second try only when two requests created the same MAC at once
        try:
            return await _answer_once(ctx, mac, via=via, path=path, ip=ip)
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


async def _answer_once(ctx: Context, mac: str, *, via: str, path: str, ip: str) -> BootAnswer:
    events: list[Event] = []
    async with ctx.sessions() as session, session.begin():
        node, cluster = await _node_and_cluster(session, mac)
        first_boot = node is None  # the plan says so: "not in the inventory, recorded"
        capture = await session.get(Capture, mac)
        if node is None:
            node, created = _discovered(mac, ip, via)
            session.add(node)
            events.append(created)
            await session.flush()  # a concurrent insert of the same MAC fails here, retried
        else:
            advance = ADVANCE_ON_BOOT.get(NodeState(node.state))
            if advance is not None and capture is None:  # a capture boot is no rollout step
                events.append(
                    set_state(
                        session, node, advance, reason=f"boot script fetched via {via}", detail={}
                    )
                )
        plan = boot_plan(
            facts_of(None if first_boot else node, mac, cluster, capture), urls_of(ctx)
        )
        token = None
        if plan.boots_agent:
            token, node.token = issue_token()
        node.last_seen = utcnow()
        node.last_ip = ip
        events.append(boot_event(mac, node.cluster, via=via, path=path, ip=ip, plan=plan))
        session.add_all(events)
    ctx.bus.publish(events)
    BOOT_REQUESTS.labels(via, plan.action.value).inc()
    return BootAnswer(plan, token)


def boot_event(
    mac: str | None,
    cluster: str | None,
    *,
    via: str,
    path: str,
    ip: str,
    plan: BootPlan | None,
    decision: str | None = None,
    why: str | None = None,
) -> Event:
    detail: dict[str, Any] = {
        "via": via,
        "path": path,
        "ip": ip,
        "decision": decision or (plan.action.value if plan else "none"),
        "why": why or (plan.why if plan else ""),
    }
    return Event(kind="boot", mac=mac, cluster=cluster, detail=detail)


async def record_first_stage(ctx: Context, *, via: str, path: str, ip: str) -> None:
    """The generic first stage names no MAC; record it by client address (cheap, one row)."""
    event = boot_event(
        None,
        None,
        via=via,
        path=path,
        ip=ip,
        plan=None,
        decision="chain",
        why="first stage: chain to the per-MAC script",
    )
    async with ctx.sessions() as session, session.begin():
        session.add(event)
    ctx.bus.publish(event)
    BOOT_REQUESTS.labels(via, "chain").inc()
