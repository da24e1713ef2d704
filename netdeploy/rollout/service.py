"""Store-backed rollout actions. Every state change goes through :func:`set_state`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from netdeploy.inventory import NodeState
from netdeploy.rollout.errors import (  # noqa: F401  (re-exported for callers)
    BadReport,
    Forbidden,
    NotFound,
    Refused,
    RolloutError,
    StoreUnreachable,
    Unavailable,
)
from netdeploy.rollout.machine import check_transition
from netdeploy.store.models import Cluster, Event, Node, utcnow
from netdeploy.store.outage import OUTAGE, RETRY_AFTER_S

if TYPE_CHECKING:
    from netdeploy.rollout.engine import RolloutEngine
    from netdeploy.rollout.rows import NodeRow
    from netdeploy.server import Context

log = logging.getLogger("netdeploy.rollout")


class EventSink(Protocol):
    def add(self, instance: Any) -> None: ...


def set_state(
    session: AsyncSession | EventSink,
    node: Node | NodeRow,
    to: NodeState | str,
    *,
    reason: str,
    detail: dict[str, Any] | None = None,
    force: bool = False,
) -> Event:
    """Move ``node`` to ``to`` inside the caller's transaction and add its event row.

    ``session`` is the caller's session (or the rollout writer's batch, which collects event
    rows the same way); ``node`` a :class:`Node` or the writer's ``NodeRow``.

    Raises :class:`~netdeploy.rollout.machine.IllegalTransition` unless the move is legal or
    ``force`` is set (admin actions). The caller commits, then publishes the returned event
    on the bus, so listeners only ever hear of committed changes.
    """
    to = NodeState(to)
    if not force:
        check_transition(node.state, to)
    event = Event(
        kind="state",
        mac=node.mac,
        cluster=node.cluster,
        from_state=node.state,
        to_state=to,
        detail={"reason": reason, **(detail or {})},
    )
    node.state = to
    node.state_since = utcnow()
    if to not in (NodeState.IMAGING,):
        node.progress = None
    session.add(event)
    return event


# ---------------------------------------------------------------- the running rollout core
#
# The functions below are what the HTTP handlers, the dashboard and the CLI call. Each queues
# one action for the rollout writer (netdeploy.rollout.engine) and returns once it committed.
# The engine modules import set_state from here, hence the imports inside the functions.


def engine_of(ctx: Context) -> RolloutEngine:
    """The process's rollout writer and long-poll waiters, created on first use."""
    from netdeploy.rollout.engine import RolloutEngine

    engine = ctx.services.get("rollout")
    if engine is None:
        settings = ctx.config.rollout
        engine = RolloutEngine(
            ctx.sessions, ctx.bus, max_batch=settings.max_batch if settings.group_commit else 1
        )
        ctx.services["rollout"] = engine
    return engine


async def release(ctx: Context, mac: str, actor: str, *, force: bool = False) -> NodeRow:
    """Release a held node now (``mac`` may also be a host name).

    Refuses (``Refused``) a node that is not held, and, unless ``force``, any node but the
    first while its cluster is not formed: that would start two nodes on shared storage.
    """
    from netdeploy.rollout import admin

    outcome = await engine_of(ctx).run(admin.release(mac, actor, force=force), [mac])
    return outcome.node


async def retry(ctx: Context, mac: str, actor: str) -> NodeRow:
    """A failed node goes back to registered: it is re-imaged on its next PXE boot."""
    from netdeploy.rollout import admin

    return (await engine_of(ctx).run(admin.retry(mac, actor), [mac])).node


async def fail(ctx: Context, mac: str, actor: str, reason: str) -> NodeRow:
    """Mark a node failed by decision of the admin; the rest of its cluster goes on."""
    from netdeploy.rollout import admin

    return (await engine_of(ctx).run(admin.fail(mac, actor, reason), [mac])).node


async def reset_cluster(ctx: Context, name: str, actor: str) -> Cluster:
    """Start a new rollout of cluster ``name``: all its nodes registered, gate waiting."""
    from netdeploy.rollout import admin

    return await engine_of(ctx).run(admin.reset_cluster(name, actor))


async def sweep(ctx: Context, now: datetime | None = None) -> list[str]:
    """Fail nodes past their phase timeouts; settle every gate. Returns the failed MACs."""
    from netdeploy.rollout import actions

    return await engine_of(ctx).run(actions.sweep(now or utcnow()))


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
