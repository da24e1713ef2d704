"""The boot service: the one place every protocol asks "what does this machine get now?".

pixiecore's ``Booter`` and smee's ``BackendReader`` are the model: a small contract that TFTP
(:mod:`netdeploy.boot.tftp`), HTTP (``netdeploy.http.boot_routes``) and ProxyDHCP
(``netdeploy.dhcp``) call, so none of them decides anything on its own:

- :meth:`BootService.answer` — a machine fetched its per-MAC boot script (HTTP or TFTP). The
  decision moves ``registered`` to ``pxe``, records an unknown MAC as ``discovered`` and issues
  a fresh boot token; those are changes of node state and token, so they run as one action of
  the rollout writer (netdeploy.rollout.booting: one transaction with their event rows).
- :meth:`BootService.decide` — the same decision, read only (ProxyDHCP asks it per packet).
- :meth:`BootService.program_for` — which program a PXE firmware loads (boot/programs.py).
- :meth:`BootService.first_stage` — the generic first stage, recorded by client address.

Every request leaves one ``boot`` event with what it asked (``via``, ``path``, ``ip``) and what
we decided and why, so an admin can follow a machine that "does nothing" request by request
(PEERS.md: silent boot failures).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from netdeploy import eventlog
from netdeploy.boot.hardware import HardwareVerdict, verdict
from netdeploy.boot.plan import BootPlan, BootUrls, NodeFacts, boot_plan
from netdeploy.boot.programs import BootChoice, FirmwareClient, boot_program
from netdeploy.context import Context
from netdeploy.inventory import NodeState
from netdeploy.rollout import booting
from netdeploy.rollout.discovery import DiscoveryLimits
from netdeploy.rollout.errors import Unavailable
from netdeploy.rollout.rows import NodeRow
from netdeploy.store.models import Capture, Cluster, MachineFacts, Node, utcnow
from netdeploy.store.retry import read_retrying

log = logging.getLogger("netdeploy.boot")

BOOT_REQUESTS = Counter(
    "netdeploy_boot_requests",
    "Boot requests answered, by protocol and decision (chain, image, wait, discover, local)",
    ["via", "decision"],
)


@dataclass(frozen=True)
class BootAnswer:
    plan: BootPlan
    token: str | None  # plain token for the kernel command line; only for agent plans


def facts_of(
    node: Node | NodeRow | None,
    mac: str,
    cluster: Cluster | None,
    capture: Capture | None = None,
    hardware_refusal: str = "",
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
        hardware_refusal=hardware_refusal,
    )


async def machine_facts(ctx: Context, mac: str) -> dict[str, Any] | None:
    """What the agent last reported about ``mac``'s hardware, or None."""
    async with ctx.sessions() as session:
        row = await session.get(MachineFacts, mac)
    return dict(row.facts) if row is not None else None


async def hardware_of(ctx: Context, mac: str) -> HardwareVerdict:
    """The node's hardware profile matched to its reported facts, and any refusal."""
    cfg = ctx.config
    return verdict(cfg, cfg.node_by_mac(mac), await machine_facts(ctx, mac))


class BootService:
    """Boot decisions for every protocol, over the store and the rollout writer."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.urls = BootUrls(ctx.public_url)
        # unknown MACs and first-stage requests: bounded rows, folded events (issue 15)
        self.discovery = DiscoveryLimits(ctx.config.discovery)

    async def answer(self, mac: str, *, via: str, path: str, ip: str) -> BootAnswer:
        """Decide what ``mac`` (canonical) boots now, apply the implied changes, record it.

        Agent plans get a fresh token: its digest replaces ``Node.token``, the plain token goes
        on the kernel command line only.
        """

        refusal = (await hardware_of(self.ctx, mac)).refusal

        def decide(
            node: NodeRow | None, cluster: Cluster | None, capture: Capture | None
        ) -> BootPlan:
            return boot_plan(facts_of(node, mac, cluster, capture, refusal), self.urls)

        action = booting.boot_request(mac, decide, via=via, path=path, ip=ip, limits=self.discovery)
        try:
            plan, token = await self.ctx.rollout.run(action, [mac])
        except Unavailable:
            # another server recorded the same unknown MAC in the same instant: now it exists
            plan, token = await self.ctx.rollout.run(action, [mac])
        BOOT_REQUESTS.labels(via, plan.action.value).inc()
        return BootAnswer(plan, token)

    async def decide(self, mac: str) -> BootPlan:
        """The same decision as :meth:`answer`, read only: changes and records nothing."""

        async def read() -> tuple[Node | None, Cluster | None, Capture | None]:
            async with self.ctx.sessions() as session:
                node = await session.get(Node, mac)
                cluster = (
                    await session.get(Cluster, node.cluster) if node and node.cluster else None
                )
                return node, cluster, await session.get(Capture, mac)

        node, cluster, capture = await read_retrying(read)  # a busy store never fails a boot
        refusal = (await hardware_of(self.ctx, mac)).refusal if node is not None else ""
        return boot_plan(facts_of(node, mac, cluster, capture, refusal), self.urls)

    async def program_for(self, client: FirmwareClient) -> BootChoice:
        """The boot program for a PXE firmware (ProxyDHCP), from the MAC's boot plan."""
        choice = boot_program(client, await self.decide(client.mac), self.ctx.public_url)
        BOOT_REQUESTS.labels("dhcp", "local" if choice.boot_file is None else "chain").inc()
        return choice

    async def first_stage(self, *, via: str, path: str, ip: str) -> None:
        """The generic first stage names no MAC; record it by client address (one row per
        address per ``[discovery] record_interval``). Recording never fails the boot."""
        BOOT_REQUESTS.labels(via, "chain").inc()
        if not self.discovery.first_stage_due(ip, utcnow()):
            return
        event = eventlog.boot_request(
            None,
            None,
            via=via,
            path=path,
            ip=ip,
            decision="chain",
            why="first stage: chain to the per-MAC script",
        )
        try:
            async with self.ctx.sessions() as session, session.begin():
                session.add(event)
        except OperationalError as exc:  # busy or unreachable: the boot goes on unrecorded
            log.warning("first-stage request from %s not recorded: %s", ip, exc.orig or exc)
            return
        self.ctx.bus.publish(event)

    async def machines_at(self, ips: set[str]) -> dict[str, tuple[str, str | None]]:
        """Which machine each client address belongs to: the node last seen there (several
        nodes may share an address behind NAT or QEMU slirp: the latest seen wins)."""
        async with self.ctx.sessions() as session:
            rows = await session.execute(
                select(Node.last_ip, Node.mac, Node.cluster)
                .where(Node.last_ip.in_(ips))
                .order_by(Node.last_seen)
            )
            return {ip: (mac, cluster) for ip, mac, cluster in rows if ip is not None}

    async def clusters_of(self, macs: set[str]) -> dict[str, str | None]:
        async with self.ctx.sessions() as session:
            rows = await session.execute(select(Node.mac, Node.cluster).where(Node.mac.in_(macs)))
            return {mac: cluster for mac, cluster in rows}
