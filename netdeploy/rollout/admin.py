"""Admin decisions: release, retry, fail a node; reset a cluster. Actions for the writer."""

from __future__ import annotations

from typing import Any

from netdeploy import eventlog
from netdeploy.inventory import NodeState as S
from netdeploy.rollout import gate as G
from netdeploy.rollout.actions import NodeOutcome, label
from netdeploy.rollout.engine import Action, Batch
from netdeploy.rollout.errors import NotFound, Refused
from netdeploy.rollout.machine import RELEASED_STATES
from netdeploy.rollout.rows import NodeRow
from netdeploy.store.models import Cluster


async def _admin_node(batch: Batch, name: str) -> NodeRow:
    node = await batch.node_by_name(name)
    if node is None:
        raise NotFound(f"no node with MAC or host name {name!r}; `netdeploy nodes` lists them")
    return node


def _admin_event(batch: Batch, node: NodeRow, action: str, actor: str, **detail: Any) -> None:
    batch.record(eventlog.admin_action(node.mac, node.cluster, node.state, action, actor, **detail))


def release(name: str, actor: str, *, force: bool = False) -> Action:
    """The admin releases a held node (manual policy, or past a stopped gate)."""

    async def action(batch: Batch) -> NodeOutcome:
        node = await _admin_node(batch, name)
        cluster = batch.cluster_of(node)
        if node.state in RELEASED_STATES:
            raise Refused(f"{label(node)} is already {node.state}; it is never released twice")
        if node.state not in (S.HELD, S.IMAGED):
            hint = " (`netdeploy retry` re-images a failed node)" if node.state == S.FAILED else ""
            raise Refused(f"{label(node)} is {node.state}; only a held node can be released{hint}")
        members = await batch.members(cluster.name) if cluster is not None else []
        if cluster is not None and node.hostname != cluster.first_node and not force:
            first = next((n for n in members if n.hostname == cluster.first_node), None)
            first_state = first.state if first else "missing"
            if cluster.formed_at is None or first_state not in (S.JOINED, S.STARTING, S.RELEASED):
                raise Refused(
                    f"cluster {cluster.name} is not formed (first node {cluster.first_node} is "
                    f"{first_state}): releasing {node.hostname} now would start two nodes on "
                    "shared storage unprotected. Wait for the first node's health report, or "
                    "pass --force if you are sure"
                )
        seq = max((n.release_seq or 0 for n in members), default=-1) + 1
        node.release_seq = seq
        batch.move(
            node,
            S.RELEASED,
            reason=f"released by {actor}",
            detail={"actor": actor, "force": force, "release_seq": seq},
        )
        return NodeOutcome(node, cluster, changed=True)

    return action


def retry(name: str, actor: str) -> Action:
    """The admin retries a failed node (or the node an identity alarm names): it is re-imaged
    on its next PXE boot, with new credentials; the alarm is cleared."""

    async def action(batch: Batch) -> NodeOutcome:
        node = await _admin_node(batch, name)
        cluster = batch.cluster_of(node)
        alarmed = cluster is not None and cluster.alarm.startswith(f"{node.mac}:")
        if node.state not in (S.FAILED, S.UNHEALTHY) and not alarmed:
            raise Refused(
                f"{label(node)} is {node.state}; only a failed node can be retried "
                "(or an unhealthy first node, or a node whose identity raised an alarm)"
            )
        if cluster is not None and alarmed:
            _admin_event(batch, node, "clear-alarm", actor, alarm=cluster.alarm)
            cluster.alarm = ""
            batch.dirty.add(cluster.name)
        node.stops_rollout = False
        node.release_seq = None
        node.message = ""
        cluster = batch.cluster_of(node)
        if cluster is not None and node.hostname == cluster.first_node:
            # first node alone, again: nobody is released until it has formed the cluster anew
            cluster.formed_at = None
            cluster.membership = None
            batch.dirty.add(cluster.name)
        batch.move(
            node,
            S.REGISTERED,
            reason=f"retry by {actor}: re-image on next PXE boot",
            detail={"actor": actor},
            force=alarmed,
        )
        return NodeOutcome(node, batch.cluster_of(node), changed=True)

    return action


def fail(name: str, actor: str, reason: str) -> Action:
    """The admin gives a node up: failed, and (unlike a timeout) no longer stops the rollout."""

    async def action(batch: Batch) -> NodeOutcome:
        node = await _admin_node(batch, name)
        cluster = batch.cluster_of(node)
        if node.state == S.DISCOVERED:
            raise Refused(f"{label(node)} is only discovered; add it to the config first")
        if node.state == S.FAILED:
            if not node.stops_rollout:
                return NodeOutcome(node, cluster, changed=False)
            node.stops_rollout = False  # the admin has decided: the rollout goes on without it
            _admin_event(batch, node, "fail", actor, reason=reason)
            if node.cluster:
                batch.dirty.add(node.cluster)
            return NodeOutcome(node, cluster, changed=True)
        node.stops_rollout = False
        node.message = f"failed by {actor}: {reason}"  # the waiting agent shows it
        batch.move(
            node,
            S.FAILED,
            reason=f"failed by {actor}: {reason}",
            detail={"actor": actor},
            force=True,
        )
        return NodeOutcome(node, cluster, changed=True)

    return action


def reset_cluster(name: str, actor: str) -> Action:
    """Start a new rollout: every node back to registered (re-imaged on next PXE boot)."""

    async def action(batch: Batch) -> Cluster:
        cluster = batch.clusters.get(name)
        if cluster is None:
            known = ", ".join(sorted(batch.clusters)) or "none"
            raise NotFound(f"no cluster {name!r}; clusters: {known}")
        for node in await batch.members(name):
            node.stops_rollout = False
            node.release_seq = None
            node.message = ""
            if node.state != S.REGISTERED:
                batch.move(
                    node,
                    S.REGISTERED,
                    reason=f"cluster reset by {actor}",
                    detail={"actor": actor},
                    force=True,
                )
        cluster.formed_at = None
        cluster.membership = None  # a new rollout: the cluster has to show its members anew
        cluster.alarm = ""  # a new rollout: new credentials for every node
        cluster.rollout += 1
        batch.set_gate(
            cluster,
            G.Gate.WAITING,
            f"reset by {actor}: rollout {cluster.rollout}",
            actor=actor,
            rollout=cluster.rollout,
        )
        batch.dirty.add(name)
        return cluster

    return action
