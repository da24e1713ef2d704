"""Record events and fan them out to live listeners (dashboard SSE, long-polls, metrics).

Events are first written to the store (the record); only after the transaction commits are
they published here (the notification). A listener that cannot keep up is cut off rather than
allowed to grow memory or slow the publisher; it reconnects and resumes from the store by id.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from netdeploy.store.models import Event


def event_json(ev: Event) -> dict[str, Any]:
    return {
        "id": ev.id,
        "at": ev.at.isoformat() if ev.at else None,
        "kind": ev.kind,
        "mac": ev.mac,
        "cluster": ev.cluster,
        "from": ev.from_state,
        "to": ev.to_state,
        "detail": ev.detail or {},
    }


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

    def __init__(self, queue_size: int = 10_000):
        self._subscribers: set[Subscription] = set()
        self._queue_size = queue_size

    def subscribe(self) -> Subscription:
        sub = Subscription(self, self._queue_size)
        self._subscribers.add(sub)
        return sub

    def publish(self, events: list[Event] | Event) -> None:
        for ev in events if isinstance(events, list) else [events]:
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

    @property
    def listeners(self) -> int:
        return len(self._subscribers)
