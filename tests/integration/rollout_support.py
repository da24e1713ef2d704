"""Shared helpers for the rollout tests and bench: a lab config, node tokens, a server.

Not a conftest: test modules import what they need explicitly.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from netdeploy.config import load_config
from netdeploy.context import Context, Ports
from netdeploy.eventlog import macs_of
from netdeploy.http.app import build_app
from netdeploy.rollout.inventory import import_config
from netdeploy.rollout.state import set_state
from netdeploy.server import open_context
from netdeploy.store import open_store
from netdeploy.store.models import Cluster, Event, Node
from tests.integration.credentials import seed_credentials

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def releases(session: AsyncSession) -> Counter[str]:
    """How many times the record says each MAC was released (a release wave's one row names
    every node of the wave; the first node's and an admin's release are rows of their own)."""
    rows = await session.scalars(
        select(Event).where(Event.kind == "state", Event.to_state == "released")
    )
    return Counter(mac for ev in rows for mac in macs_of(ev))


def mac_of(i: int, cluster: int = 0) -> str:
    return f"52:54:{cluster:02x}:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}"


ADMIN_TOKEN = "test-admin-token"  # lab_config's admin token
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def lab_config(
    state_dir: Path,
    nodes: int,
    *,
    release: str = "sequential",
    timeouts: tuple[float, float, float] = (3600, 1800, 1800),
    standalone: bool = False,
    group_commit: bool = True,
    gate_poll_timeout: float = 60,
    sweep_interval: float = 5,
    database: str | None = None,
    kind: str | None = None,
) -> Path:
    """Write a config with one cluster ``clu`` of ``nodes`` nodes (n1 is the first node).

    ``kind``: the cluster kind (issue 16), e.g. ``pacemaker``: the gate then completes only
    when the cluster's own member list matches.

    ``database``: a store URL (e.g. a PostgreSQL one); default SQLite in ``state_dir``."""
    state_dir.mkdir(parents=True, exist_ok=True)
    imaging, starting, joining = timeouts
    lines = [
        "[server]",
        f'state_dir = "{state_dir}"',
        f'bootfiles_dir = "{REPO / "bootfiles"}"',
        f'templates_dir = "{REPO / "config" / "templates"}"',
        f'admin_token = "{ADMIN_TOKEN}"',
        *([f'database = "{database}"'] if database else []),
        "[http]",
        f"gate_poll_timeout = {gate_poll_timeout}",
        "[rollout]",
        f"group_commit = {'true' if group_commit else 'false'}",
        f"sweep_interval = {sweep_interval}",
        "[images.img]",
        'file = "img.raw"',
        "[clusters.clu]",
        'image = "img"',
        'first_node = "n1"',
        f'release = "{release}"',
        "[clusters.clu.timeouts]",
        f"imaging = {imaging}",
        f"starting = {starting}",
        f"joining = {joining}",
    ]
    if kind:
        lines.insert(lines.index("[clusters.clu.timeouts]"), f'kind = "{kind}"')
        lines += ["[clusters.clu.vars]", 'cluster_password = "Test-Only-1"']
    for i in range(1, nodes + 1):
        lines += ["[[nodes]]", f'mac = "{mac_of(i)}"', f'hostname = "n{i}"', 'cluster = "clu"']
    if standalone:
        lines += ["[[nodes]]", f'mac = "{mac_of(1, 1)}"', 'hostname = "solo"', 'image = "img"']
    path = state_dir / "netdeploy.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def prepare_nodes(
    config: Path, state: str = "pxe", database: str | None = None
) -> dict[str, str]:
    """Import the config, give every node a boot token and put it in ``state``, as the boot
    helper does when it renders the per-MAC boot script. Returns MAC -> plain token.

    ``database`` overrides the config's store URL, as ``netdeploy serve --db`` does."""
    cfg = load_config(config, database=database)
    engine, sessions = await open_store(cfg.database_url)
    tokens = {}
    try:
        await import_config(sessions, cfg)
        async with sessions() as session, session.begin():
            rollouts = {c.name: c.rollout for c in await session.scalars(select(Cluster))}
            for node in await session.scalars(select(Node)):
                if node.state != state:
                    set_state(session, node, state, reason="test: PXE-booted")
                rollout = rollouts.get(node.cluster, 0) if node.cluster else 0
                tokens[node.mac] = seed_credentials(node, rollout)
    finally:
        await engine.dispose()
    return tokens


@dataclass
class InProcessServer:
    ctx: Context
    url: str
    runner: web.AppRunner


@contextlib.asynccontextmanager
async def in_process_server(config: Path) -> AsyncIterator[InProcessServer]:
    """The real aiohttp app on a loopback port, in this event loop."""
    port = free_port()
    cfg = load_config(config, http_port=port, bind="127.0.0.1")
    ctx = await open_context(cfg, Ports(http=port, tftp=free_port()))
    runner = web.AppRunner(build_app(ctx), handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield InProcessServer(ctx, f"http://127.0.0.1:{port}", runner)
    finally:
        await runner.cleanup()
        await ctx.close()


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    url: str
    port: int

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, exactly like a crash."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


def start_server_process(
    config: Path,
    port: int | None = None,
    log: Path | None = None,
    launcher: Sequence[str] = ("-m", "netdeploy"),
) -> ServerProcess:
    """``python -m netdeploy serve`` as a subprocess; returns once it answers HTTP.
    ``launcher``: what runs the CLI instead of ``-m netdeploy`` (a bench's ``-c`` wrapper)."""
    port = port or free_port()
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            *launcher,
            "serve",
            "--config",
            str(config),
            "--bind",
            "127.0.0.1",
            "--http-port",
            str(port),
            "--tftp-port",
            str(free_port()),
        ],
        cwd=REPO,
        stdout=out,
        stderr=out,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"netdeploy serve exited with {proc.returncode}; see {log}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return ServerProcess(proc, url, port)
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"netdeploy serve did not listen on {port} within 30 s; see {log}")


class Agent:
    """A simulated node agent: the real HTTP calls an imaging agent makes."""

    def __init__(self, http: aiohttp.ClientSession, url: str, mac: str, token: str):
        self.http, self.url, self.mac = http, url, mac
        self.headers = {"Authorization": f"Bearer {token}"}

    async def event(
        self, state: str, progress: float | None = None, message: str = ""
    ) -> tuple[int, dict]:
        body: dict = {"state": state}
        if progress is not None:
            body["progress"] = progress
        if message:
            body["message"] = message
        async with self.http.post(
            f"{self.url}/api/nodes/{self.mac}/events", json=body, headers=self.headers
        ) as resp:
            return resp.status, await resp.json()

    async def health(self, healthy: bool = True, **extra: object) -> tuple[int, dict]:
        async with self.http.post(
            f"{self.url}/api/nodes/{self.mac}/health",
            json={"healthy": healthy, **extra},
            headers=self.headers,
        ) as resp:
            return resp.status, await resp.json()

    async def gate(self, timeout: float = 10) -> tuple[int, dict]:
        async with self.http.get(
            f"{self.url}/api/nodes/{self.mac}/gate",
            params={"timeout": str(timeout)},
            headers=self.headers,
        ) as resp:
            return resp.status, await resp.json()

    async def image(self, steps: int = 4) -> None:
        for i in range(steps + 1):
            status, body = await self.event("imaging", progress=100 * i / steps)
            assert status == 200, body
        status, body = await self.event("imaged")
        assert status == 200, body
