"""The cluster gate and release policies. Pure: inputs are plain values, the clock is passed in.

Why a gate at all: the nodes of a cluster share storage. Two nodes that start their cluster
service before a cluster exists both try to own the disks and corrupt them. So the first node
starts alone; every other node waits (``held``) until the first node reports a healthy cluster
service (the cluster is *formed*); then held nodes are released by the cluster's policy:

- ``sequential``: one at a time; the next only after the previous one reports ``joined``.
- ``waves:N``: N at a time; the next wave after every node of the previous one joined.
- ``manual``: nobody automatically; the admin releases each node.

A failure the admin has not yet decided on stops every automatic release (``stopped``); a
failed first node stops them for good, until the admin retries it or resets the cluster. A first
node whose cluster reports itself unhealthy stops them too, until a healthy report (or a retry).

``complete`` means the cluster says so: for a cluster whose kind reports its member list
(``verify_members``), every node that says "joined" must also be up in the list the cluster
itself printed (``cluster node``, ``Get-ClusterNode``, ``crm_mon``), and nobody else may be.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from netdeploy.inventory import NodeState as S
from netdeploy.rollout.machine import IN_FLIGHT
from netdeploy.rollout.membership import compare


class Gate(StrEnum):
    """``Cluster.gate``: where the cluster's rollout stands."""

    WAITING = "waiting"  # the first node has not reported a healthy cluster service yet
    FORMED = "formed"  # it has; nobody else released yet (or manual policy)
    RELEASING = "releasing"  # held nodes are being released per policy
    COMPLETE = "complete"  # every node joined (or failed and the admin accepted it)
    STOPPED = "stopped"  # a failure stops automatic releases until the admin acts


class BadPolicy(ValueError):
    """A release policy string that is not sequential, waves:N or manual."""


@dataclass(frozen=True)
class Policy:
    """How many held nodes may be in flight at once; ``wave == 0`` means manual only."""

    wave: int

    @property
    def manual(self) -> bool:
        return self.wave == 0

    def __str__(self) -> str:
        return "manual" if self.manual else "sequential" if self.wave == 1 else f"waves:{self.wave}"


_POLICY = re.compile(r"^(sequential|manual|waves:([1-9][0-9]*))$")


def parse_policy(text: str) -> Policy:
    match = _POLICY.match(text.strip())
    if not match:
        raise BadPolicy(f"{text!r} is not a release policy; use sequential, waves:N or manual")
    if match.group(1) == "manual":
        return Policy(0)
    return Policy(int(match.group(2)) if match.group(2) else 1)


@dataclass(frozen=True)
class NodeView:
    mac: str
    hostname: str
    state: S
    stops_rollout: bool = False  # failed, and the admin has not decided yet
    message: str = ""  # the node's last reported reason (shown when it stops the gate)


@dataclass(frozen=True)
class ClusterView:
    name: str
    first_node: str  # hostname
    policy: Policy
    formed: bool  # the first node reported healthy (persisted as Cluster.formed_at)
    # the cluster's kind reports its own member list; complete only when it matches
    verify_members: bool = False
    members: tuple[dict[str, Any], ...] | None = None  # the latest list the cluster reported
    alarm: str = ""  # an identity alarm (docs/security.md): nobody is released until cleared


def cluster_view(cluster: Any) -> ClusterView:
    """The gate's view of a stored cluster row (``store.models.Cluster``)."""
    membership = cluster.membership or None
    return ClusterView(
        name=cluster.name,
        first_node=cluster.first_node,
        policy=parse_policy(cluster.release_policy),
        formed=cluster.formed_at is not None,
        verify_members=bool((cluster.settings or {}).get("kind")),
        members=tuple(membership["members"]) if membership else None,
        alarm=cluster.alarm or "",
    )


@dataclass(frozen=True)
class GateDecision:
    gate: Gate
    detail: str
    release: tuple[str, ...] = ()  # MACs to move held → released now, in this order


def natural_key(hostname: str) -> list[Any]:
    """``n2`` before ``n10``: the order an admin reads a node list in."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", hostname)]


def after_imaged(*, in_cluster: bool, is_first: bool) -> S:
    """Where a node goes the moment it is imaged: the first node starts alone, others wait."""
    if not in_cluster or is_first:
        return S.RELEASED  # first node alone; a standalone node has nobody to protect
    return S.HELD


def decide(cluster: ClusterView, nodes: list[NodeView]) -> GateDecision:
    """The gate state of ``cluster`` and which held nodes to release now.

    Called after every change that can matter (a node held, joined or failed, the first node
    healthy, an admin action) and by the periodic sweep, so a decision lost to a crash is
    simply made again after restart: the inputs all live in the store.
    """
    if cluster.alarm:
        return GateDecision(
            Gate.STOPPED,
            f"identity alarm: {cluster.alarm}. Nobody is released and the cluster is not "
            "formed until the admin checks the machines: `netdeploy retry NODE` re-images the "
            f"node, `netdeploy reset {cluster.name}` starts over",
        )
    first = next((n for n in nodes if n.hostname == cluster.first_node), None)
    if first is None:
        return GateDecision(
            Gate.STOPPED,
            f"first node {cluster.first_node!r} is not in the inventory; fix the config",
        )
    if first.state is S.FAILED:
        return GateDecision(
            Gate.STOPPED,
            f"first node {first.hostname} failed: nobody is released automatically; "
            f"`netdeploy retry {first.hostname}` re-images it, `netdeploy reset {cluster.name}` "
            "starts over",
        )
    blockers = [n for n in nodes if n.state is S.FAILED and n.stops_rollout]
    if blockers:
        names = ", ".join(sorted((n.hostname for n in blockers), key=natural_key))
        return GateDecision(
            Gate.STOPPED,
            f"{names} failed: automatic releases stopped until the admin decides "
            "(`netdeploy retry NODE` re-images it, `netdeploy fail NODE` gives it up, "
            "`netdeploy release NODE` releases a held node by hand)",
        )
    if first.state is S.UNHEALTHY:
        return GateDecision(
            Gate.STOPPED,
            f"first node {first.hostname} reports its cluster unhealthy: "
            f"{first.message or 'no reason given'}; nobody is released until a healthy report "
            f"(or `netdeploy retry {first.hostname}`)",
        )
    if not cluster.formed:
        return GateDecision(
            Gate.WAITING,
            f"waiting for first node {first.hostname} to report a healthy cluster service",
        )
    others = [n for n in nodes if n is not first]
    held = sorted((n for n in others if n.state is S.HELD), key=lambda n: natural_key(n.hostname))
    in_flight = [n for n in others if n.state in IN_FLIGHT]
    settled = all(n.state is S.JOINED or n.state is S.FAILED for n in nodes)
    if settled and first.state is S.JOINED:
        joined = sum(n.state is S.JOINED for n in nodes)
        failed = len(nodes) - joined
        note = f", {failed} failed (given up by the admin)" if failed else ""
        unverified = _membership_gap(cluster, nodes)
        if unverified:
            return GateDecision(
                Gate.RELEASING, f"{joined} of {len(nodes)} nodes say joined{note}; {unverified}"
            )
        seen = "; the cluster lists every one up" if cluster.verify_members else ""
        return GateDecision(Gate.COMPLETE, f"{joined} of {len(nodes)} nodes joined{note}{seen}")
    release: tuple[str, ...] = ()
    if not cluster.policy.manual and held and not in_flight:
        release = tuple(n.mac for n in held[: cluster.policy.wave])
    flying = len(in_flight) + len(release)
    waiting = len(held) - len(release)
    if not flying and not any(n.state in (S.JOINED, S.FAILED) for n in others):
        # nobody but the first node has started yet
        detail = f"formed by {first.hostname}; policy {cluster.policy}; {waiting} held"
        if cluster.policy.manual and waiting:
            detail += ": release them with `netdeploy release NODE`"
        return GateDecision(Gate.FORMED, detail, release)
    return GateDecision(
        Gate.RELEASING,
        f"policy {cluster.policy}: {flying} starting, {waiting} held",
        release,
    )


def _membership_gap(cluster: ClusterView, nodes: list[NodeView]) -> str:
    """Why the cluster's own member list does not (yet) show exactly the joined nodes; ""
    when it does, or when this kind of cluster reports no list."""
    if not cluster.verify_members:
        return ""
    if cluster.members is None:
        return "waiting for the cluster's own member list (report script)"
    expected = [n.hostname for n in nodes if n.state is S.JOINED]
    seen = compare(list(cluster.members), [n.hostname for n in nodes], expected)
    gaps = []
    if seen.missing:
        names = ", ".join(sorted(seen.missing, key=natural_key))
        gaps.append(f"the cluster does not list {names} as up")
    if seen.strangers:
        gaps.append(f"the cluster lists {', '.join(seen.strangers)}, not configured in it")
    return "; ".join(gaps) + ("; not complete until it does" if gaps else "")


# ---------------------------------------------------------------- timeouts

# Which timeout watches which state, measured from the moment the node entered it.
PHASE_OF: dict[S, str] = {
    S.PXE: "imaging",  # booted but no agent report: counts against the imaging budget
    S.IMAGING: "imaging",
    S.RELEASED: "starting",  # released but never said it is starting
    S.STARTING: "joining",  # starting but never joined
}
DEFAULT_TIMEOUTS: dict[str, float] = {"imaging": 3600.0, "starting": 1800.0, "joining": 1800.0}


def as_utc(when: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def overdue(
    state: S | str, since: datetime, timeouts: dict[str, Any] | None, now: datetime
) -> str | None:
    """The phase whose timeout ``state`` has exceeded at ``now``, else None."""
    phase = PHASE_OF.get(S(state))
    if phase is None:
        return None
    limit = float((timeouts or {}).get(phase, DEFAULT_TIMEOUTS[phase]))
    return phase if (as_utc(now) - as_utc(since)).total_seconds() > limit else None
