"""Who may speak for a node: boot tokens, claims, report tokens, alarms (docs/security.md).

PXE has no authentication: anyone on the boot LAN can fetch any MAC's boot script and so its
boot token. So a boot token proves nothing by itself; it is good for exactly one thing, the
**claim**: the agent sends it once, with a secret it generated itself, and from then on speaks
with that secret. A second claim of the same node in the same boot phase (someone else had
the boot token too), a boot token used after its claim, or the secret of an earlier phase
still in use are evidence that two machines speak for one node: the request is refused, an
**alarm** is recorded and the cluster's gate stops until the admin decides (retry the node
or reset the cluster). The started OS reports health/joined with the **report token** of its
own answer files, only from an address the node is known by, only in the states where those
reports make sense.

Lifecycle: a boot token is bound to one node, one rollout number and one phase (the boot
plan it came with); it, the claim and the report token die on reset, retry, join and failure
(``netdeploy.rollout.state.end_phase``, called by ``set_state``), and a new boot script
replaces the boot token and the claim.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from netdeploy import eventlog
from netdeploy.inventory import NodeState as S
from netdeploy.rollout.errors import Forbidden, NotFound, Refused
from netdeploy.tokens import token_digest, token_matches

if TYPE_CHECKING:  # types only: actions and booting import this module after engine
    from netdeploy.rollout.engine import Action, Batch
    from netdeploy.rollout.rows import NodeRow
    from netdeploy.store.models import Cluster, Node

# boot phase (the plan a boot token came with) -> the states its agent may speak in
PHASE_STATES: dict[str, frozenset[S]] = {
    "image": frozenset({S.PXE, S.IMAGING, S.IMAGED, S.HELD, S.RELEASED, S.STARTING}),
    "wait": frozenset({S.IMAGED, S.HELD, S.RELEASED, S.STARTING, S.FAILED}),
    "discover": frozenset({S.DISCOVERED}),
    # a machine the admin marked for capture (issue 17): the mark outranks its rollout state,
    # which the capture never changes; the claim lives as long as the capture boot
    "capture": frozenset(S),
}


def label(node: NodeRow) -> str:
    return f"{node.hostname} ({node.mac})" if node.hostname else node.mac


def rollout_of(cluster: Cluster | None) -> int:
    """The rollout number a token is bound to: the cluster's (bumped by reset), 0 standalone."""
    return cluster.rollout if cluster is not None else 0


def new_boot_token(node: NodeRow, digest: str, phase: str, rollout: int) -> None:
    """A new boot script: a new phase. The old claim (or, unclaimed, the old boot token) is kept
    only to recognise it in use: a machine that raced this one for the boot."""
    node.claim_prev = node.claim or node.token or node.claim_prev
    node.claim = None
    node.token = digest
    node.token_phase = phase
    node.token_rollout = rollout


# ---------------------------------------------------------------- refusals and alarms


def refuse(
    batch: Batch,
    node: NodeRow | None,
    mac: str | None,
    route: str,
    error: Exception,
    ip: str | None,
    **extra: Any,
) -> Exception:
    """Record the refusal as an event row (in this batch's transaction) and hand it back."""
    batch.record(
        eventlog.refusal(
            forbidden=isinstance(error, Forbidden),
            mac=node.mac if node else mac,
            cluster=node.cluster if node else None,
            from_state=node.state if node else None,
            route=route,
            error=str(error),
            ip=ip,
            **extra,
        )
    )
    return error


def alarm(batch: Batch, node: NodeRow, why: str, ip: str | None, route: str) -> None:
    """Record an identity alarm and stop the node's cluster gate (fail-safe)."""
    cluster = batch.cluster_of(node)
    text = f"{label(node)}: {why}"
    batch.record(eventlog.alarm(node.mac, node.cluster, node.state, text, ip=ip, route=route))
    if cluster is not None and not cluster.alarm:
        cluster.alarm = f"{node.mac}: {why} (from {ip} on {route})"
        batch.dirty.add(cluster.name)


def phase_ok(node: NodeRow | Node, cluster: Cluster | None) -> bool:
    """The node's credentials belong to its current rollout and fit its state's phase."""
    states = PHASE_STATES.get(node.token_phase or "")
    return (
        states is not None and S(node.state) in states and node.token_rollout == rollout_of(cluster)
    )


def claim_valid(node: NodeRow | Node, cluster: Cluster | None, secret: str | None) -> bool:
    """Read-only check (plan, image, multicast join): ``secret`` is this phase's claim."""
    return token_matches(secret, node.claim) and phase_ok(node, cluster)


def _phase_ok(batch: Batch, node: NodeRow) -> bool:
    return phase_ok(node, batch.cluster_of(node))


async def find(batch: Batch, mac: str, route: str, ip: str | None) -> NodeRow:
    node = await batch.node(mac)
    if node is None:
        error = NotFound(f"no node with MAC {mac}; add it to the config as a [[nodes]] entry")
        raise refuse(batch, None, mac, route, error, ip)
    return node


def _forbid(batch: Batch, node: NodeRow, route: str, ip: str | None, why: str) -> Exception:
    return refuse(batch, node, node.mac, route, Forbidden(why), ip)


def _foreign_use(batch: Batch, node: NodeRow, token: str, route: str, ip: str | None) -> str | None:
    """Why ``token`` (not this phase's claim) in an agent's hands means two machines speak for
    ``node``; None when it is merely wrong or stale."""
    if token_matches(token, node.token):
        if node.claim:
            return f"its boot token was used on {route} after its agent claimed it"
        return f"its boot token was used on {route} without a claim"
    if token_matches(token, node.claim_prev):
        return "a credential of an earlier boot phase is still in use (two machines booted as it?)"
    if route in ("health", "joined") and token_matches(token, node.claim):
        return "an agent credential was used for a started-OS report"
    return None


async def agent_node(
    batch: Batch, mac: str, secret: str | None, route: str, ip: str | None
) -> NodeRow:
    """The node whose agent speaks with ``secret`` (its claim of this phase), else refused."""
    node = await find(batch, mac, route, ip)
    if not secret:
        raise _forbid(batch, node, route, ip, "no credential: claim the node first (POST claim)")
    if token_matches(secret, node.claim):
        if not _phase_ok(batch, node):
            why = f"the claim of {label(node)} belongs to an ended phase; PXE-boot again"
            raise _forbid(batch, node, route, ip, why)
        node.last_seen = batch.now
        return node
    foreign = _foreign_use(batch, node, secret, route, ip)
    if foreign:
        alarm(batch, node, foreign, ip, route)
        raise _forbid(batch, node, route, ip, f"refused and alarmed: {foreign}")
    why = f"wrong or stale credential for {label(node)}; PXE-boot again for a new one"
    raise _forbid(batch, node, route, ip, why)


async def started_node(
    batch: Batch,
    mac: str,
    token: str | None,
    route: str,
    ip: str | None,
    known_ip: str | None,
    quiet: float = 0.0,
) -> NodeRow:
    """The node whose started OS reports with the report token of its own answer files, from an
    address it is known by (its claim's, or its configured one), at least ``quiet`` seconds
    after those files were served (a machine racing this node for its boot has claimed, and
    raised the alarm, by then)."""
    node = await find(batch, mac, route, ip)
    if not token:
        raise _forbid(batch, node, route, ip, "no report token (it is in the node's answer files)")
    if not token_matches(token, node.report_token):
        foreign = _foreign_use(batch, node, token, route, ip)
        if foreign:
            alarm(batch, node, foreign, ip, route)
            raise _forbid(batch, node, route, ip, f"refused and alarmed: {foreign}")
        why = f"not the report token of {label(node)}'s current answer files (stale or forged)"
        raise _forbid(batch, node, route, ip, why)
    if ip not in {node.claim_ip, known_ip} - {None}:
        why = f"report token of {label(node)} sent from {ip}, an address the node is not known by"
        alarm(batch, node, why, ip, route)
        raise _forbid(batch, node, route, ip, f"refused and alarmed: {why}")
    age = (batch.now - node.report_at).total_seconds() if node.report_at else -1.0
    if age < quiet:
        wait = quiet - max(age, 0.0)
        error = Refused(
            f"{label(node)}: its answer files were served {max(age, 0):.0f} s ago; reports that "
            f"move the gate count from {quiet:g} s after that (rollout.report_quiet); retry in "
            f"{wait:.0f} s"
        )
        raise refuse(batch, node, mac, route, error, ip, retry_after=round(wait))
    # the state is checked by the action, after the body (health: released or starting;
    # joined: the state machine), so a refusal says what is wrong first
    node.last_seen = batch.now
    return node


def claim(mac: str, token: str | None, secret: str, ip: str | None) -> Action:
    """The agent claims its node for this boot phase: boot token + a secret of its own."""

    async def action(batch: Batch) -> dict[str, Any]:
        node = await find(batch, mac, "claim", ip)
        if not token or not token_matches(token, node.token):
            if token_matches(token, node.claim_prev):  # raced for this node's boot (security.md)
                why = "a claim with the boot token of an earlier boot script (two machines?)"
                alarm(batch, node, why, ip, "claim")
            why = f"not the boot token of {label(node)}'s latest boot script; PXE-boot again"
            raise _forbid(batch, node, "claim", ip, why)
        if not _phase_ok(batch, node):
            why = f"the boot token of {label(node)} belongs to an ended phase; PXE-boot again"
            raise _forbid(batch, node, "claim", ip, why)
        if node.claim is None:
            node.claim = token_digest(secret)
            node.claim_ip = ip
            node.last_seen = batch.now
            batch.record(
                eventlog.agent_report(
                    node.mac,
                    node.cluster,
                    node.state,
                    actor="agent",
                    ip=ip,
                    message=f"agent claimed the node for its {node.token_phase} phase",
                )
            )
            return {"mac": node.mac, "claimed": True, "changed": True}
        if token_matches(secret, node.claim):  # the agent's retry after a lost answer
            return {"mac": node.mac, "claimed": True, "changed": False}
        why = (
            f"second claim of this boot phase (first from {node.claim_ip}): two machines hold "
            "its boot token"
        )
        alarm(batch, node, why, ip, "claim")
        raise refuse(batch, node, mac, "claim", Refused(f"{label(node)}: refused, {why}"), ip)

    return action


def answer_file_fetch(
    mac: str, secret: str | None, name: str, ip: str | None, *, secret_file: bool, report: str
) -> Action:
    """An answer file for the claimed agent: secret files only while imaging, once per phase;
    serving one binds ``report`` (the report-token digest rendered into it) to the node."""

    async def action(batch: Batch) -> str:
        route = f"file {name}"
        node = await agent_node(batch, mac, secret, route, ip)
        if not secret_file:
            batch.record(eventlog.answer_file(mac, node.cluster, file=name, ip=ip))
            return "served"
        if S(node.state) not in (S.PXE, S.IMAGING):
            why = f"node is {node.state}; secret files are served only while imaging"
            raise _forbid(batch, node, route, ip, why)
        if await batch.secret_fetched(mac, node.claim or "", name):
            raise _forbid(batch, node, route, ip, "already served in this phase; reboot the node")
        batch.secret_fetch(mac, node.claim or "", name, ip)
        if node.report_token != report:
            node.report_token = report
            node.report_at = batch.now
        batch.record(eventlog.answer_file(mac, node.cluster, file=name, ip=ip, secret=True))
        return "served"

    return action
