"""Why did this machine (not) boot? The boot path of one MAC as a timeline, read from the record.

PEERS.md: the peers' users hurt most on *silent* boot failures (Cobbler #3970/#3101, pixiecore
#13/#77, Tinkerbell #728) because nobody can answer "why did MAC X not boot?". Everything the
answer needs is already an event row (eventlog.py): ProxyDHCP answers (``dhcp``), TFTP
transfers (``tftp``), boot decisions with their ``why`` (``boot``), image downloads
(``http``), answer files (``answer``), refusals (``auth``/``rejected``), agent reports
(``state``, ``report``, ``health``) and what admins did (``admin``). This module orders them
into one timeline, ends it with what the machine gets on its next boot and what the admin can
do, and, for a machine that was never heard from, names the likely causes.

Read only, thin over the store; ``netdeploy explain`` (through the server's API) and the
dashboard's node page both show :func:`explain`'s answer.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncSession

from netdeploy.boot.advice import advise
from netdeploy.boot.explanation import ExplainSettings, Explanation, Step
from netdeploy.boot.plan import BootUrls, NodeFacts, boot_plan
from netdeploy.eventlog import LogFilterError, describe, of_node, severity
from netdeploy.events import event_json
from netdeploy.inventory import BadMac, NodeState, normalize_mac
from netdeploy.rollout import liveness
from netdeploy.rollout.gate import as_utc
from netdeploy.store.models import Cluster, Event, Node

# A first stage (GET /boot.ipxe, TFTP boot.ipxe) names no MAC: it is shown in a machine's
# timeline when it came from the same address at most this long before the machine's
# per-MAC request (iPXE chains within a second; DHCP retries take longer).
FIRST_STAGE_WINDOW = timedelta(seconds=60)
MAX_STEPS = 500

PHASES = {
    "dhcp": "ProxyDHCP",
    "tftp": "TFTP",
    "boot": "boot decision",
    "http": "image download",
    "answer": "answer file",
    "state": "state",
    "report": "agent",
    "progress": "agent",
    "health": "cluster service",
    "auth": "refused",
    "rejected": "refused",
    "admin": "admin",
    "gate": "cluster gate",
    "config": "config",
    "multicast": "multicast",
}


async def _resolve(session: AsyncSession, text: str) -> tuple[str, Node | None]:
    try:
        mac = normalize_mac(text)
    except BadMac:
        node = await session.scalar(select(Node).where(Node.hostname == text.strip()))
        if node is None:
            raise LogFilterError(
                f"no node with MAC or host name {text!r}; give a MAC (any notation) to ask "
                "about a machine that is not in the config"
            ) from None
        return node.mac, node
    return mac, await session.get(Node, mac)


def _step(ev: dict[str, Any], *, by_address: bool = False) -> Step:
    kind = str(ev.get("kind"))
    detail = ev.get("detail") or {}
    if kind == "boot":
        via = str(detail.get("via", "?")).upper()
        text = (
            f"{via} {detail.get('path', '?')} from {detail.get('ip', '?')}: "
            f"{detail.get('decision', '?')} ({detail.get('why', '')})"
        )
        phase = "first stage" if ev.get("mac") is None else "boot decision"
    else:
        text, phase = describe(ev), PHASES.get(kind, kind)
    if by_address:
        text += " (no MAC in this request: from the same address shortly before)"
    return Step(ev.get("id"), ev.get("at"), kind, phase, severity(ev), text, by_address)


async def _first_stages(session: AsyncSession, own: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """First-stage requests (no MAC) from the address of one of this machine's per-MAC boot
    requests, shortly before it."""
    anchors = [
        (as_utc(datetime.fromisoformat(e["at"])), e["detail"].get("ip"))
        for e in own
        if e["kind"] == "boot" and e.get("at") and (e.get("detail") or {}).get("ip")
    ]
    if not anchors:
        return []
    start = min(t for t, _ in anchors) - FIRST_STAGE_WINDOW
    end = max(t for t, _ in anchors)
    rows = (
        await session.scalars(
            select(Event)
            .where(
                and_(
                    Event.mac.is_(None),
                    Event.kind.in_(("boot", "tftp")),
                    Event.at >= start,
                    Event.at <= end,
                )
            )
            .order_by(Event.id)
            .limit(2000)
        )
    ).all()
    # for each per-MAC request: the latest first stage from its address before it, and the
    # TFTP transfers to that address since its previous request (the PXE firmware's boot
    # program). Several machines behind one address (NAT, QEMU slirp) must not all be drawn
    # into one timeline, hence the latest only.
    found: dict[int, Event] = {}
    previous: dict[str, datetime] = {}
    for t, a_ip in sorted(anchors, key=lambda anchor: anchor[0]):
        since = max(t - FIRST_STAGE_WINDOW, previous.get(a_ip, t - FIRST_STAGE_WINDOW))
        previous[a_ip] = t
        latest = None
        for row in rows:
            ip = (row.detail or {}).get("ip") or (row.detail or {}).get("client")
            if ip != a_ip or not since <= as_utc(row.at) <= t:
                continue
            if row.kind == "tftp":
                found[row.id] = row
            else:
                latest = row  # rows are in id order: the last match is the latest
        if latest is not None:
            found[latest.id] = latest
    return [event_json(row) for row in found.values()]


async def explain(
    session: AsyncSession, query: str, settings: ExplainSettings, now: datetime
) -> Explanation:
    """The boot path of the machine named by ``query`` (MAC in any notation, or host name).

    Raises :class:`~netdeploy.eventlog.LogFilterError` for a host name nobody has; a MAC
    nobody has is a machine never heard from, and gets the likely causes."""
    mac, node = await _resolve(session, query)
    # its own rows and the release wave that named it (one row per wave: decision 0014)
    rows = await of_node(session, select(Event), mac, node.cluster if node else None, MAX_STEPS)
    own = [event_json(r) for r in reversed(rows)]
    cluster = await session.get(Cluster, node.cluster) if node and node.cluster else None
    gate_rows: list[dict[str, Any]] = []
    if cluster is not None and own:
        gates = await session.scalars(
            select(Event)
            .where(Event.kind == "gate", Event.cluster == cluster.name, Event.id >= own[0]["id"])
            .order_by(Event.id)
            .limit(100)
        )
        gate_rows = [event_json(r) for r in gates]
    guessed = await _first_stages(session, own)
    timeline = sorted(
        [(e, False) for e in own + gate_rows] + [(e, True) for e in guessed],
        key=lambda pair: pair[0]["id"],
    )
    facts_of_node: dict[str, Any] = {}
    if node is not None:
        timeouts = (cluster.settings or {}).get("timeouts") if cluster else None
        quiet = round(liveness.quiet_for(node.last_seen, node.state_since, now), 1)
        limit = liveness.quiet_limit(
            node.state,
            stale_after=settings.stale_after,
            gate_poll=settings.gate_poll,
            timeouts=timeouts,
        )
        facts_of_node = {
            "hostname": node.hostname,
            "cluster": node.cluster,
            "state": node.state,
            "state_since": node.state_since.isoformat() if node.state_since else None,
            "last_seen": node.last_seen.isoformat() if node.last_seen else None,
            "last_ip": node.last_ip,
            "quiet_for": quiet,
            "stale_limit": limit,
            "stale": liveness.is_stale(quiet, limit),
        }
        if cluster is not None:
            facts_of_node |= {"gate": cluster.gate, "gate_detail": cluster.gate_detail}
    # built in one go (no attribute writes: test_layering watches `.state =` outside rollout/)
    answer = Explanation(
        query=query,
        mac=mac,
        truncated=len(rows) == MAX_STEPS,
        steps=[_step(e, by_address=guess) for e, guess in timeline],
        **facts_of_node,
    )
    facts = NodeFacts(
        mac,
        NodeState(node.state) if node else None,
        node.hostname if node else None,
        node.cluster if node else None,
        cluster.gate if cluster else None,
        (node.image or (cluster.image if cluster else None)) if node else None,
    )
    plan = boot_plan(facts, BootUrls(settings.public_url))
    answer.next_boot = f"{plan.action}: {plan.why}"
    await advise(session, answer, own, settings, now, cluster)
    return answer
