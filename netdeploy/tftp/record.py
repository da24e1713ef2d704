"""Per-transfer statistics as Prometheus metrics and as ``Event(kind="tftp")`` rows.

Both are updated once per finished transfer, never per packet. Event rows are written in
batches by a background task (netdeploy/store/batch.py), so the data path never waits on the
database.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import select

from netdeploy.store.batch import BatchWriter
from netdeploy.store.models import Event, Node
from netdeploy.tftp.transfer import TransferStats

if TYPE_CHECKING:
    from netdeploy.server import Context


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


class EventWriter(BatchWriter[TransferStats]):
    """Finished transfers as event rows of the nodes whose ``last_ip`` is the client's."""

    what = "TFTP events"
    log = logging.getLogger("netdeploy.tftp")

    def __init__(self, ctx: Context, interval: float = 1.0, max_queue: int = 10_000):
        # a storm writes every 500 transfers; a trickle once a second
        super().__init__(ctx, EVENTS_LOST, interval=interval, max_queue=max_queue, wake_at=500)

    def add(self, stats: TransferStats) -> None:
        self.put(stats)

    async def rows(self, batch: list[TransferStats]) -> list[Event]:
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
        return events
