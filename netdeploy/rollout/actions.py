"""Everything that changes a rollout, as actions the writer applies inside one batch.

Each function returns an :data:`~netdeploy.rollout.engine.Action`. Order inside an action is
always: find the node, check its token, check the body, check the state, then change. So a
refusal changes nothing but the event row that records it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from netdeploy import eventlog
from netdeploy.inventory import NodeState as S
from netdeploy.rollout import gate as G
from netdeploy.rollout import identity
from netdeploy.rollout.engine import Action, Batch, LiveEvent, gate_view
from netdeploy.rollout.errors import BadReport, Refused
from netdeploy.rollout.facts import parse_facts, summary
from netdeploy.rollout.machine import (
    RELEASED_STATES,
    IllegalTransition,
    Report,
    judge_report,
)
from netdeploy.rollout.membership import Member, membership_record
from netdeploy.rollout.reports import AgentReport, HealthReport
from netdeploy.rollout.rows import NodeRow
from netdeploy.store.models import Cluster, MachineFacts, Node
from netdeploy.tokens import token_matches

# ---------------------------------------------------------------- results


@dataclass
class NodeOutcome:
    """The node after the batch committed; ``changed`` is False for a harmless repeat."""

    node: NodeRow
    cluster: Cluster | None
    changed: bool

    def json(self) -> dict[str, Any]:
        return {
            **gate_view(self.node, self.cluster),
            "progress": self.node.progress,
            "changed": self.changed,
        }


# ---------------------------------------------------------------- refusals are recorded


def reject(mac: str | None, route: str, error: Exception, ip: str | None) -> Action:
    """Record a request refused before it reached a node (e.g. an unparseable MAC)."""

    async def action(batch: Batch) -> None:
        raise identity.refuse(batch, None, mac, route, error, ip)

    return action


label = identity.label


async def _reporter(
    batch: Batch,
    mac: str,
    token: str | None,
    report: AgentReport | BadReport,
    ip: str | None,
    known_ip: str | None,
    quiet: float,
) -> NodeRow:
    """Who may send this report: ``joined`` (and ``failed`` with it) is the started OS's,
    with the report token of its answer files; everything else the claimed agent's."""
    node = await identity.find(batch, mac, "events", ip)
    by_os = not isinstance(report, BadReport) and (
        report.state == S.JOINED
        or (report.state == S.FAILED and token_matches(token, node.report_token))
    )
    if by_os:
        return await identity.started_node(batch, mac, token, "joined", ip, known_ip, quiet)
    return await identity.agent_node(batch, mac, token, "events", ip)


# ---------------------------------------------------------------- agent actions


def agent_report(
    mac: str,
    token: str | None,
    report: AgentReport | BadReport,
    ip: str | None,
    known_ip: str | None = None,
    quiet: float = 0.0,
) -> Action:
    """An agent says where its node is: imaging (progress), imaged, starting, failed; the
    started OS says joined (or failed). ``known_ip``: the node's configured address."""

    async def action(batch: Batch) -> NodeOutcome:
        node = await _reporter(batch, mac, token, report, ip, known_ip, quiet)
        if isinstance(report, BadReport):
            raise identity.refuse(batch, node, mac, "events", report, ip)
        cluster = batch.cluster_of(node)
        try:
            verdict = judge_report(node.state, report.state)
        except IllegalTransition as exc:
            extra = {"reported": str(report.state)}
            if node.state == S.HELD and report.state in RELEASED_STATES:
                # first node alone: a held node must not run its cluster service yet
                extra["alarm"] = "held node claims to have started: check it did not boot its disk"
            raise identity.refuse(
                batch, node, mac, "events", Refused(f"{label(node)}: {exc}"), ip, **extra
            ) from None
        if report.message:
            node.message = report.message
        if report.members is not None and cluster is not None:
            _store_membership(batch, cluster, node, report.members, "")
        if verdict == Report.REPEAT:
            if report.state == S.IMAGING and report.progress is not None:
                node.progress = report.progress
                batch.transient.append(
                    LiveEvent(
                        "progress",
                        node.mac,
                        node.cluster,
                        node.state,
                        {"progress": report.progress}
                        | ({"message": report.message} if report.message else {}),
                        batch.now,
                    )
                )
            if report.message:  # a milestone the agent put into words: keep it in the log
                progress = {} if report.progress is None else {"progress": report.progress}
                batch.record(
                    eventlog.agent_report(
                        node.mac,
                        node.cluster,
                        node.state,
                        actor="agent",
                        ip=ip,
                        message=report.message,
                        **progress,
                    )
                )
            return NodeOutcome(node, cluster, changed=False)
        detail: dict[str, Any] = {"actor": "agent", "ip": ip}
        if report.message:
            detail["message"] = report.message
        batch.move(node, report.state, reason=f"agent reported {report.state}", detail=detail)
        if report.state == S.IMAGING:
            node.progress = report.progress or 0.0
        elif report.state == S.FAILED:
            node.stops_rollout = True  # until the admin decides: retry, fail or release
        elif report.state == S.IMAGED:
            _after_imaged(batch, node, cluster)
        return NodeOutcome(node, cluster, changed=True)

    return action


def facts_report(mac: str, token: str | None, body: Any, ip: str | None) -> Action:
    """An agent reports the machine's hardware (netdeploy.rollout.facts): kept per MAC,
    replacing the last report, with one ``facts`` event row."""

    async def action(batch: Batch) -> dict[str, Any]:
        node = await identity.agent_node(batch, mac, token, "facts", ip)
        try:
            facts = parse_facts(body) if not isinstance(body, BadReport) else None
        except BadReport as exc:
            raise identity.refuse(batch, node, mac, "facts", exc, ip) from None
        if facts is None:
            raise identity.refuse(batch, node, mac, "facts", body, ip)
        await batch.session.merge(MachineFacts(mac=mac, facts=facts, reported_at=batch.now, ip=ip))
        batch.record(eventlog.facts_report(mac, node.cluster, summary(facts), ip=ip))
        return {"mac": mac, "facts": facts}

    return action


def _after_imaged(batch: Batch, node: NodeRow, cluster: Cluster | None) -> None:
    first = cluster is not None and node.hostname == cluster.first_node
    if G.after_imaged(in_cluster=cluster is not None, is_first=first) == S.HELD:
        batch.move(node, S.HELD, reason="held until the cluster is formed and policy releases it")
        return
    node.release_seq = 0
    why = "first node starts alone" if first else "standalone node: no cluster gate"
    batch.move(node, S.RELEASED, reason=why, detail={"actor": "gate", "release_seq": 0})


def _store_membership(
    batch: Batch, cluster: Cluster, node: NodeRow, members: tuple[Member, ...], state: str
) -> None:
    """Keep the member list the cluster itself reported (latest wins) and record it."""
    record = membership_record(
        list(members),
        reporter=node.hostname or node.mac,
        cluster_state=state,
        at=batch.now.isoformat(),
    )
    cluster.membership = record
    batch.dirty.add(cluster.name)
    batch.record(eventlog.membership(node.mac, cluster.name, record))


def _health_verdict(node: NodeRow, report: HealthReport) -> tuple[bool, str]:
    """Healthy only if the report says so *and* the cluster's own list shows this node up."""
    if not report.healthy:
        return False, report.message or "the report script found the cluster service down"
    if report.members is not None:
        me = next(
            (m for m in report.members if m.name.lower() == (node.hostname or "").lower()), None
        )
        if me is None or not me.up:
            seen = "does not list it" if me is None else f"lists it {me.state}"
            return False, f"the cluster's own member list {seen}" + (
                f" ({report.message})" if report.message else ""
            )
    return True, report.message


def health(
    mac: str,
    token: str | None,
    report: HealthReport | BadReport,
    ip: str | None,
    known_ip: str | None = None,
    quiet: float = 0.0,
) -> Action:
    """The first node's report script reports its cluster: healthy forms the cluster (or resumes
    a stopped gate); unhealthy moves the node to ``unhealthy`` and stops the gate at once. Only
    with the report token of its own answer files, from an address it is known by."""

    async def action(batch: Batch) -> NodeOutcome:
        node = await identity.started_node(batch, mac, token, "health", ip, known_ip, quiet)
        if isinstance(report, BadReport):
            raise identity.refuse(batch, node, mac, "health", report, ip)
        cluster = batch.cluster_of(node)
        if cluster is None:
            error = Refused(f"{label(node)} is not in a cluster; only a first node reports health")
            raise identity.refuse(batch, node, mac, "health", error, ip)
        if node.hostname != cluster.first_node:
            error = Refused(
                f"{label(node)} is not the first node of cluster {cluster.name} "
                f"({cluster.first_node} is); only the first node reports cluster health"
            )
            raise identity.refuse(batch, node, mac, "health", error, ip)
        # a first node that timed out while its OS came up still runs it: a late report counts
        # (not one that failed by its own report or by the admin's decision)
        timed_out = (
            node.state == S.FAILED
            and node.release_seq is not None
            and node.message.startswith(("joining timed out", "starting timed out"))
        )
        if node.state not in RELEASED_STATES and not timed_out:
            error = Refused(
                f"first node {label(node)} is {node.state}; its health counts only after it "
                "was released and started"
            )
            raise identity.refuse(batch, node, mac, "health", error, ip)
        if cluster.alarm and cluster.formed_at is None:  # fail-safe: an alarm never forms
            error = Refused(
                f"cluster {cluster.name} has an identity alarm ({cluster.alarm}); it is not "
                "formed until the admin retries the node or resets the cluster"
            )
            raise identity.refuse(batch, node, mac, "health", error, ip)
        if report.members is not None:
            _store_membership(batch, cluster, node, report.members, report.cluster_state)
        healthy, reason = _health_verdict(node, report)
        if not healthy:
            batch.record(
                eventlog.health(node.mac, cluster.name, healthy=False, message=reason, ip=ip)
            )
            changed = node.message != reason
            node.message = reason
            if node.state in (S.RELEASED, S.STARTING, S.JOINED):
                batch.move(
                    node,
                    S.UNHEALTHY,
                    reason=f"first node reports its cluster unhealthy: {reason}",
                    detail={"actor": "agent", "message": reason},
                )
                changed = True
            batch.dirty.add(cluster.name)  # the gate stops (or states the new reason) now
            return NodeOutcome(node, cluster, changed)
        changed = False
        if node.state != S.JOINED:
            why = "first node reported its cluster healthy"
            if node.state == S.UNHEALTHY:
                why += " again: the gate resumes"
            detail = {"actor": "agent", "message": report.message}
            # unhealthy or timed out → joined only this way, never by an agent's "joined"
            batch.move(
                node,
                S.JOINED,
                reason=why,
                detail=detail,
                force=node.state != S.STARTING and node.state != S.RELEASED,
                keep_report=True,  # the first node goes on reporting its cluster's view
            )
            node.stops_rollout = False
            changed = True
        node.message = report.message
        if cluster.formed_at is None:  # health twice forms the cluster once
            cluster.formed_at = batch.now
            batch.set_gate(cluster, G.Gate.FORMED, f"formed by {node.hostname}", mac=node.mac)
            batch.dirty.add(cluster.name)
            changed = True
        return NodeOutcome(node, cluster, changed)

    return action


def gate_check(
    mac: str, token: str | None, ip: str | None, timeout: float | BadReport | None = None
) -> Action:
    """Authenticate a long-poll and read the node's gate view (no change but last_seen)."""

    async def action(batch: Batch) -> dict[str, Any]:
        node = await identity.agent_node(batch, mac, token, "gate", ip)
        if isinstance(timeout, BadReport):
            raise identity.refuse(batch, node, mac, "gate", timeout, ip)
        return gate_view(node, batch.cluster_of(node))

    return action


def gate_read(mac: str) -> Action:
    """The gate view of a long-poll that was authenticated when it began (gate_check): read
    again when it times out, without judging the credential a second time. A machine that was
    power-cycled while parked here has claimed anew by now; its old poll is no intruder."""

    async def action(batch: Batch) -> dict[str, Any]:
        node = await identity.find(batch, mac, "gate", None)
        return gate_view(node, batch.cluster_of(node))

    return action


# ---------------------------------------------------------------- timeouts


def sweep(now: datetime) -> Action:
    """Fail nodes past their phase timeout, then settle every cluster's gate.

    Settling everything also re-makes any decision a crash or a config change left pending
    (e.g. the policy became ``waves:4`` while nodes were held).
    """

    async def action(batch: Batch) -> list[str]:
        failed = []
        for node in await batch.load(Node.state.in_(list(G.PHASE_OF))):
            cluster = batch.cluster_of(node)
            timeouts = (cluster.settings or {}).get("timeouts") if cluster else None
            phase = G.overdue(node.state, node.state_since, timeouts, now)
            if phase is None:
                continue
            limit = float((timeouts or {}).get(phase, G.DEFAULT_TIMEOUTS[phase]))
            node.stops_rollout = True
            node.message = f"{phase} timed out after {limit:g} s in {node.state}"
            first = cluster is not None and node.hostname == cluster.first_node
            batch.move(
                node,
                S.FAILED,
                reason=f"{phase} timed out after {limit:g} s in {node.state}",
                detail={"actor": "timeout", "phase": phase},
                keep_report=first,  # a late healthy report of its running OS still counts
            )
            failed.append(node.mac)
        batch.dirty.update(batch.clusters)
        return failed

    return action
