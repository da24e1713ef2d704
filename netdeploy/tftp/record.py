"""Per-transfer statistics as Prometheus metrics and as ``Event(kind="tftp")`` rows.

Both are updated once per finished transfer, never per packet. Event rows are written in
batches by a background task (netdeploy/store/batch.py), so the data path never waits on the
database.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy.ext.asyncio import async_sessionmaker

from netdeploy import eventlog
from netdeploy.store.batch import BatchWriter
from netdeploy.store.models import Event
from netdeploy.tftp.transfer import TransferStats

# client addresses -> (mac, cluster) of the machine last seen there (netdeploy.boot decides)
Attribute = Callable[[set[str]], Awaitable[dict[str, tuple[str, str | None]]]]


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
    """Finished transfers as event rows of the machine the boot service places at the client's
    address (``attribute``)."""

    what = "TFTP events"
    log = logging.getLogger("netdeploy.tftp")

    def __init__(
        self,
        sessions: async_sessionmaker,
        publish: Callable[[list[Event]], Any],
        attribute: Attribute,
        interval: float = 1.0,
        max_queue: int = 10_000,
    ):
        # a storm writes every 500 transfers; a trickle once a second
        super().__init__(
            sessions, publish, EVENTS_LOST, interval=interval, max_queue=max_queue, wake_at=500
        )
        self.attribute = attribute

    def add(self, stats: TransferStats) -> None:
        self.put(stats)

    async def rows(self, batch: list[TransferStats]) -> list[Event]:
        machines = await self.attribute({s.client_ip for s in batch})
        events = []
        for stats in batch:
            mac, cluster = machines.get(stats.client_ip, (None, None))
            events.append(eventlog.transfer("tftp", mac, cluster, **stats.detail()))
        return events
