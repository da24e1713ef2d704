"""The composition root: ``netdeploy serve`` builds every object here, in order, and tears it
down in reverse (smee's ``cmd/smee/main.go`` is the model: reading this file tells you what
depends on what).

    store  ─► event bus ─► rollout writer ─► config import (through the writer) ─► Context
    Context ─► boot service ─► event listener, HTTP (boot, images, multicast), TFTP (boot),
               rollout sweeper, admin-url file, multicast sessions, ProxyDHCP (boot)

Each protocol adapter gets the narrow piece it needs (TFTP a resolver over the boot service,
ProxyDHCP the boot service's ``program_for``), never a bag of services.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
from contextlib import AsyncExitStack
from pathlib import Path

from aiohttp import web

from netdeploy import fanout
from netdeploy.addresses import (
    ADMIN_URL_FILE,
    choose_ports,
    default_public_url,
    local_url,
    loopback_url,
)
from netdeploy.boot.service import BootService
from netdeploy.config import Config
from netdeploy.context import Context, Ports, ServiceError
from netdeploy.dhcp import service as dhcp
from netdeploy.events import EventBus
from netdeploy.http.app import build_app
from netdeploy.http.limits import GuardedSite
from netdeploy.images.streams import ImageStreams
from netdeploy.multicast.service import MulticastService, start_multicast
from netdeploy.rollout.engine import RolloutEngine
from netdeploy.rollout.inventory import import_action
from netdeploy.rollout.service import start_sweeper
from netdeploy.store import open_store
from netdeploy.store.db import pool_for
from netdeploy.tftp import service as tftp

log = logging.getLogger("netdeploy")

__all__ = ["Context", "Ports", "ServiceError", "open_context", "serve"]


def load_admin_token(cfg: Config) -> tuple[str, bool]:
    """The admin token: configured, or generated once and kept in ``state_dir/admin-token``."""
    if cfg.server.admin_token:
        return cfg.server.admin_token, False
    path = cfg.server.state_dir / "admin-token"
    if path.exists():
        return path.read_text().strip(), False
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token, True


async def open_context(
    cfg: Config, ports: Ports | None = None, *, bus: EventBus | None = None
) -> Context:
    """Open the store (schema upgraded), start the rollout writer and import the config through
    it (one transaction: all or nothing). The caller closes the context."""
    cfg.server.state_dir.mkdir(parents=True, exist_ok=True)
    postgresql = cfg.database_url.startswith("postgres")
    pool = pool_for(cfg.http.max_image_streams, postgresql=postgresql)
    engine, sessions = await open_store(cfg.database_url, pool)
    ports = ports or choose_ports(cfg)
    bus = bus or EventBus()
    settings = cfg.rollout
    rollout = RolloutEngine(
        sessions, bus, max_batch=settings.max_batch if settings.group_commit else 1
    )
    try:
        await rollout.run(import_action(cfg), exclusive=True)
    except BaseException:
        await rollout.stop()
        await engine.dispose()
        raise
    token, created = load_admin_token(cfg)
    if created:  # shown once; afterwards read it from the file (mode 0600)
        log.warning(
            "generated the admin token %s (kept in %s)", token, cfg.server.state_dir / "admin-token"
        )
    public = cfg.server.public_url or default_public_url(cfg.server.bind, ports.http)
    return Context(cfg, engine, sessions, bus, ports, public, token, rollout)


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) about our state; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(message.encode(), address)


async def start_http(ctx: Context, app: web.Application) -> web.AppRunner:
    http = ctx.config.http
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, keepalive_timeout=http.keepalive_timeout
    )
    await runner.setup()
    # a rack powering on at once: 1,000 agents connecting together must not hit SYN retries
    site = GuardedSite(
        runner,
        ctx.config.server.bind,
        ctx.ports.http,
        per_address=http.max_connections_per_address,
        reuse_address=True,
        backlog=1024,
    )
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ServiceError(
            f"cannot listen for HTTP on {ctx.config.server.bind}:{ctx.ports.http}: "
            f"{exc.strerror or exc}; pick another --http-port"
        ) from None
    log.info(
        "HTTP on %s:%d; machines reach us at %s",
        ctx.config.server.bind,
        ctx.ports.http,
        ctx.public_url,
    )
    if loopback_url(ctx.public_url) and ctx.config.server.bind not in ("127.0.0.1", "::1"):
        log.warning(
            "public_url %s is a loopback address: booting machines cannot reach it; set "
            "server.public_url (or --public-url) to the address they reach us at",
            ctx.public_url,
        )
    return runner


def write_admin_url(ctx: Context) -> Path:
    """Tell the admin CLI where this server listens (``state_dir/admin-url``)."""
    path = ctx.config.server.state_dir / ADMIN_URL_FILE
    path.write_text(local_url(ctx.config.server.bind, ctx.ports.http) + "\n")
    return path


async def run(ctx: Context, stack: AsyncExitStack) -> None:
    """Build and start every service over ``ctx``; ``stack`` stops them in reverse order."""
    boot = BootService(ctx)
    # other writers' events first, so we hear them before agents can reach us
    stack.push_async_callback(await fanout.start(ctx))
    images = ImageStreams.from_config(ctx.config.http)
    multicast = MulticastService(ctx)
    app = build_app(ctx, boot=boot, images=images, multicast=multicast)
    stack.push_async_callback((await start_http(ctx, app)).cleanup)
    stack.push_async_callback(await tftp.start(ctx, boot))
    stack.push_async_callback(await start_sweeper(ctx))
    stack.callback(write_admin_url(ctx).unlink, missing_ok=True)
    stack.push_async_callback(await start_multicast(multicast))
    proxy = await dhcp.start(ctx, boot)
    if proxy is not None:
        stack.push_async_callback(proxy.stop)


async def serve(
    cfg: Config, ports: Ports, ready: asyncio.Event | None = None, stop: asyncio.Event | None = None
) -> None:
    """Run every service until SIGINT/SIGTERM (or ``stop`` is set)."""
    ctx = await open_context(cfg, ports)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(ctx.close)
        await run(ctx, stack)
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        sd_notify("READY=1")
        if ready:
            ready.set()
        await stop.wait()
        sd_notify("STOPPING=1")
        log.info("stopping")
