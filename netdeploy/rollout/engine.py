"""The rollout writer: one task applies every rollout change, many per transaction.

Why one writer (docs/decisions/0004): SQLite takes one writer at a time, and a commit per
agent report costs more than the report itself. Requests queue their action; the writer
takes everything queued, applies it in one transaction, settles each touched cluster's gate
once, commits, and only then publishes the events and wakes long-polls. Because one task
makes every rollout decision in order, two reports can never both see "one slot free" and
release two nodes: the gate cannot leak through a race.

An action is ``async def action(batch) -> result``. It may raise a
:class:`~netdeploy.rollout.errors.RolloutError` after recording its refusal (the batch goes
on); any other exception rolls the batch back and every action is retried alone, so one bad
request cannot lose the others' reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import prometheus_client
from sqlalchemy import bindparam, delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from netdeploy import eventlog
from netdeploy.events import EventBus
from netdeploy.inventory import NodeState as S
from netdeploy.rollout import gate as G
from netdeploy.rollout.errors import RolloutError, StoreUnreachable, Unavailable
from netdeploy.rollout.rows import (
    NODES,
    NodeRow,
    insert_events,
    load_by_macs,
    load_rows,
    write_rows,
)
from netdeploy.rollout.state import set_state
from netdeploy.rollout.waiters import Waiters
from netdeploy.rollout.wave import Wave, gate_answer, release_held
from netdeploy.store.db import origin_of
from netdeploy.store.models import Cluster, Event, Node, SecretFetch, utcnow
from netdeploy.store.notify import notify_live
from netdeploy.store.outage import OUTAGE, RETRY_AFTER_S, is_outage

log = logging.getLogger("netdeploy.rollout")

BATCH_SIZE = prometheus_client.Histogram(
    "netdeploy_rollout_batch_actions",
    "Rollout actions applied per transaction (group commit)",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000),
)
COMMIT_SECONDS = prometheus_client.Histogram(
    "netdeploy_rollout_batch_seconds", "Time to apply and commit one batch of rollout actions"
)
REFUSED = prometheus_client.Counter(
    "netdeploy_rollout_refused_total", "Rollout requests refused", ["reason"]
)
RELEASED_TOTAL = prometheus_client.Counter(
    "netdeploy_rollout_released_total", "Nodes released through the cluster gate"
)

Action = Callable[["Batch"], Awaitable[Any]]
RETRY = f"nothing was changed, retry in {RETRY_AFTER_S} s"

# state changes that can change a cluster's gate decision
_GATE_INPUTS = frozenset({S.HELD, S.JOINED, S.FAILED, S.REGISTERED, S.RELEASED, S.UNHEALTHY})

# Several servers on one PostgreSQL (DESIGN "Scale") each run a writer. Every batch first
# locks the cluster rows, in name order so two batches never deadlock, and reads nodes only
# after that: one batch at a time decides, on rows no other writer is still changing, as a
# single writer does within one process. Without it, PostgreSQL's READ COMMITTED lets two
# writers both see a node held and both release it (docs/decisions/0008).
# FOR NO KEY UPDATE (not FOR UPDATE): inserting or re-pointing a node's foreign key to its
# cluster (config import) takes FOR KEY SHARE, which it does not block, so no deadlock there.
# SQLite has no row locks and needs none: it has one writer at a time; SQLAlchemy leaves the
# clause out there.
_LOCK_CLUSTERS = select(Cluster).order_by(Cluster.name).with_for_update(key_share=True)


# what settling a cluster reads of each node: six columns as plain tuples (built once)
_SETTLE = select(
    NODES.c.mac,
    NODES.c.hostname,
    NODES.c.state,
    NODES.c.stops_rollout,
    NODES.c.release_seq,
    NODES.c.message,
).where(NODES.c.cluster == bindparam("cluster"))
_STATES = {str(s): s for s in S}  # a stored state's member without an enum call per node


@dataclass
class LiveEvent:
    """A bus-only event (imaging progress): same fields as an Event row, never stored.

    Progress is not a state change, so it gets no row (1,000 nodes x 100 updates would swamp
    the log); the dashboard still sees it live.
    """

    kind: str
    mac: str
    cluster: str | None
    to_state: str
    detail: dict[str, Any]
    at: datetime
    id: int | None = None
    from_state: str | None = None


@dataclass
class Batch:
    """One transaction's worth of rollout changes and what to announce after commit."""

    session: AsyncSession
    now: datetime
    events: list[Event] = field(default_factory=list)
    transient: list[LiveEvent] = field(default_factory=list)  # bus-only (progress), no row
    woken: dict[str, NodeRow] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)
    nodes: dict[str, NodeRow] = field(default_factory=dict)
    clusters: dict[str, Cluster] = field(default_factory=dict)
    waves: list[Wave] = field(default_factory=list)  # released together; woken after commit

    async def load(self, where: Any) -> list[NodeRow]:
        """Nodes matching ``where``; a node this batch already holds is kept as it is now."""
        return self._keep(await load_rows(self.session, where))

    def _keep(self, rows: list[NodeRow]) -> list[NodeRow]:
        return [self.nodes.setdefault(row.mac, row) for row in rows]

    async def prefetch(self, macs: Iterable[str]) -> None:
        """Lock the clusters, then load every node the batch will touch in one query."""
        if not self.clusters:
            self.clusters = {c.name: c for c in await self.session.scalars(_LOCK_CLUSTERS)}
        wanted = [m for m in set(macs) if m not in self.nodes]
        for chunk in range(0, len(wanted), 500):
            self._keep(await load_by_macs(self.session, wanted[chunk : chunk + 500]))

    async def node(self, mac: str) -> NodeRow | None:
        if mac not in self.nodes:
            await self.load(Node.mac == mac)
        return self.nodes.get(mac)

    async def node_by_name(self, name: str) -> NodeRow | None:
        """A node by canonical MAC or by host name (admins type either)."""
        node = await self.node(name)
        if node is None:
            found = await self.load(Node.hostname == name)
            node = found[0] if found else None
        return node

    async def discover(
        self, mac: str, *, reason: str, log: bool = True, max_rows: int | None = None
    ) -> NodeRow:
        """Record a MAC the inventory does not know as ``discovered`` (never imaged).

        ``log`` False records the row without its event (a flood, counted elsewhere);
        ``max_rows`` keeps at most that many discovered rows: the oldest others go.
        """
        if max_rows is not None:
            await self._make_room(max_rows - 1, keep=mac)
        await self.session.execute(
            insert(NODES).values(
                mac=mac,
                hostname=None,
                in_config=False,
                state=S.DISCOVERED,
                state_since=self.now,
                vars={},
                message="",
                stops_rollout=False,
            )
        )
        if log:
            self.record(eventlog.state_change(mac, None, None, S.DISCOVERED, reason))
        (node,) = await self.load(Node.mac == mac)
        return node

    async def _make_room(self, limit: int, *, keep: str) -> None:
        """Delete the oldest discovered rows beyond ``limit`` (never one this batch holds)."""
        discovered = Node.state == S.DISCOVERED
        count = await self.session.scalar(select(func.count()).where(discovered)) or 0
        if count <= limit:
            return
        held = {keep, *self.nodes}
        oldest = (
            select(Node.mac)
            .where(discovered, Node.mac.not_in(held))
            .order_by(Node.last_seen, Node.mac)  # the longest unseen go first
            .limit(count - limit)
        )
        await self.session.execute(delete(Node).where(Node.mac.in_(oldest)))

    async def members(self, cluster: str) -> list[NodeRow]:
        return await self.load(Node.cluster == cluster)

    async def secret_fetched(self, mac: str, claim: str, name: str) -> bool:
        """Whether the claim of this phase already fetched secret answer file ``name``."""
        found = await self.session.scalar(
            select(SecretFetch.id).where(SecretFetch.token == claim, SecretFetch.name == name)
        )
        return found is not None

    def secret_fetch(self, mac: str, claim: str, name: str, ip: str | None) -> None:
        """Mark ``name`` used by this phase's claim (in the batch's transaction)."""
        self.session.add(SecretFetch(mac=mac, token=claim, name=name, ip=ip, at=self.now))

    def cluster_of(self, node: NodeRow) -> Cluster | None:
        return self.clusters.get(node.cluster) if node.cluster else None

    def add(self, event: Event) -> None:
        """Collect an event row (``set_state`` calls this as its session's ``add``)."""
        self.events.append(event)

    def record(self, event: Event) -> Event:
        self.events.append(event)
        return event

    async def write(self) -> None:
        """Send this batch's node changes and event rows to the store (not yet committed)."""
        await write_rows(self.session, self.nodes.values())
        await insert_events(self.session, self.events, self.now)
        # progress to the other servers
        await notify_live(self.session, self.transient, origin_of(self.session.bind))  # type: ignore[arg-type]

    def move(
        self,
        node: NodeRow,
        to: S,
        *,
        reason: str,
        detail: dict[str, Any] | None = None,
        force: bool = False,
        keep_report: bool = False,
    ) -> Event:
        """``set_state`` plus what the batch must do after commit (wake, settle the gate)."""
        event = set_state(
            self, node, to, reason=reason, detail=detail, force=force, keep_report=keep_report
        )
        self.woken[node.mac] = node
        if node.cluster and to in _GATE_INPUTS:
            self.dirty.add(node.cluster)
        return event

    async def settle(self) -> None:
        """Decide the gate once per touched cluster: new gate state and nodes to release."""
        for name in sorted(self.dirty):
            cluster = self.clusters.get(name)
            if cluster is not None:
                await self.settle_cluster(cluster)
        self.dirty.clear()

    async def settle_cluster(self, cluster: Cluster) -> None:
        # only the six columns a decision needs, as plain tuples (a 1,000-node cluster is
        # settled in a few ms); nodes this batch changed count as they are now
        result = await self.session.execute(_SETTLE, {"cluster": cluster.name})
        rows = [self.nodes.get(r.mac) or r for r in result]
        view = G.cluster_view(cluster)
        decision = G.decide(
            view,
            [
                G.NodeView(
                    r.mac, r.hostname or r.mac, _STATES[r.state], r.stops_rollout, r.message or ""
                )
                for r in rows
            ],
        )
        if decision.release:
            held = sum(S(r.state) is S.HELD for r in rows)
            seq = max((r.release_seq or 0 for r in rows), default=0) + 1
            await self.release_wave(cluster, view, decision.release, rows, held, seq)
        self.set_gate(cluster, decision.gate, decision.detail)
        self.dirty.discard(cluster.name)

    async def release_wave(
        self,
        cluster: Cluster,
        view: G.ClusterView,
        release: tuple[str, ...],
        rows: list[Any],
        held: int,
        seq: int,
    ) -> None:
        """Release the gate's pick as one wave: one UPDATE and one event row, whatever its
        size (rollout/wave.py; docs/decisions/0014)."""
        # the store must first hold what this batch changed so far (a node held just now)
        await write_rows(self.session, self.nodes.values())
        await release_held(
            self.session,
            cluster.name,
            list(release),
            every_held=len(release) == held,
            seq=seq,
            now=self.now,
        )
        by_mac = {r.mac: r for r in rows}
        nodes = [(m, by_mac[m].hostname, by_mac[m].message or "") for m in release]
        for mac in release:  # rows this batch holds follow the store (already written)
            loaded = self.nodes.get(mac)
            if loaded is not None:
                for name, value in (
                    ("state", S.RELEASED.value),
                    ("state_since", self.now),
                    ("progress", None),
                    ("release_seq", seq),
                ):
                    object.__setattr__(loaded, name, value)
        self.record(
            eventlog.wave(
                cluster.name,
                [(m, h) for m, h, _ in nodes],
                seq=seq,
                reason=f"released by policy {view.policy}",
                actor="gate",
            )
        )
        self.waves.append(Wave(cluster, seq, nodes))
        RELEASED_TOTAL.inc(len(release))

    def set_gate(self, cluster: Cluster, gate: G.Gate | str, detail: str, **extra: Any) -> None:
        """Change the cluster's gate; a change of state (not of detail text) is an event."""
        if cluster.gate != gate:
            self.record(
                eventlog.gate_change(cluster.name, cluster.gate, str(gate), detail, **extra)
            )
        cluster.gate = str(gate)
        cluster.gate_detail = detail


def gate_view(node: Node | NodeRow, cluster: Cluster | None) -> dict[str, Any]:
    """What an agent's long-poll learns: may it boot its disk, and why (not)."""
    return gate_answer(
        node.mac,
        node.hostname,
        node.state,
        node.cluster,
        cluster.gate if cluster else None,
        cluster.gate_detail if cluster else "",
        node.message or "",
    )


@dataclass
class _Job:
    action: Action
    macs: tuple[str, ...]
    future: asyncio.Future[Any]
    exclusive: bool = False  # a transaction of its own (the config import)


class RolloutEngine:
    """The single writer (group commit) and the long-poll waiters of one server process."""

    def __init__(
        self, sessions: async_sessionmaker, bus: EventBus, *, max_batch: int = 1000
    ) -> None:
        self.sessions = sessions
        self.bus = bus
        self.max_batch = max_batch
        self.waiters = Waiters()
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._carry: _Job | None = None  # an exclusive job taken while filling a batch
        self._stopping = False

    async def run(
        self, action: Action, macs: Iterable[str] = (), *, exclusive: bool = False
    ) -> Any:
        """Queue ``action`` for the writer; return its result or raise its refusal.

        ``exclusive`` actions get a batch (a transaction) of their own."""
        if self._stopping:
            raise Unavailable("the server is stopping; retry in a few seconds")
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="rollout")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Job(action, tuple(macs), future, exclusive))
        return await future

    async def stop(self) -> None:
        """Finish what is queued, wake every long-poll, stop the writer."""
        self._stopping = True
        self.waiters.wake_all(None)
        if self._task is not None:
            while not self._queue.empty() or self._carry is not None:
                await asyncio.sleep(0.01)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            first, self._carry = self._carry or await self._queue.get(), None
            jobs = [first]
            while not first.exclusive and len(jobs) < self.max_batch and not self._queue.empty():
                job = self._queue.get_nowait()
                if job.exclusive:
                    self._carry = job
                    break
                jobs.append(job)
            await self._process(jobs)

    async def _process(self, jobs: list[_Job]) -> None:
        started = time.perf_counter()
        try:
            await self._attempt(jobs)
        except Exception as exc:
            if is_outage(exc):  # the store is down: every job answers "retry", one log line
                OUTAGE.failed("rollout", f"a batch of {len(jobs)}", exc)
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(
                            StoreUnreachable(f"the store is unreachable; {RETRY}")
                        )
                return
            if len(jobs) > 1:  # isolate the culprit; the others' reports still count
                log.warning("rollout batch of %d failed (%s); retrying one by one", len(jobs), exc)
                for job in jobs:
                    await self._process([job])
                return
            log.exception("rollout action failed")
            if not jobs[0].future.done():
                jobs[0].future.set_exception(
                    Unavailable(f"the change could not be stored ({exc}); retry")
                )
        finally:
            BATCH_SIZE.observe(len(jobs))
            COMMIT_SECONDS.observe(time.perf_counter() - started)

    async def _attempt(self, jobs: list[_Job]) -> None:
        outcomes: list[tuple[_Job, Any, RolloutError | None]] = []
        async with self.sessions() as session:
            batch = Batch(session, utcnow())
            await batch.prefetch(m for job in jobs for m in job.macs)
            for job in jobs:
                try:
                    outcomes.append((job, await job.action(batch), None))
                except RolloutError as exc:
                    REFUSED.labels(type(exc).__name__).inc()
                    outcomes.append((job, None, exc))
            await batch.settle()
            views = {
                mac: gate_view(node, batch.cluster_of(node)) for mac, node in batch.woken.items()
            }
            for wave in batch.waves:
                wave.seal()
            await batch.write()
            await session.commit()
        # committed: now, and only now, tell the world
        self.bus.publish(batch.events + batch.transient)  # type: ignore[operator]
        for mac, view in views.items():
            self.waiters.wake(mac, view)
        for wave in batch.waves:  # only the nodes someone waits on here cost anything
            for mac, view in wave.views(self.waiters):
                self.waiters.wake(mac, view)
        for job, result, error in outcomes:
            if job.future.done():  # the requester went away
                continue
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(result)
