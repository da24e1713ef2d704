"""What admins and the sweeper ask of the running rollout: each queues one action for the
rollout writer (``ctx.rollout``, netdeploy.rollout.engine) and returns once it committed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from netdeploy.context import Context
from netdeploy.rollout import actions, admin
from netdeploy.rollout.errors import StoreUnreachable, Unavailable
from netdeploy.rollout.rows import NodeRow
from netdeploy.store.models import Cluster, utcnow
from netdeploy.store.outage import OUTAGE, RETRY_AFTER_S

log = logging.getLogger("netdeploy.rollout")


async def release(ctx: Context, mac: str, actor: str, *, force: bool = False) -> NodeRow:
    """Release a held node now (``mac`` may also be a host name).

    Refuses (``Refused``) a node that is not held, and, unless ``force``, any node but the
    first while its cluster is not formed: that would start two nodes on shared storage.
    """
    outcome = await ctx.rollout.run(admin.release(mac, actor, force=force), [mac])
    return outcome.node


async def retry(ctx: Context, mac: str, actor: str) -> NodeRow:
    """A failed node goes back to registered: it is re-imaged on its next PXE boot."""
    return (await ctx.rollout.run(admin.retry(mac, actor), [mac])).node


async def fail(ctx: Context, mac: str, actor: str, reason: str) -> NodeRow:
    """Mark a node failed by decision of the admin; the rest of its cluster goes on."""
    return (await ctx.rollout.run(admin.fail(mac, actor, reason), [mac])).node


async def reset_cluster(ctx: Context, name: str, actor: str) -> Cluster:
    """Start a new rollout of cluster ``name``: all its nodes registered, gate waiting."""
    return await ctx.rollout.run(admin.reset_cluster(name, actor))


async def sweep(ctx: Context, now: datetime | None = None) -> list[str]:
    """Fail nodes past their phase timeouts; settle every gate. Returns the failed MACs."""
    return await ctx.rollout.run(actions.sweep(now or utcnow()))


async def start_sweeper(ctx: Context) -> Callable[[], Awaitable[None]]:
    """Run :func:`sweep` now (settling gates after a restart) and every sweep_interval."""
    interval = ctx.config.rollout.sweep_interval

    async def loop() -> None:
        while True:
            try:
                failed = await sweep(ctx)
                if failed:
                    log.warning("phase timeout: %s failed", ", ".join(failed))
            except StoreUnreachable:  # logged once by the writer; sweep again soon
                await asyncio.sleep(RETRY_AFTER_S)
                continue
            except Unavailable:
                return  # stopping
            except Exception:  # keep sweeping: one bad pass must not end timeouts for good
                log.exception("rollout sweep failed")
            else:
                OUTAGE.recovered()
            await asyncio.sleep(interval)

    task = asyncio.get_running_loop().create_task(loop(), name="rollout-sweeper")

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return stop
