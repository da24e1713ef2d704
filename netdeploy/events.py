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
import contextlib
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


class Feed:
    """Every published event once, in order, in a bounded log that readers walk at their own
    pace: publishing costs the same with 1 reader or 1,000 (no queue per reader).

    A reader keeps a position (:class:`FeedReader`); one that falls more than ``size``
    events behind is cut off (``lost``) and resumes from the store by event id, as a slow
    subscriber always did.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: list[Payload] = []
        self.first = 0  # position of items[0]
        self.open: set[FeedReader] = set()
        self._changed: asyncio.Future[None] | None = None

    @property
    def end(self) -> int:
        return self.first + len(self.items)

    def append(self, payload: Payload) -> None:
        self.items.append(payload)
        if len(self.items) >= 2 * self.size:  # amortised trim
            drop = len(self.items) - self.size
            del self.items[:drop]
            self.first += drop
        self.wake()

    def wake(self) -> None:
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)
        self._changed = None

    async def changed(self) -> None:
        if self._changed is None:
            self._changed = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._changed)

    def reader(self) -> FeedReader:
        reader = FeedReader(self, self.end)
        self.open.add(reader)
        return reader


class FeedReader:
    """One reader's place in the :class:`Feed`."""

    def __init__(self, feed: Feed, position: int) -> None:
        self.feed = feed
        self.position = position
        self.closed = False
        self.lost = False

    def take(self, limit: int) -> list[Payload]:
        """The events after this reader's place (at most ``limit``); sets ``lost`` when some
        were already trimmed away."""
        feed = self.feed
        if self.position < feed.first:
            self.lost = True
            return []
        start = self.position - feed.first
        items = feed.items[start : start + limit]
        self.position += len(items)
        return items

    async def wait(self, timeout: float) -> None:
        """Until there is something to take (or ``timeout`` seconds, or :meth:`close`)."""
        if self.position < self.feed.end or self.closed:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.feed.changed(), timeout)

    def close(self) -> None:
        self.closed = True
        self.feed.open.discard(self)
        self.feed.wake()


class EventBus:
    """In-process publish/subscribe of committed events."""

    def __init__(self, queue_size: int = 10_000, window: int = 10_000):
        self._subscribers: set[Subscription] = set()
        self._queue_size = queue_size
        self.recent = RecentIds(window)
        self.feed = Feed(queue_size)  # the SSE streams read this: one append per event

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
            self.feed.append(payload)
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
        return len(self._subscribers) + len(self.feed.open)
