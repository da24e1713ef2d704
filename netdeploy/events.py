"""Record events and fan them out to live listeners (dashboard SSE, long-polls, metrics).

Events are first written to the store (the record); only after the transaction commits are
they published here (the notification). A listener that cannot keep up is cut off rather than
allowed to grow memory or slow the publisher; it reconnects and resumes from the store by id.

With several servers on one PostgreSQL, another server's events reach this bus too
(netdeploy/fanout.py), sometimes twice (a catch-up after a lost connection reads back a
window that may overlap); the bus publishes each event id once (:class:`RecentIds`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from netdeploy.store.models import Event


class Payload(dict[str, Any]):
    """An event as listeners get it: a dict, plus room for its wire form.

    Every subscriber receives the same object, so an adapter that serialises it (the SSE
    stream) stores the bytes in ``wire`` once and every other reader reuses them: the cost of
    an event does not grow with the number of dashboards open.
    """

    wire: bytes | None = None


def event_json(ev: Event) -> Payload:
    return Payload(
        {
            "id": ev.id,
            "at": ev.at.isoformat() if ev.at else None,
            "kind": ev.kind,
            "mac": ev.mac,
            "cluster": ev.cluster,
            "from": ev.from_state,
            "to": ev.to_state,
            "detail": ev.detail or {},
        }
    )


class RecentIds:
    """Which event ids were already published, within a window below the highest one.

    On PostgreSQL, ids are not handed out in commit order: an id may commit after higher ones
    (decision 0008). So "seen" cannot be one high-water mark; it is the set of ids above
    ``highest - window``. An id below that horizon is unknown (``add`` says new): readers that
    catch up never look further back than ``window`` ids (``horizon``), so nothing they read
    falls there, while a local commit that took longer than ``window`` ids still goes out.
    """

    def __init__(self, window: int) -> None:
        self.window = window
        self.highest = 0
        self._ids: set[int] = set()

    @property
    def horizon(self) -> int:
        """Ids above this are remembered; a catch-up reads from here."""
        return max(0, self.highest - self.window)

    def add(self, event_id: int) -> bool:
        """Remember ``event_id``; False if it was published already."""
        if event_id in self._ids:
            return False
        if event_id <= self.horizon:
            return True
        self._ids.add(event_id)
        if event_id > self.highest:
            self.highest = event_id
            if len(self._ids) > 2 * self.window:  # amortised: prune once per window ids
                horizon = self.horizon
                self._ids = {i for i in self._ids if i > horizon}
        return True

    def __contains__(self, event_id: int) -> bool:
        return event_id in self._ids


class Subscription:
    def __init__(self, bus: EventBus, maxsize: int):
        self._bus = bus
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize)
        self.overflowed = False

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            item = await self.queue.get()
            if item is None:
                return
            yield item

    def close(self) -> None:
        self._bus._subscribers.discard(self)


class EventBus:
    """In-process publish/subscribe of committed events."""

    def __init__(self, queue_size: int = 10_000, window: int = 10_000):
        self._subscribers: set[Subscription] = set()
        self._queue_size = queue_size
        self.recent = RecentIds(window)

    def subscribe(self) -> Subscription:
        sub = Subscription(self, self._queue_size)
        self._subscribers.add(sub)
        return sub

    def publish(self, events: list[Event] | Event) -> list[Event]:
        """Hand each event to every listener, once per id; returns the events it published."""
        published = []
        for ev in events if isinstance(events, list) else [events]:
            if ev.id is not None and not self.recent.add(ev.id):
                continue  # already out (another server's event, read twice)
            published.append(ev)
            payload = event_json(ev)
            for sub in list(self._subscribers):
                try:
                    sub.queue.put_nowait(payload)
                except asyncio.QueueFull:  # a slow listener: cut it off, never block
                    sub.overflowed = True
                    sub.close()
                    while not sub.queue.empty():
                        sub.queue.get_nowait()
                    sub.queue.put_nowait(None)
        return published

    @property
    def listeners(self) -> int:
        return len(self._subscribers)
