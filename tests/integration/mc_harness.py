"""Helpers for the multicast tests: a real netdeploy server in-process, images, receivers.

Imported by tests/integration/test_multicast_*.py (not a conftest: the lead owns those), the
browser tests and bench/multicast*.py; the receivers' command lines are built here only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from netdeploy.config import DEMO_CONFIG, MulticastConfig, load_config
from netdeploy.context import Context, Ports
from netdeploy.http.app import build_app
from netdeploy.multicast.service import MulticastService, start_multicast
from netdeploy.server import open_context
from netdeploy.store.models import Image
from tests.conftest import sha256_of

REPO = Path(__file__).resolve().parents[2]
IMAGE = "w2k3-ent-sp1"  # a demo-config image; cluster sqlclu uses it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_pair() -> int:
    """An even UDP port whose successor is free too (a session uses data + feedback)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1] & ~1
        try:
            with (
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a,
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b,
            ):
                a.bind(("0.0.0.0", port))
                b.bind(("0.0.0.0", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no free UDP port pair")


def make_image(path: Path, size: int, seed: int = 1) -> str:
    """A reproducible image of ``size`` bytes; returns its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB pattern
    data = bytearray()
    counter = 0
    while len(data) < size:
        data += hashlib.sha256(block + counter.to_bytes(8, "big")).digest() + block[: 65536 - 32]
        counter += 1
    del data[size:]
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def receive_argv(
    server_url: str,
    out: Path | str,
    *options: str,
    token: str | None = None,
    image: str = IMAGE,
) -> list[str]:
    """`netdeploy receive` of ``image`` into ``out``, then ``options`` (``--name``, ``--json``,
    ``--quiet``...), then ``token`` as ``--token=`` (a generated token may begin with "-",
    which argparse would take for an option)."""
    return [
        sys.executable,
        "-m",
        "netdeploy",
        "receive",
        "--server",
        server_url,
        "--image",
        image,
        "--out",
        str(out),
        *options,
        *((f"--token={token}",) if token else ()),
    ]


def join_url(server_url: str, name: str, image: str = IMAGE) -> str:
    """The join a receiver POSTs first; the answer (``format=args``) is ndmc-recv's words."""
    return f"{server_url}/api/multicast/join?image={image}&name={name}&format=args"


def ndmc_recv_argv(binary: Path | str, words: Sequence[str], out: Path | str) -> list[str]:
    """The media's C receiver with the words a join answered, writing ``out``."""
    return [str(binary), *words, "--out", str(out), "--quiet"]


def ndmc_recv_shell_argv(
    binary: Path | str, server_url: str, name: str, token: str, out: Path | str
) -> list[str]:
    """ndmc-recv behind a shell that joins first with curl, as the agent's script does with
    wget: the join runs where the receiver runs (its namespace) and in its time."""
    join = f'$(curl -sf -X POST -H "Authorization: Bearer {token}" "{join_url(server_url, name)}")'
    return ["sh", "-c", "exec " + " ".join(ndmc_recv_argv(binary, [join], out))]


# admin token per server URL: `netdeploy receive` stand-ins for nodes join with it (a real
# node's agent joins with its claim; docs/security.md)
ADMIN_TOKENS: dict[str, str] = {}


class Server:
    @property
    def admin(self) -> dict[str, str]:
        """The header a non-node receiver (or a test) joins with."""
        return {"Authorization": f"Bearer {self.ctx.admin_token}"}

    def __init__(
        self,
        ctx: Context,
        runner: web.AppRunner,
        url: str,
        sha256: str,
        path: Path,
        service: MulticastService,
    ):
        self.ctx, self.runner, self.url, self.sha256, self.image_path = (
            ctx,
            runner,
            url,
            sha256,
            path,
        )
        self.service = service

    def disable_multicast(self) -> None:
        """As if the config said ``[multicast] enabled = false``: plans and joins say unicast.

        A reload refuses a [multicast] change (it needs a restart); this test swaps the live
        config of the running server in place to compare both answers on one image."""
        off = MulticastConfig(**{**self.ctx.config.multicast.model_dump(), "enabled": False})
        self.ctx.live.swap(self.ctx.config.model_copy(update={"multicast": off}))
        self.service.cfg = off


@contextlib.asynccontextmanager
async def running_server(
    tmp: Path,
    *,
    size: int = 3 * 2**20,
    bind: str = "127.0.0.1",
    http_port: int | None = None,
    sha256: str | None = None,
    **multicast: Any,
) -> AsyncIterator[Server]:
    """netdeploy (HTTP + multicast) on ``bind``; the demo image filled with ``size`` bytes."""
    http_port = http_port or free_port()
    cfg = load_config(
        DEMO_CONFIG,
        state_dir=tmp / "state",
        database=f"sqlite+aiosqlite:///{tmp}/state/db.sqlite",
        http_port=http_port,
        bind=bind,
    )
    settings = {"interface": "lo", "port_range": (free_port_pair(), 0), "max_wait": 1.0}
    settings.update(multicast)
    if settings["port_range"][1] == 0:
        settings["port_range"] = (settings["port_range"][0], settings["port_range"][0] + 5)
    # the demo cluster receives by multicast: its nodes are the sessions' expected receivers
    clusters = {
        name: c.model_copy(update={"distribution": "multicast"}) for name, c in cfg.clusters.items()
    }
    cfg = cfg.model_copy(update={"multicast": MulticastConfig(**settings), "clusters": clusters})
    path = cfg.image_path(IMAGE)
    digest = sha256 or (sha256_of(path) if path.exists() else make_image(path, size))
    ctx = await open_context(cfg, Ports(http=http_port, tftp=0))
    async with ctx.sessions() as db:
        row = await db.get(Image, IMAGE)
        # what `netdeploy image add` records: the real /images route serves only that file
        st = path.stat()
        row.sha256, row.size, row.status = digest, st.st_size, "ok"
        row.mtime_ns, row.facts = st.st_mtime_ns, {**(row.facts or {}), "inode": st.st_ino}
        await db.commit()
    service = MulticastService(ctx)
    stop = await start_multicast(service)
    app = build_app(ctx, multicast=service)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, bind, http_port).start()
    ADMIN_TOKENS[f"http://{bind}:{http_port}"] = ctx.admin_token
    try:
        yield Server(ctx, runner, f"http://{bind}:{http_port}", digest, path, service)
    finally:
        await stop()
        await runner.cleanup()
        await ctx.close()


async def run_receiver(
    server_url: str, out: Path, *extra: str, timeout: float = 60, image: str = IMAGE
) -> tuple[int, str]:
    """`netdeploy receive` as a real subprocess; returns (exit status, stderr+stdout)."""
    own_token = any(e.startswith("--token") for e in extra)
    proc = await asyncio.create_subprocess_exec(
        *receive_argv(
            server_url,
            out,
            "--json",
            *extra,
            token=None if own_token else ADMIN_TOKENS[server_url],
            image=image,
        ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        output, _ = await proc.communicate()
        return -9, output.decode(errors="replace")
    return proc.returncode or 0, output.decode(errors="replace")


async def wait_for(predicate: Any, timeout: float = 20.0, message: Any = None) -> None:
    """Poll ``predicate`` every 20 ms; fail the test if it stays false for ``timeout``."""
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"condition not met in time: {message() if message else ''}")
