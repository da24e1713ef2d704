"""Event rows written in batches off a hot path (a TFTP transfer, a DHCP packet).

The path hands its item over and returns at once; one background task writes whatever has
queued, up to 1,000 rows per transaction, then publishes them. When the store cannot keep up
the oldest unwritten items are dropped and counted, never queued without bound; when it is
down, the batch is logged and counted and serving goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import async_sessionmaker

from netdeploy.store.models import Event
from netdeploy.store.outage import OUTAGE, is_outage

T = TypeVar("T")
BATCH = 1000  # rows per transaction


class BatchWriter(Generic[T]):
    """Subclasses say how a batch becomes event rows (:meth:`rows`) and, optionally, which
    items fall due without a new one arriving (:meth:`due`)."""

    what = "events"  # for the log: "could not record 12 TFTP events"
    log = logging.getLogger("netdeploy.store")

    def __init__(
        self,
        sessions: async_sessionmaker,
        publish: Callable[[list[Event]], Any],
        lost: Counter,
        *,
        interval: float = 1.0,
        max_queue: int = 10_000,
        wake_at: int = 1,
    ):
        self.sessions = sessions
        self.publish = publish  # the event bus's publish: after commit, never before
        self.lost = lost
        self.interval = interval  # seconds between writes when fewer than wake_at wait
        self.max_queue = max_queue
        self.wake_at = wake_at
        self.queue: deque[T] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def put(self, item: T) -> None:
        if len(self.queue) >= self.max_queue:
            self.queue.popleft()
            self.lost.inc()
        self.queue.append(item)
        if len(self.queue) >= self.wake_at:
            self._wake.set()

    def due(self, closing: bool) -> list[T]:
        return []

    async def rows(self, batch: list[T]) -> list[Event]:
        """The event rows for ``batch`` (built with netdeploy.eventlog; not yet stored)."""
        raise NotImplementedError

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Write what is queued (and everything :meth:`due` holds back), then stop."""
        self._closing = True
        self._wake.set()
        if self._task:
            await self._task

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            self.queue.extend(self.due(self._closing))
            while self.queue:
                batch = [self.queue.popleft() for _ in range(min(len(self.queue), BATCH))]
                try:
                    await self.flush(batch)
                except Exception as exc:  # the store is down: say so, keep serving
                    if is_outage(exc):  # counted; the outage itself is logged once
                        OUTAGE.failed("record", f"{len(batch)} {self.what} not recorded", exc)
                    else:
                        self.log.exception("could not record %d %s", len(batch), self.what)
                    self.lost.inc(len(batch))
            if self._closing:
                return

    async def flush(self, batch: list[T]) -> list[Event]:
        """Write ``batch`` in one transaction, then publish it."""
        events = await self.rows(batch)
        async with self.sessions() as session, session.begin():
            session.add_all(events)
        self.publish(events)
        return events
