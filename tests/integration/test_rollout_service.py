"""The rollout core against a real SQLite store (no HTTP): races, timeouts, admin decisions."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from netdeploy.config import load_config
from netdeploy.context import Context, Ports
from netdeploy.eventlog import of_node
from netdeploy.inventory import NodeState as S
from netdeploy.rollout import actions, service
from netdeploy.rollout.errors import Forbidden, NotFound, Refused, Unavailable
from netdeploy.rollout.reports import AgentReport, HealthReport
from netdeploy.server import open_context
from netdeploy.store.models import Cluster, Event, Node, utcnow
from tests.integration.credentials import seed_credentials
from tests.integration.rollout_support import lab_config, mac_of, prepare_nodes, releases

AGENT_IP = "127.0.0.1"  # where prepare_nodes' seeded claims come from (tests/credentials.py)


class Lab:
    """A cluster of nodes n1..nN driven through the rollout engine as agents would."""

    def __init__(self, ctx: Context, tokens: dict[str, str]):
        self.ctx, self.tokens = ctx, tokens
        self.engine = ctx.rollout

    async def report(self, i: int, state: str, progress: float | None = None):
        mac = mac_of(i)
        report = AgentReport(S(state), progress)
        action = actions.agent_report(mac, self.tokens[mac], report, AGENT_IP)
        return await self.engine.run(action, [mac])

    async def health(self, i: int, healthy: bool = True):
        mac = mac_of(i)
        action = actions.health(mac, self.tokens[mac], HealthReport(healthy), AGENT_IP)
        return await self.engine.run(action, [mac])

    async def reseed(self, i: int) -> None:
        """New credentials, as a new PXE boot and claim would give the node."""
        async with self.ctx.sessions() as session, session.begin():
            node = await session.get(Node, mac_of(i))
            cluster = await session.get(Cluster, node.cluster) if node.cluster else None
            self.tokens[node.mac] = seed_credentials(node, cluster.rollout if cluster else 0)

    async def image(self, *nodes: int) -> None:
        for i in nodes:
            await self.report(i, "imaging", 0)
            await self.report(i, "imaged")

    async def states(self) -> dict[str, str]:
        async with self.ctx.sessions() as session:
            rows = await session.scalars(select(Node).where(Node.cluster == "clu"))
            return {n.hostname: n.state for n in rows}

    async def cluster(self) -> Cluster:
        async with self.ctx.sessions() as session:
            return await session.get(Cluster, "clu")

    async def path(self, i: int) -> list[str]:
        """The node's states in order, as its timeline reads them (release waves included)."""
        async with self.ctx.sessions() as session:
            query = select(Event).where(Event.kind == "state")
            rows = await of_node(session, query, mac_of(i), "clu", 1000)
            return [ev.to_state for ev in reversed(rows)]

    async def releases(self, mac: str | None = None) -> int:
        """Releases the record holds (of ``mac``, or of every node)."""
        async with self.ctx.sessions() as session:
            counts = await releases(session)
        return counts[mac] if mac else counts.total()

    async def count(self, **where: object) -> int:
        async with self.ctx.sessions() as session:
            query = select(func.count()).select_from(Event)
            for key, value in where.items():
                query = query.where(getattr(Event, key) == value)
            return await session.scalar(query)


async def make_lab(tmp_path: Path, nodes: int = 3, **options: object) -> Lab:
    config = lab_config(tmp_path, nodes, **options)  # type: ignore[arg-type]
    tokens = await prepare_nodes(config)
    ctx = await open_context(load_config(config), Ports(http=1, tftp=1))
    return Lab(ctx, tokens)


@pytest.fixture
async def lab(tmp_path: Path):
    lab = await make_lab(tmp_path)
    yield lab
    await lab.engine.stop()
    await lab.ctx.close()


async def test_three_nodes_sequential_with_an_event_row_per_transition(lab: Lab) -> None:
    await lab.image(1, 2, 3)
    assert await lab.states() == {"n1": "released", "n2": "held", "n3": "held"}
    await lab.report(1, "starting")
    await lab.health(1)
    assert await lab.states() == {"n1": "joined", "n2": "released", "n3": "held"}
    await lab.report(2, "starting")
    assert (await lab.states())["n3"] == "held"  # sequential: n2 has not joined yet
    await lab.report(2, "joined")
    assert (await lab.states())["n3"] == "released"
    await lab.report(3, "starting")
    await lab.report(3, "joined")
    assert (await lab.cluster()).gate == "complete"
    # every transition is one row, in order; the first node never waits in held
    tail = ["released", "starting", "joined"]
    assert await lab.path(1) == ["registered", "pxe", "imaging", "imaged", *tail]
    assert await lab.path(2) == ["registered", "pxe", "imaging", "imaged", "held", *tail]
    assert await lab.releases() == 3
    gates = await lab.count(kind="gate")
    assert gates == 3  # waiting→formed→releasing→complete


async def test_health_twice_forms_the_cluster_once(lab: Lab) -> None:
    await lab.image(1, 2, 3)
    await lab.report(1, "starting")
    first, second = await asyncio.gather(lab.health(1), lab.health(1), return_exceptions=True)
    # the first node keeps reporting its cluster's view (docs/security.md, "What the first node
    # keeps"): a repeat, in the same batch or a later one, is accepted and changes nothing
    assert first.changed is True
    assert not isinstance(second, BaseException) and second.changed is False
    assert (await lab.health(1)).changed is False  # a later batch
    assert await lab.count(kind="gate", to_state="formed") == 1
    assert await lab.releases() == 2  # n1 and n2 only


async def test_concurrent_joins_never_release_past_the_wave(tmp_path: Path) -> None:
    lab = await make_lab(tmp_path, 8, release="waves:3")
    try:
        await lab.image(*range(1, 9))
        await lab.health(1)
        states = await lab.states()
        wave = [h for h, s in states.items() if s == "released"]
        assert sorted(wave) == ["n2", "n3", "n4"]
        # the whole wave joins at once (one batch): exactly one next wave of 3
        await asyncio.gather(*(lab.report(int(h[1:]), "joined") for h in wave))
        states = await lab.states()
        assert sorted(h for h, s in states.items() if s == "released") == ["n5", "n6", "n7"]
        assert await lab.releases() == 7
    finally:
        await lab.engine.stop()
        await lab.ctx.close()


async def test_a_held_node_rebooting_stays_held(lab: Lab) -> None:
    await lab.image(1, 2)
    before = await lab.count(kind="state")
    outcome = await lab.report(2, "imaged")  # its wait-mode agent says so again
    assert outcome.changed is False and outcome.node.state == "held"
    with pytest.raises(Refused, match="held"):
        await lab.report(2, "starting")  # it must not run before release
    assert (await lab.states())["n2"] == "held"
    assert await lab.count(kind="state") == before
    alarm = await lab.count(kind="rejected", mac=mac_of(2))
    assert alarm == 1


async def test_first_node_failing_stops_everything_until_retried(lab: Lab) -> None:
    await lab.image(1, 2, 3)
    await lab.report(1, "failed")
    assert (await lab.cluster()).gate == "stopped"
    with pytest.raises(Forbidden):  # every credential of n1 died with its failure
        await lab.health(1)
    await service.sweep(lab.ctx, utcnow() + timedelta(hours=5))  # settles every gate
    assert await lab.states() == {"n1": "failed", "n2": "held", "n3": "held"}
    with pytest.raises(Refused, match="not formed"):
        await service.release(lab.ctx, "n2", "admin:test")
    # the admin retries: n1 is re-imaged and starts alone again
    node = await service.retry(lab.ctx, "n1", "admin:test")
    assert node.state == "registered"
    await lab.ctx.rollout.run(_pxe(mac_of(1)))
    await lab.reseed(1)  # its new boot script and claim
    await lab.image(1)
    await lab.health(1)
    assert await lab.states() == {"n1": "joined", "n2": "released", "n3": "held"}


def _pxe(mac: str):
    """What the boot helper does when the node PXE-boots (registered → pxe)."""

    async def action(batch):
        node = await batch.node(mac)
        batch.move(node, S.PXE, reason="test: PXE boot")

    return action


async def test_timeouts_fail_nodes_and_stop_releases_until_the_admin_decides(
    tmp_path: Path,
) -> None:
    lab = await make_lab(tmp_path, 4, timeouts=(50, 10, 20))
    try:
        await lab.image(1, 2, 3)  # n4 stays in pxe
        await lab.health(1)
        assert (await lab.states())["n2"] == "released"
        later = utcnow() + timedelta(seconds=15)  # n2: released for > starting (10 s)
        assert await service.sweep(lab.ctx, later) == [mac_of(2)]
        cluster = await lab.cluster()
        assert cluster.gate == "stopped" and "n2 failed" in cluster.gate_detail
        failed = await lab.count(kind="state", to_state="failed")
        assert failed == 1
        assert (await lab.states())["n3"] == "held"  # no automatic release past a failure
        # n4 never reported: the imaging timeout (50 s) catches it
        assert await service.sweep(lab.ctx, utcnow() + timedelta(seconds=60)) == [mac_of(4)]
        # the admin gives n2 up; n4 is still undecided, so nothing moves yet
        await service.fail(lab.ctx, "n2", "admin:test", "bad disk")
        assert (await lab.states())["n3"] == "held"
        await service.fail(lab.ctx, mac_of(4), "admin:test", "no longer needed")
        assert (await lab.states())["n3"] == "released"
        again = await service.fail(lab.ctx, "n2", "admin:test", "again")
        assert again.state == "failed"
    finally:
        await lab.engine.stop()
        await lab.ctx.close()


async def test_admin_release_is_safe_and_never_twice(tmp_path: Path) -> None:
    lab = await make_lab(tmp_path, 3, release="manual")
    try:
        await lab.image(1, 2, 3)
        with pytest.raises(Refused, match="unprotected"):
            await service.release(lab.ctx, "n2", "admin:test")
        await lab.health(1)
        assert (await lab.states())["n2"] == "held"  # manual: the gate waits for the admin
        node = await service.release(lab.ctx, mac_of(2), "admin:test")
        assert node.state == "released" and node.release_seq == 1
        with pytest.raises(Refused, match="never released twice"):
            await service.release(lab.ctx, "n2", "admin:test")
        with pytest.raises(NotFound):
            await service.release(lab.ctx, "nope", "admin:test")
        with pytest.raises(Refused, match="only a failed node"):
            await service.retry(lab.ctx, "n3", "admin:test")
        forced = await service.release(lab.ctx, "n3", "admin:test", force=True)
        assert forced.release_seq == 2
    finally:
        await lab.engine.stop()
        await lab.ctx.close()


async def test_reset_starts_a_new_rollout(lab: Lab) -> None:
    await lab.image(1, 2, 3)
    await lab.health(1)
    cluster = await service.reset_cluster(lab.ctx, "clu", "admin:test")
    assert cluster.gate == "waiting" and cluster.rollout == 2 and cluster.formed_at is None
    assert set((await lab.states()).values()) == {"registered"}
    with pytest.raises(NotFound, match="clusters: clu"):
        await service.reset_cluster(lab.ctx, "nope", "admin:test")


async def test_wrong_tokens_and_unknown_nodes_are_refused_and_recorded(lab: Lab) -> None:
    bad = actions.agent_report(mac_of(1), "guess", AgentReport(S.IMAGING, 1.0), "10.0.0.9")
    with pytest.raises(Forbidden, match="wrong or stale credential"):
        await lab.engine.run(bad, [mac_of(1)])
    with pytest.raises(Forbidden, match="no credential"):
        await lab.engine.run(actions.gate_check(mac_of(1), None, None), [mac_of(1)])
    ghost = mac_of(99)
    with pytest.raises(NotFound, match=ghost):
        await lab.engine.run(actions.gate_check(ghost, "x", None), [ghost])
    assert await lab.count(kind="auth", mac=mac_of(1)) == 2
    assert await lab.count(kind="rejected", mac=ghost) == 1
    assert (await lab.states())["n1"] == "pxe"


async def test_one_broken_action_does_not_lose_the_batch(lab: Lab) -> None:
    async def broken(batch):
        raise RuntimeError("bug")

    results = await asyncio.gather(
        lab.report(1, "imaging", 10),
        lab.engine.run(broken),
        lab.report(2, "imaging", 20),
        return_exceptions=True,
    )
    assert isinstance(results[1], Unavailable)
    assert results[0].node.progress == 10 and results[2].node.progress == 20
    assert (await lab.states())["n2"] == "imaging"
