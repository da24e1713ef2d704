"""What a boot request changes: the writer's action behind every per-MAC boot script.

The boot decision itself is the boot module's (netdeploy.boot.plan, handed in as ``decide``);
what it implies for the rollout is decided here, in the writer, in one transaction with its
event rows: an unknown MAC is recorded as ``discovered``; booting the agent moves
``registered`` to ``pxe`` (DESIGN) unless the admin marked the machine for capture (a
capture boot is no rollout step: netdeploy.images.capture); an agent plan gets a fresh boot
token, whose digest replaces the node's (the previous token and its claim stop working), bound
to the node's rollout number and to the phase of the plan (netdeploy.rollout.identity). A
failed node stays failed until the admin retries it (decision 0002); every other state is left
as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from netdeploy import eventlog
from netdeploy.inventory import NodeState as S
from netdeploy.rollout.discovery import DiscoveryLimits
from netdeploy.rollout.engine import Action, Batch
from netdeploy.rollout.identity import new_boot_token, rollout_of
from netdeploy.rollout.rows import NodeRow
from netdeploy.store.models import Capture, Cluster
from netdeploy.tokens import issue_token

ADVANCE_ON_BOOT: dict[S, S] = {S.REGISTERED: S.PXE}


class Decision(Protocol):
    """What the boot decision answers (netdeploy.boot.plan.BootPlan has these)."""

    @property
    def action(self) -> str: ...
    @property
    def why(self) -> str: ...
    @property
    def boots_agent(self) -> bool: ...


# (node as it is after the request's own changes, or None for an unknown MAC; its cluster;
# the admin's capture mark, if any)
Decide = Callable[[NodeRow | None, Cluster | None, Capture | None], Any]


def boot_request(
    mac: str, decide: Decide, *, via: str, path: str, ip: str, limits: DiscoveryLimits
) -> Action:
    """Returns ``(decision, token)``: the token is the plain one for the kernel command line,
    None unless the decision boots the agent. Unknown MACs are recorded within ``limits``
    (netdeploy.rollout.discovery): bounded rows, folded events."""

    async def action(batch: Batch) -> tuple[Any, str | None]:
        node = await batch.node(mac)
        first_boot = node is None  # the plan says so: "not in the inventory, recorded"
        capture = await batch.session.get(Capture, mac)
        log = True
        if node is None:
            log, unlogged = limits.new_mac(mac, batch.now)
            if unlogged:
                batch.record(eventlog.discovery_folded(unlogged, max_rows=limits.max_rows))
            node = await batch.discover(
                mac,
                reason=f"unknown MAC booted via {via} from {ip}",
                log=log,
                max_rows=limits.max_rows,
            )
        elif node.state == S.DISCOVERED:
            log = limits.boot_due(mac, batch.now)  # once per record_interval
        else:
            advance = ADVANCE_ON_BOOT.get(S(node.state))
            if advance is not None and capture is None:
                batch.move(node, advance, reason=f"boot script fetched via {via}")
        cluster = batch.cluster_of(node)
        decision: Decision = decide(None if first_boot else node, cluster, capture)
        token = None
        if decision.boots_agent:  # bound to this node, its rollout and this plan's phase
            token, digest = issue_token()
            cluster = batch.cluster_of(node)
            new_boot_token(node, digest, str(decision.action), rollout_of(cluster))
        node.last_seen = batch.now
        node.last_ip = ip
        if log:
            batch.record(
                eventlog.boot_request(
                    mac,
                    node.cluster,
                    via=via,
                    path=path,
                    ip=ip,
                    decision=str(decision.action),
                    why=decision.why,
                )
            )
        return decision, token

    return action
