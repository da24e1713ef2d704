"""The composition root: ``netdeploy serve`` builds every object here, in order, and tears it
down in reverse (smee's ``cmd/smee/main.go`` is the model: reading this file tells you what
depends on what).

    store  ─► event bus ─► rollout writer ─► config import (through the writer) ─► Context
    Context ─► boot service, reloader ─► event listener, HTTP (boot, images, multicast),
               TFTP (boot), rollout sweeper, admin-url file, multicast sessions, ProxyDHCP (boot)

Each protocol adapter gets the narrow piece it needs (TFTP a resolver over the boot service,
ProxyDHCP the boot service's ``program_for``), never a bag of services.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import secrets
import signal
import socket
from collections.abc import Callable
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
from netdeploy.context import Context, LiveConfig, Ports, ServiceError
from netdeploy.dhcp import service as dhcp
from netdeploy.events import EventBus
from netdeploy.http.app import build_app
from netdeploy.http.limits import GuardedSite
from netdeploy.images.streams import ImageStreams
from netdeploy.multicast.service import MulticastService, start_multicast
from netdeploy.reload import Reloader, ReloadRefused
from netdeploy.rollout.engine import RolloutEngine
from netdeploy.rollout.inventory import import_action
from netdeploy.rollout.service import start_sweeper
from netdeploy.store import hold_store, open_store
from netdeploy.store.db import pool_for
from netdeploy.tftp import service as tftp

log = logging.getLogger("netdeploy")

__all__ = ["Context", "Ports", "ServiceError", "open_context", "serve"]


def private_state_dir(path: Path) -> None:
    """The state dir holds the database, the admin token and the secret key: 0700."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(OSError):  # not ours (a shared mount): the files are 0600 anyway
        if path.stat().st_uid == os.getuid():
            path.chmod(0o700)


def load_secret_key(cfg: Config) -> bytes:
    """The server's secret key (report tokens, secrets at rest): ``state_dir/secret-key``, 0600,
    generated once. Several servers on one PostgreSQL need the same file (docs/security.md)."""
    path = cfg.server.state_dir / "secret-key"
    if path.exists():
        return bytes.fromhex(path.read_text().strip())
    key = secrets.token_bytes(32)
    with contextlib.suppress(FileExistsError):  # another server process made it first
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key.hex() + "\n")
        return key
    return bytes.fromhex(path.read_text().strip())


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
    private_state_dir(cfg.server.state_dir)
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
    if created:  # never the token itself: logs end up in the journal (docs/security.md)
        log.warning(
            "generated the admin token; read it from %s (mode 0600)",
            cfg.server.state_dir / "admin-token",
        )
    key = load_secret_key(cfg)
    public = cfg.server.public_url or default_public_url(cfg.server.bind, ports.http)
    return Context(LiveConfig(cfg), engine, sessions, bus, ports, public, token, rollout, key)


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


async def run(ctx: Context, stack: AsyncExitStack) -> Reloader:
    """Build and start every service over ``ctx``; ``stack`` stops them in reverse order.
    Returns the reloader (SIGHUP, `netdeploy reload` and `adopt` re-read the config)."""
    boot = BootService(ctx)
    reloader = Reloader(ctx)
    # other writers' events first, so we hear them before agents can reach us
    stack.push_async_callback(await fanout.start(ctx))
    images = ImageStreams.from_config(ctx.config.http)
    multicast = MulticastService(ctx)
    app = build_app(ctx, boot=boot, images=images, multicast=multicast, reloader=reloader)
    stack.push_async_callback((await start_http(ctx, app)).cleanup)
    stack.push_async_callback(await tftp.start(ctx, boot))
    stack.push_async_callback(await start_sweeper(ctx))
    stack.callback(write_admin_url(ctx).unlink, missing_ok=True)
    stack.push_async_callback(await start_multicast(multicast))
    proxy = await dhcp.start(ctx, boot)
    if proxy is not None:
        stack.push_async_callback(proxy.stop)
    return reloader


def reload_on_sighup(reloader: Reloader) -> Callable[[], None]:
    """SIGHUP re-reads the config like `netdeploy reload`; the outcome goes to the log (and
    the event log), since a signal has no one to answer."""
    tasks: set[asyncio.Task[None]] = set()

    async def reload() -> None:
        try:
            result = await reloader.reload("SIGHUP")
        except ReloadRefused as exc:
            log.error("SIGHUP: config not reloaded: %s", exc)
            for line in exc.problems:
                log.error("  %s", line)
            return
        except Exception:
            log.exception("SIGHUP: config reload failed; nothing changed")
            return
        changes = result.added + result.updated + result.removed
        log.info("SIGHUP: config reloaded: %s", "; ".join(changes) or "no changes")

    def handler() -> None:
        task = asyncio.get_running_loop().create_task(reload(), name="reload-sighup")
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    return handler


async def serve(
    cfg: Config, ports: Ports, ready: asyncio.Event | None = None, stop: asyncio.Event | None = None
) -> None:
    """Run every service until SIGINT/SIGTERM (or ``stop`` is set)."""
    with hold_store(cfg.server.state_dir, exclusive=False):  # no CLI writes behind us
        await _serve(cfg, ports, ready, stop)


# Python's cyclic GC ran a young collection every 700 allocations; under 1,000 agents each
# request keeps dozens of containers alive across it, so they were scanned again and again:
# 20% of the server's CPU per agent report (bench/rollout.py, docs/decisions/0014). Objects
# built at start-up (config, metadata, routes) are frozen out of every collection.
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def _serve(
    cfg: Config, ports: Ports, ready: asyncio.Event | None, stop: asyncio.Event | None
) -> None:
    ctx = await open_context(cfg, ports)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(ctx.close)
        reloader = await run(ctx, stack)
        tune_gc()
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, reload_on_sighup(reloader))
        stack.callback(loop.remove_signal_handler, signal.SIGHUP)
        sd_notify("READY=1")
        if ready:
            ready.set()
        await stop.wait()
        sd_notify("STOPPING=1")
        log.info("stopping")
