"""The running server: config, store, event bus and protocol services in one asyncio process."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import secrets
import signal
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from netdeploy.config import Config
from netdeploy.events import EventBus
from netdeploy.store import import_config, open_store

log = logging.getLogger("netdeploy")

UNPRIVILEGED_HTTP_PORT = 8080
UNPRIVILEGED_TFTP_PORT = 6969


def may_bind_privileged_ports() -> bool:
    """True when we may bind ports below 1024: root, CAP_NET_BIND_SERVICE, or a lowered sysctl."""
    if os.geteuid() == 0:
        return True
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:") and int(line.split()[1], 16) & (1 << 10):
                return True
        start = int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
        return start <= 69
    except (OSError, ValueError):
        return False


@dataclass(frozen=True)
class Ports:
    http: int
    tftp: int
    note: str = ""


def choose_ports(cfg: Config) -> Ports:
    privileged = may_bind_privileged_ports()
    http = cfg.server.http_port or (80 if privileged else UNPRIVILEGED_HTTP_PORT)
    tftp = cfg.server.tftp_port or (69 if privileged else UNPRIVILEGED_TFTP_PORT)
    note = ""
    if not privileged and (cfg.server.http_port is None or cfg.server.tftp_port is None):
        note = (
            f"not root: using HTTP port {http} and TFTP port {tftp} "
            "(80 and 69 need root or CAP_NET_BIND_SERVICE)"
        )
    return Ports(http, tftp, note)


def primary_address() -> str | None:
    """The IPv4 address this host sends from by default (the source address of its route to
    TEST-NET-1, RFC 5737; connecting a UDP socket sends nothing), or None without a route."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
            return str(probe.getsockname()[0])
        except OSError:
            return None


def default_public_url(bind: str, port: int) -> str:
    """Where booting machines reach us when ``server.public_url`` is not set: the bind address,
    or for a wildcard bind the host's primary address (not its host name, which Debian maps
    to 127.0.1.1 in /etc/hosts)."""
    host = bind
    if bind in ("0.0.0.0", "::", ""):
        host = primary_address() or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}" if port != 80 else f"http://{host}"


def loopback_url(url: str) -> bool:
    host = (urlsplit(url).hostname or "").strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


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


@dataclass
class Context:
    """Everything a request handler or protocol service needs, built once at start-up."""

    config: Config
    engine: AsyncEngine
    sessions: async_sessionmaker
    bus: EventBus
    ports: Ports
    public_url: str
    admin_token: str
    services: dict[str, Any] = field(default_factory=dict)  # name -> running service

    async def close(self) -> None:
        await self.engine.dispose()


async def open_context(cfg: Config, ports: Ports | None = None) -> Context:
    """Open the store, upgrade its schema and import the config (atomically)."""
    cfg.server.state_dir.mkdir(parents=True, exist_ok=True)
    engine, sessions = await open_store(cfg.database_url)
    ports = ports or choose_ports(cfg)
    bus = EventBus()
    result = await import_config(sessions, cfg)
    bus.publish(result.events)
    token, created = load_admin_token(cfg)
    if created:  # shown once; afterwards read it from the file (mode 0600)
        log.warning(
            "generated the admin token %s (kept in %s)", token, cfg.server.state_dir / "admin-token"
        )
    public = cfg.server.public_url or default_public_url(cfg.server.bind, ports.http)
    return Context(cfg, engine, sessions, bus, ports, public, token)


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) about our state; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(message.encode(), address)


Stopper = Callable[[], Awaitable[None]]


async def start_http(ctx: Context) -> Stopper:
    from aiohttp import web

    from netdeploy.http.app import build_app

    runner = web.AppRunner(build_app(ctx), access_log=None, handle_signals=False)
    await runner.setup()
    # a rack powering on at once: 1,000 agents connecting together must not hit SYN retries
    site = web.TCPSite(
        runner, ctx.config.server.bind, ctx.ports.http, reuse_address=True, backlog=1024
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
    return runner.cleanup


class ServiceError(Exception):
    """A service cannot start; the message says why and what to do."""


async def start_tftp(ctx: Context) -> Stopper:
    """TFTP on ``server.bind``:``ports.tftp`` (a wildcard bind listens on IPv4 and IPv6)."""
    from netdeploy.tftp.service import start

    return await start(ctx)


async def start_event_listener(ctx: Context) -> Stopper:
    """Events other processes wrote (netdeploy.fanout): other servers' on a shared PostgreSQL
    (LISTEN), the CLI's on SQLite (a poll). First, so it listens before agents can reach us."""
    from netdeploy.fanout import start

    return await start(ctx)


async def start_rollout_sweeper(ctx: Context) -> Stopper:
    """Phase timeouts and gate re-decisions after a restart (netdeploy.rollout)."""
    from netdeploy.rollout.service import start_sweeper

    return await start_sweeper(ctx)


async def start_admin_url_file(ctx: Context) -> Stopper:
    """Tell the admin CLI where this server listens (state_dir/admin-url)."""
    from netdeploy.http.admin_cli import start_admin_url_file as start

    return await start(ctx)


async def start_multicast(ctx: Context) -> Stopper:
    from netdeploy.multicast.service import start_multicast as start

    return await start(ctx)


async def start_proxy_dhcp(ctx: Context) -> Stopper:
    """ProxyDHCP when ``[dhcp] proxy = true`` (netdeploy.dhcp); otherwise nothing."""
    from netdeploy.dhcp.service import start

    return await start(ctx)


# Each service is one coroutine: start, then hand back how to stop; started in this order
# (the event listener first, so it hears other writers before agents can reach us).
SERVICES: list[Callable[[Context], Awaitable[Stopper]]] = [
    start_event_listener,
    start_http,
    start_tftp,
    start_rollout_sweeper,
    start_admin_url_file,
    start_multicast,
    start_proxy_dhcp,
]


async def serve(
    cfg: Config, ports: Ports, ready: asyncio.Event | None = None, stop: asyncio.Event | None = None
) -> None:
    """Run every service until SIGINT/SIGTERM (or ``stop`` is set)."""
    ctx = await open_context(cfg, ports)
    stoppers: list[Stopper] = []
    try:
        for start in SERVICES:
            stoppers.append(await start(ctx))
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
    finally:
        for stopper in reversed(stoppers):
            await stopper()
        await ctx.close()
