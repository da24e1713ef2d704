"""``netdeploy serve`` runs TFTP through :func:`start`: engine, boot-decision seam, records."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from netdeploy.boot.service import BootService
from netdeploy.boot.tftp import virtual_file
from netdeploy.context import Context, ServiceError
from netdeploy.store.outage import OUTAGE, RETRY_AFTER_S, is_outage
from netdeploy.tftp import record
from netdeploy.tftp.engine import TftpServer
from netdeploy.tftp.packets import BadPacket, ErrorCode
from netdeploy.tftp.transfer import TransferStats

log = logging.getLogger("netdeploy.tftp")


async def start(ctx: Context, boot: BootService) -> Callable[[], Awaitable[None]]:
    """Serve ``server.bootfiles_dir`` and per-MAC virtual files (asked of ``boot``) on
    ``bind``:``ports.tftp``."""
    cfg = ctx.config
    if not cfg.tftp.enabled:
        log.info("TFTP disabled ([tftp] enabled = false)")

        async def nothing() -> None:
            return None

        return nothing
    root = cfg.server.bootfiles_dir
    if not root.is_dir():
        log.warning("TFTP root %s does not exist; only virtual files will be served", root)
    writer = record.EventWriter(ctx.sessions, ctx.bus.publish, boot.machines_at)

    def finished(stats: TransferStats) -> None:
        record.count_transfer(stats)
        writer.add(stats)

    async def resolve(path: str, client_ip: str) -> bytes | None:
        try:
            return await virtual_file(boot, path, client_ip)
        except Exception as exc:  # the store is down: an ERROR the client retries, not silence
            if not is_outage(exc):
                raise
            OUTAGE.failed("tftp", path, exc)
            raise BadPacket(
                ErrorCode.UNDEFINED,
                f"netdeploy cannot reach its database; retry in {RETRY_AFTER_S} s",
            ) from None

    server = TftpServer(
        root,
        cfg.tftp,
        resolver=resolve,
        on_finished=finished,
        on_refused=record.count_dropped,
    )
    host, port = cfg.server.bind, ctx.ports.tftp
    try:
        await server.start(host, port)
    except OSError as exc:
        hint = "run as root or with CAP_NET_BIND_SERVICE, or " if port < 1024 else ""
        raise ServiceError(
            f"cannot listen for TFTP on {host}:{port}: {exc.strerror or exc}; "
            f"{hint}pick another --tftp-port"
        ) from None
    record.ACTIVE.set_function(lambda: server.active)
    writer.start()
    plane = f"C, {server.native.threads} threads" if server.native else "Python"
    log.info("TFTP on %s:%d serving %s (data plane: %s)", host, server.port, root, plane)

    async def stop() -> None:
        await server.stop()
        await writer.close()

    return stop
