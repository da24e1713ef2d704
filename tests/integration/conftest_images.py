"""Shared helpers for the image tests: a small lab config and a real netdeploy HTTP server."""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from netdeploy.config import Config, load_config
from netdeploy.context import Context, Ports
from netdeploy.http.app import build_app
from netdeploy.images.actions import AddRequest, add_image
from netdeploy.multicast.service import MulticastService
from netdeploy.server import open_context

LAB_TOML = """
[server]
state_dir = "state"

[http]
max_image_streams = {max_streams}
image_retry_after = 7
{http_extra}

[images.base]
file = "base.img"
description = "standalone test image"

[images.packed]
file = "packed.img.zst"
format = "raw+zstd"

[images.clu]
file = "clu.img"
hardware = ["hw1"]

[hardware.hw1]
description = "test hardware"

[clusters.c1]
image = "clu"
first_node = "n1"

[[nodes]]
mac = "52:54:00:aa:00:01"
hostname = "n1"
cluster = "c1"

[[nodes]]
mac = "52:54:00:aa:00:02"
hostname = "n2"
image = "base"

[[nodes]]
mac = "52:54:00:aa:00:03"
hostname = "n3"
image = "base"
"""

MAC_N2 = "52:54:00:aa:00:02"
MAC_N3 = "52:54:00:aa:00:03"
IMAGE_SIZE = 4 * 1024 * 1024 + 12345  # odd size, above the 1 MiB "small body" threshold


def write_lab(
    root: Path, max_streams: int = 32, http_extra: str = "image_queue_wait = 0", extra: str = ""
) -> Path:
    """The lab config; ``http_extra`` goes into ``[http]`` (by default a client over the stream
    limit is answered at once, not parked), ``extra`` is appended (more nodes)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "netdeploy.toml"
    path.write_text(LAB_TOML.format(max_streams=max_streams, http_extra=http_extra) + extra)
    return path


def make_image(path: Path, size: int = IMAGE_SIZE) -> str:
    """Random bytes (never sparse, never compressible) and their sha256."""
    data = os.urandom(size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Lab:
    cfg: Config
    ctx: Context
    runner: web.AppRunner
    url: str
    root: Path
    multicast: MulticastService | None = None

    def image_path(self, name: str) -> Path:
        return self.cfg.image_path(name)

    async def add(self, name: str, source: Path, **kwargs: object) -> None:
        await add_image(self.cfg, self.ctx.sessions, AddRequest(name, source, **kwargs))  # type: ignore[arg-type]

    async def close(self) -> None:
        if self.multicast is not None:
            await self.multicast.stop()
        await self.runner.cleanup()
        await self.ctx.close()


async def start_lab(
    root: Path, max_streams: int = 32, *, multicast: bool = False, **config: str
) -> Lab:
    """The lab's server on 127.0.0.1; ``multicast``: with the multicast service (its
    ``[multicast]`` section, e.g. a free port_range on "lo", comes with ``extra``)."""
    port = free_port()
    cfg = load_config(write_lab(root, max_streams, **config), http_port=port, bind="127.0.0.1")
    ctx = await open_context(cfg, Ports(http=port, tftp=0))
    service = MulticastService(ctx) if multicast else None
    runner = web.AppRunner(build_app(ctx, multicast=service), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return Lab(cfg, ctx, runner, f"http://127.0.0.1:{port}", root, service)
