"""Per-transfer statistics as Prometheus metrics and as ``Event(kind="tftp")`` rows.

Both are updated once per finished transfer, never per packet. Event rows are written in
batches by a background task, so the data path never waits on the database; when the
database cannot keep up the oldest unwritten rows are dropped and counted, never queued
without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import select

from netdeploy.store.models import Event, Node
from netdeploy.tftp.transfer import TransferStats

if TYPE_CHECKING:
    from netdeploy.server import Context

log = logging.getLogger("netdeploy.tftp")

TRANSFERS = Counter(
    "netdeploy_tftp_transfers", "TFTP read requests by outcome", ["outcome"]
)  # outcome: ok | timeout | aborted | error | refused
BYTES = Counter("netdeploy_tftp_sent_bytes", "TFTP payload bytes sent, retransmissions included")
RETRANSMITS = Counter("netdeploy_tftp_retransmits", "TFTP blocks sent again after a timeout")
SECONDS = Histogram(
    "netdeploy_tftp_transfer_seconds",
    "Duration of successful TFTP transfers",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
DROPPED = Counter(
    "netdeploy_tftp_requests_dropped",
    "TFTP packets on the listening port that started no transfer",
    ["reason"],  # busy | client_limit | bad_request | write | noise
)
EVENTS_LOST = Counter(
    "netdeploy_tftp_events_lost", "TFTP event rows dropped because the store fell behind"
)
ACTIVE = Gauge("netdeploy_tftp_active_transfers", "TFTP transfers in progress")


def count_transfer(stats: TransferStats) -> None:
    TRANSFERS.labels(stats.outcome).inc()
    BYTES.inc(stats.bytes_sent)
    RETRANSMITS.inc(stats.retransmits)
    if stats.outcome == "ok":
        SECONDS.observe(stats.duration)


def count_dropped(reason: str) -> None:
    DROPPED.labels(reason).inc()


class EventWriter:
    """Queues finished transfers and writes them as event rows, one transaction per batch."""

    def __init__(self, ctx: Context, interval: float = 1.0, max_queue: int = 10_000):
        self.ctx = ctx
        self.interval = interval
        self.queue: deque[TransferStats] = deque()
        self.max_queue = max_queue
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def add(self, stats: TransferStats) -> None:
        if len(self.queue) >= self.max_queue:
            self.queue.popleft()
            EVENTS_LOST.inc()
        self.queue.append(stats)
        if len(self.queue) >= 500:
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task:
            await self._task

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            while self.queue:
                batch = [self.queue.popleft() for _ in range(min(len(self.queue), 1000))]
                try:
                    await self.flush(batch)
                except Exception:  # the store is down: say so, keep serving files
                    log.exception("could not record %d TFTP events", len(batch))
                    EVENTS_LOST.inc(len(batch))
            if self._closing:
                return

    async def flush(self, batch: list[TransferStats]) -> list[Event]:
        """Write ``batch`` as events of the nodes whose ``last_ip`` is the client's."""
        ips = {s.client_ip for s in batch}
        async with self.ctx.sessions() as session:
            rows = await session.scalars(
                select(Node).where(Node.last_ip.in_(ips)).order_by(Node.last_seen)
            )
            # Several nodes may share an address (NAT, QEMU slirp): the latest seen wins.
            by_ip = {node.last_ip: node for node in rows}
            events = []
            for stats in batch:
                node = by_ip.get(stats.client_ip)
                events.append(
                    Event(
                        kind="tftp",
                        mac=node.mac if node else None,
                        cluster=node.cluster if node else None,
                        detail=stats.detail(),
                    )
                )
            session.add_all(events)
            await session.commit()
        self.ctx.bus.publish(events)
        return events
