"""Helpers for the boot tests: a real netdeploy HTTP server on loopback, and curl."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import shutil
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from sqlalchemy import select

from netdeploy.boot.service import BootService
from netdeploy.config import load_config
from netdeploy.context import Context, Ports
from netdeploy.dhcp.service import ProxyDhcpServer
from netdeploy.http.app import build_app
from netdeploy.inventory import NodeState
from netdeploy.rollout.state import set_state
from netdeploy.server import open_context
from netdeploy.store.models import Event, Node

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "config" / "netdeploy.toml"
TOKEN = re.compile(r"nd\.token=(\S+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (tests/debian-packages.txt lists its package)")
    return path


@dataclass
class Server:
    ctx: Context
    url: str  # where the test reaches it
    tmp: Path
    boot: BootService
    dhcp: ProxyDhcpServer | None = None  # started by the ProxyDHCP tests

    async def events(self, kind: str | None = None, mac: str | None = None) -> list[Event]:
        async with self.ctx.sessions() as session:
            query = select(Event).order_by(Event.id)
            if kind:
                query = query.where(Event.kind == kind)
            if mac:
                query = query.where(Event.mac == mac)
            return list((await session.scalars(query)).all())

    async def node(self, mac: str) -> Node | None:
        async with self.ctx.sessions() as session:
            return await session.get(Node, mac)

    async def force_state(self, mac: str, state: NodeState) -> None:
        async with self.ctx.sessions() as session, session.begin():
            node = await session.get(Node, mac)
            assert node is not None
            set_state(session, node, state, reason="test", force=True)


@contextlib.asynccontextmanager
async def boot_server(
    tmp: Path,
    *,
    public_url: str | None = None,
    config: Path = DEMO,
    **overrides: str,
) -> AsyncIterator[Server]:
    """The demo lab on 127.0.0.1:<free port>, served by the real aiohttp app."""
    port = int(overrides.pop("http_port", 0)) or free_port()
    cfg = load_config(
        config,
        state_dir=str(tmp / "state"),
        database=f"sqlite:///{tmp}/netdeploy.db",
        bind="127.0.0.1",
        http_port=port,
        public_url=public_url or f"http://127.0.0.1:{port}",
        **overrides,
    )
    ctx = await open_context(cfg, Ports(http=port, tftp=free_port()))
    boot = BootService(ctx)
    runner = web.AppRunner(build_app(ctx, boot=boot), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield Server(ctx, f"http://127.0.0.1:{port}", tmp, boot)
    finally:
        await runner.cleanup()
        await ctx.close()


@dataclass
class Fetched:
    status: int
    body: bytes
    headers: str

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


async def curl(url: str, *args: str) -> Fetched:
    """Fetch ``url`` with the real curl binary (asynchronously: the server runs in our loop)."""
    tool = need("curl")
    proc = await asyncio.create_subprocess_exec(
        tool, "-sS", "-D", "/dev/stderr", "-o", "-", *args, url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    body, head = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, head.decode()
    headers = head.decode(errors="replace")
    status = int(headers.split()[1])
    return Fetched(status, body, headers)


def token_in(script: str) -> str:
    match = TOKEN.search(script)
    assert match, script
    return match.group(1)


async def boot_token(url: str, mac: str) -> str:
    """The token a node's boot script hands its agent (``nd.token=`` on the kernel line)."""
    got = await curl(f"{url}/boot/{mac}.ipxe")
    assert got.status == 200, got.text
    return token_in(got.text)


async def claim(url: str, mac: str, token: str, secret: str | None = None) -> Fetched:
    """``POST /api/nodes/{mac}/claim`` as the agent does: the boot token, a secret of its own."""
    secret = secret or secrets.token_hex(24)
    return await curl(
        f"{url}/api/nodes/{mac}/claim",
        "-H", f"Authorization: Bearer {token}", "-H", "Content-Type: application/json",
        "--data", json.dumps({"secret": secret}),
    )  # fmt: skip


async def agent_credential(url: str, mac: str) -> str:
    """What the agent speaks with after its boot: fetch the boot script, claim the node with
    its boot token and a new secret; the secret."""
    secret = secrets.token_hex(24)
    got = await claim(url, mac, await boot_token(url, mac), secret)
    assert got.status == 200, got.text
    return secret
