"""A real netdeploy HTTP server in the test's own event loop, and ways to move its nodes.

The server listens on a loopback socket like `netdeploy serve` does (same ``open_context`` and
``build_app``); running it in-process lets a test play the agent and the rollout service by
changing the store the way they do (``set_state``, commit, then publish on the bus).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, web
from sqlalchemy import select

from netdeploy import eventlog
from netdeploy.config import DashboardConfig, load_config
from netdeploy.context import Context, Ports
from netdeploy.events import EventBus
from netdeploy.http.app import build_app
from netdeploy.rollout.state import set_state
from netdeploy.server import open_context
from netdeploy.store.models import Cluster, Event, Node, utcnow
from tests.conftest import DEMO_CONFIG, free_port
from tests.integration.credentials import seed_credentials

SQL_N1, SQL_N2, SQL_N3, WEB_1 = (
    "52:54:00:00:10:01",
    "52:54:00:00:10:02",
    "52:54:00:00:10:03",
    "52:54:00:00:20:01",
)


@dataclass
class Running:
    ctx: Context
    url: str

    async def login(self, client: ClientSession) -> str:
        """Log ``client`` in; return the CSRF token from the page."""
        async with client.post(self.url + "/login", data={"token": self.ctx.admin_token}) as r:
            assert r.status == 200, await r.text()  # 303 followed to the page
            return csrf_of(await r.text())


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]{64})"', page)
    assert match, "no CSRF token on the page"
    return match.group(1)


@contextlib.asynccontextmanager
async def running_server(
    tmp_path: Path, *, public_read: bool = False, bus_queue: int | None = None
) -> AsyncIterator[Running]:
    port = free_port()
    cfg = load_config(
        DEMO_CONFIG,
        state_dir=tmp_path / "state",
        database=f"sqlite:///{tmp_path}/state/netdeploy.db",
        bind="127.0.0.1",
        http_port=port,
    )
    cfg = cfg.model_copy(update={"dashboard": DashboardConfig(public_read=public_read)})
    bus = EventBus(queue_size=bus_queue) if bus_queue is not None else None
    ctx = await open_context(cfg, Ports(http=port, tftp=free_port()), bus=bus)
    runner = web.AppRunner(build_app(ctx), shutdown_timeout=2)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield Running(ctx, f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()
        await ctx.close()


async def move(ctx: Context, mac: str, to: str, *, force: bool = True, **detail: Any) -> Event:
    """Change a node's state the way the rollout service does: row + event, commit, publish."""
    async with ctx.sessions() as session:
        node = await session.get(Node, mac)
        assert node is not None
        event = set_state(session, node, to, reason=detail.pop("reason", "test"), force=force)
        event.detail = {**event.detail, **detail}
        if "message" in detail:
            node.message = detail["message"]
        await session.commit()
    ctx.bus.publish(event)
    return event


async def report(ctx: Context, mac: str, **detail: Any) -> Event:
    """A progress/message report as an agent makes it: node columns + one event row."""
    async with ctx.sessions() as session:
        node = await session.get(Node, mac)
        assert node is not None
        if "progress" in detail:
            node.progress = detail["progress"]
        if "message" in detail:
            node.message = detail["message"]
        event = Event(kind="progress", mac=mac, cluster=node.cluster, detail=detail)
        session.add(event)
        await session.commit()
    ctx.bus.publish(event)
    return event


async def state_of(ctx: Context, mac: str) -> str:
    async with ctx.sessions() as session:
        return (await session.get(Node, mac)).state  # type: ignore[union-attr]


async def gate_of(ctx: Context, cluster: str) -> str:
    async with ctx.sessions() as session:
        return (await session.get(Cluster, cluster)).gate  # type: ignore[union-attr]


async def event_count(ctx: Context) -> int:
    async with ctx.sessions() as session:
        return len((await session.scalars(select(Event.id))).all())


async def seed_nodes(ctx: Context, count: int, cluster: str = "sqlclu") -> list[str]:
    """Add ``count`` members to ``cluster`` straight into the store (a 500-node rack)."""
    macs = [f"52:54:01:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}" for i in range(count)]
    async with ctx.sessions() as session:
        for i, mac in enumerate(macs):
            session.add(
                Node(mac=mac, hostname=f"rack-{i:03d}", cluster=cluster, state="registered")
            )
        await session.commit()
    return macs


async def agent_token(ctx: Context, mac: str) -> str:
    """Give a node credentials as its PXE boot and claim would; return the plain value."""
    async with ctx.sessions() as session:
        node = await session.get(Node, mac)
        assert node is not None
        cluster = await session.get(Cluster, node.cluster) if node.cluster else None
        plain = seed_credentials(node, cluster.rollout if cluster else 0)
        await session.commit()
    return plain


async def agent_event(url: str, mac: str, token: str, **body: Any) -> dict[str, Any]:
    """``POST /api/nodes/{mac}/events`` exactly as the imaging agent sends it."""
    async with (
        ClientSession() as client,
        client.post(
            f"{url}/api/nodes/{mac}/events",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        ) as response,
    ):
        answer = await response.json()
        assert response.status == 200, answer
        return answer


async def form_cluster(ctx: Context, name: str = "sqlclu") -> None:
    """The first node has joined and reported healthy: the cluster is formed."""
    async with ctx.sessions() as session:
        cluster = await session.get(Cluster, name)
        assert cluster is not None
        first = await session.scalar(select(Node).where(Node.hostname == cluster.first_node))
        assert first is not None
        event = set_state(session, first, "joined", reason="test: first node joined", force=True)
        cluster.formed_at, cluster.gate = utcnow(), "formed"
        await session.commit()
    ctx.bus.publish(event)


# a 500-node rack in mixed states (tests/browser/test_triage_browser.py, bench/dashboard.py)
FAILED = [17, 230, 470]
STALE = [5, 301, 402, 480]


async def mixed_rack(ctx: Context) -> list[str]:
    """A rack of 500 nodes in all (the demo config's own and seeded members) in mixed states:
    most imaging or held, 3 failed, 4 frozen while imaging."""
    macs = await seed_nodes(ctx, 500 - len(ctx.config.nodes))
    now = utcnow()
    async with ctx.sessions() as session:
        for i, mac in enumerate(macs):
            node = await session.get(Node, mac)
            assert node is not None
            if i in FAILED:
                node.state, node.message = "failed", "image checksum mismatch"
                session.add(
                    eventlog.state_change(mac, "sqlclu", "imaging", "failed", "bad checksum")
                )
            elif i in STALE:
                node.state, node.progress, node.message = "imaging", 12.0, "writing disk"
                node.state_since = node.last_seen = now - timedelta(seconds=900)
            elif i < 200:
                node.state, node.progress = "imaging", float(i % 100)
                node.state_since = node.last_seen = now - timedelta(seconds=5)
            elif i < 450:
                node.state, node.last_seen = "held", now
            else:
                node.state = "joined"
        await session.commit()
    return macs
