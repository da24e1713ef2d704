"""Other servers' events, here too: several servers on one PostgreSQL act as one (DESIGN "Scale").

Every transaction that writes event rows sends ``NOTIFY netdeploy_events`` (a trigger;
netdeploy/store/notify.py). Each server holds one dedicated asyncpg connection, outside the
pool, that LISTENs. On another server's notification it reads those rows and

- publishes them on the local bus, so SSE clients and dashboards on every server see every
  server's events;
- wakes local long-polls (``GET /api/nodes/{mac}/gate``) of every node whose state changed,
  with the node's gate view read fresh from the store: an agent held on this server returns
  the moment another server releases it, not at its next poll. This is what the rollout
  writer does for its own changes (it wakes every node it moved); a gate event alone never
  frees a node, its ``released`` state event does.

Its own notifications it skips: the writer already published those. When the connection is
lost (PostgreSQL restarted, the backend killed, the network) it logs, reconnects with
backoff, and then reads back what was written meanwhile. Ids do not commit in id order on
PostgreSQL, so it reads from :data:`LOOKBACK` ids below the highest it had seen, and the bus
drops the ids it already published. Nothing here can stop the server: a failure is logged and
retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import prometheus_client
from sqlalchemy import select

from netdeploy.context import Context
from netdeploy.eventlog import macs_of
from netdeploy.rollout.engine import LiveEvent, gate_view
from netdeploy.rollout.service import sweep
from netdeploy.store.db import newest_event_id, origin_of
from netdeploy.store.models import Cluster, Event, Node
from netdeploy.store.notify import CHANNEL, LIVE_CHANNEL, BadNotice, decode, decode_live
from netdeploy.store.outage import OUTAGE, short

if TYPE_CHECKING:
    import asyncpg


log = logging.getLogger("netdeploy.fanout")

LOOKBACK = 1000  # ids re-read after a reconnect, below the highest seen (decision 0008)
PAGE = 1000  # rows per query when catching up
IDLE_CHECK_S = 15.0  # an idle listener pings, so a silently dead connection is noticed
# Reconnect quickly and keep trying every half second: an attempt on a database that is down
# costs one refused connection, and back within 1 s of its return agents parked here hear of
# other servers' releases at once again (issue 21; it used to grow to 10 s).
BACKOFF_S = (0.1, 0.25, 0.5)
CONNECT_TIMEOUT_S = 3.0  # a database that does not answer at all: the next try soon
POLL_S = 2.0  # SQLite: how often to look for events other processes (the CLI) wrote

FOREIGN = prometheus_client.Counter(
    "netdeploy_peer_events_total",
    "Events written by other servers (PostgreSQL) or the CLI (SQLite) and published here",
)
CONNECTED = prometheus_client.Gauge(
    "netdeploy_peer_listener_connected", "1 while this server listens for other servers' events"
)
RECONNECTS = prometheus_client.Counter(
    "netdeploy_peer_listener_reconnects_total", "Times the listener connection was re-opened"
)


class _Lost(Exception):
    """The listener connection is gone."""


def _asyncpg_dsn(ctx: Context) -> str:
    return ctx.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


class EventListener:
    """One server's LISTEN connection and what it does with what it hears."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.origin = origin_of(ctx.engine) or "?"
        self._inbox: asyncio.Queue[str | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._conn: asyncpg.Connection | None = None
        self._baseline: int | None = None  # the newest id when we first listened
        self._resume_after = 0  # after a loss: re-read ids above this
        self.connected = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Listen now if we can (before HTTP accepts agents); else keep trying in the back."""
        try:
            await self._connect()
        except Exception as exc:  # the server starts anyway; the loop retries
            log.warning("cannot listen for other servers' events yet (%s); retrying", exc)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="event-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close()

    async def _connect(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(
            _asyncpg_dsn(self.ctx),
            server_settings={"application_name": f"{self.origin}-listen"},
            timeout=CONNECT_TIMEOUT_S,
        )
        try:
            conn.add_termination_listener(self._terminated)
            await conn.add_listener(CHANNEL, self._heard)
            await conn.add_listener(LIVE_CHANNEL, self._heard_live)
            if self._baseline is None:  # first time: history before us is not news
                self._baseline = await conn.fetchval("SELECT coalesce(max(id), 0) FROM events")
        except BaseException:
            await conn.close()
            raise
        # what the lost connection left in the inbox (its "terminated" mark, notifications
        # the catch-up reads again) is not news about this one
        self._inbox = asyncio.Queue()
        self._conn = conn
        self.connected.set()
        CONNECTED.set(1)
        log.info("listening for other servers' events (LISTEN %s, as %s)", CHANNEL, self.origin)

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        self.connected.clear()
        CONNECTED.set(0)
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2)

    def _terminated(self, conn: Any) -> None:
        if conn is self._conn:  # not a late word about a connection already replaced
            self._inbox.put_nowait(None)

    def _heard(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self._inbox.put_nowait(payload)

    def _heard_live(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        """Another server's live progress (no row to read): straight onto our bus."""
        try:
            origin, live = decode_live(payload)
        except BadNotice as exc:
            log.warning("ignored a notification on %s: %s", LIVE_CHANNEL, exc)
            return
        if origin != self.origin and live:
            self.ctx.bus.publish(_live_events(live))
            FOREIGN.inc(len(live))

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                if self._conn is None:
                    await self._connect()
                    RECONNECTS.inc()
                    caught = await self._catch_up(self._resume_after)
                    log.warning(
                        "listening again for other servers' events; caught up %d written meanwhile",
                        caught,
                    )
                    await self._after_outage()
                failures = 0
                await self._serve()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._conn is not None or failures == 0:
                    log.warning(
                        "lost the connection that listens for other servers' events (%s); "
                        "agents and dashboards here hear of other servers' changes at their "
                        "next poll until it is back",
                        short(exc),  # one line (SQLAlchemy's messages add a second)
                    )
                self._mark_lost()
                await self._close()
                delay = BACKOFF_S[min(failures, len(BACKOFF_S) - 1)]
                failures += 1
                await asyncio.sleep(delay)

    async def _after_outage(self) -> None:
        """Back after a loss: settle every gate now (the sweep) and answer each parked
        long-poll whose node moved meanwhile, rather than at their next timeout."""
        OUTAGE.recovered()
        try:
            await sweep(self.ctx)
        except Exception as exc:  # the sweeper tries again by itself
            log.warning("the sweep after reconnecting failed: %s", exc)
        await recheck_parked(self.ctx)

    def _mark_lost(self, failed_low: int | None = None) -> None:
        """Remember where to re-read from once the connection is back."""
        highest = self.ctx.bus.recent.highest
        if self._conn is not None or self._resume_after == 0:
            self._resume_after = max(self._baseline or 0, highest - LOOKBACK)
        if failed_low is not None:
            self._resume_after = min(self._resume_after, failed_low - 1)

    async def _serve(self) -> None:
        """Handle notifications until the connection is lost."""
        conn = self._conn
        assert conn is not None
        while True:
            try:
                first = await asyncio.wait_for(self._inbox.get(), IDLE_CHECK_S)
            except TimeoutError:
                await conn.fetchval("SELECT 1", timeout=5)  # raises if the link is dead
                continue
            payloads = [first]
            while not self._inbox.empty():  # a burst (a wave of releases): one query
                payloads.append(self._inbox.get_nowait())
            if None in payloads or conn.is_closed():
                raise _Lost("the database closed it")
            ids, spans = self._foreign(p for p in payloads if p is not None)
            try:
                await self._deliver(ids, spans)
            except Exception:
                self._mark_lost(min([*ids, *(low for low, _ in spans)], default=None))
                raise

    def _foreign(self, payloads: Iterable[str]) -> tuple[set[int], list[tuple[int, int]]]:
        ids: set[int] = set()
        spans: list[tuple[int, int]] = []
        for payload in payloads:
            try:
                notice = decode(payload)
            except BadNotice as exc:
                log.warning(
                    "ignored a notification on %s not written by netdeploy: %s", CHANNEL, exc
                )
                continue
            if notice.origin == self.origin:
                continue  # ours: the writer published it already
            ids.update(notice.ids)
            if notice.span:
                spans.append(notice.span)
        return ids, spans

    # ------------------------------------------------------------------ reading and waking

    async def _deliver(self, ids: set[int], spans: list[tuple[int, int]]) -> int:
        async with self.ctx.sessions() as session:
            rows: list[Event] = []
            wanted = sorted(ids)
            for chunk in range(0, len(wanted), PAGE):
                part = wanted[chunk : chunk + PAGE]
                rows += await session.scalars(select(Event).where(Event.id.in_(part)))
            for low, high in spans:
                rows += await session.scalars(select(Event).where(Event.id.between(low, high)))
        return await publish_foreign(self.ctx, rows)

    async def _catch_up(self, after: int) -> int:
        """Publish every event above ``after`` this bus has not published yet."""
        published = 0
        while True:
            async with self.ctx.sessions() as session:
                rows = list(
                    await session.scalars(
                        select(Event).where(Event.id > after).order_by(Event.id).limit(PAGE)
                    )
                )
            if not rows:
                return published
            published += await publish_foreign(self.ctx, rows)
            after = rows[-1].id


async def publish_foreign(ctx: Context, rows: list[Event]) -> int:
    """Publish events another process wrote (the bus drops what it published already) and
    wake the long-polls of nodes whose state they changed; returns how many were new."""
    rows.sort(key=lambda ev: ev.id)
    fresh = ctx.bus.publish(rows)
    FOREIGN.inc(len(fresh))
    # a release wave is one row naming every node it released (docs/decisions/0014)
    await _wake(ctx, {mac for ev in fresh if ev.kind == "state" for mac in macs_of(ev)})
    return len(fresh)


def _live_events(live: list[dict[str, Any]]) -> list[Any]:
    return [
        LiveEvent(e["kind"], e["mac"], e["cluster"], e["to"], e["detail"], e["at"]) for e in live
    ]


async def recheck_parked(ctx: Context) -> int:
    """Answer every long-poll parked here whose node is no longer waiting (released, failed,
    reset): a change written while we could not hear of it. Returns how many were woken."""
    engine = ctx.rollout
    if not len(engine.waiters):
        return 0
    parked = set(engine.waiters.macs())
    async with ctx.sessions() as session:
        nodes = list(await session.scalars(select(Node).where(Node.mac.in_(parked))))
        clusters = {c.name: c for c in await session.scalars(select(Cluster))}
    woken = 0
    for node in nodes:
        if node.state not in WAITING_STATES:
            woken += engine.waiters.wake(
                node.mac, gate_view(node, clusters.get(node.cluster or ""))
            )
    return woken


WAITING_STATES = frozenset({"imaged", "held"})  # a parked long-poll of these has no news


async def _wake(ctx: Context, macs: set[str]) -> None:
    engine = ctx.rollout
    waiting = sorted(mac for mac in macs if mac in engine.waiters)
    if not waiting:
        return
    async with ctx.sessions() as session:
        nodes: list[Any] = []  # the columns a gate view reads, not whole rows (a wave: 10,000)
        for start in range(0, len(waiting), PAGE):
            nodes += await session.execute(
                select(Node.mac, Node.hostname, Node.state, Node.cluster, Node.message).where(
                    Node.mac.in_(waiting[start : start + PAGE])
                )
            )
        names = {n.cluster for n in nodes if n.cluster}
        clusters = {
            c.name: c for c in await session.scalars(select(Cluster).where(Cluster.name.in_(names)))
        }
    for node in nodes:
        engine.waiters.wake(node.mac, gate_view(node, clusters.get(node.cluster or "")))


class StorePoller:
    """SQLite has one server, but other processes write to it too: `netdeploy image add`,
    `image verify` and `import` from the CLI. Every :data:`POLL_S` seconds this reads the ids
    written since, and publishes the rows this server did not write itself, so a dashboard
    sees a CLI change live. Ids on SQLite commit in id order (one writer at a time), so one
    high-water mark is enough; an id-only scan keeps the cost of a busy rollout's own events
    to an index read."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.after = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        async with self.ctx.sessions() as session:
            self.after = await newest_event_id(session)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="event-poller")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            try:
                await self.poll()
            except Exception as exc:  # a locked or busy database: next time
                log.warning("could not read events written by other processes: %s", exc)

    async def poll(self) -> int:
        recent = self.ctx.bus.recent
        async with self.ctx.sessions() as session:
            ids = list(
                await session.scalars(
                    select(Event.id).where(Event.id > self.after).order_by(Event.id).limit(PAGE)
                )
            )
            if not ids:
                return 0
            self.after = ids[-1]
            # below the bus's horizon it no longer knows what it published: leave those
            unknown = [i for i in ids if i not in recent and i > recent.horizon]
            if not unknown:
                return 0
            rows = list(await session.scalars(select(Event).where(Event.id.in_(unknown))))
        return await publish_foreign(self.ctx, rows)


async def start(ctx: Context) -> Callable[[], Awaitable[None]]:
    """Listen on PostgreSQL; poll on SQLite (one server, but the CLI writes events too)."""
    if ctx.engine.dialect.name != "postgresql":
        poller = StorePoller(ctx)
        await poller.start()
        return poller.stop
    listener = EventListener(ctx)
    await listener.start()
    return listener.stop
