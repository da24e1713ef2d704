"""Where an SSE client stands in the event log, exactly, even when ids commit out of order.

The stream's ``id:`` field (which the browser sends back as ``Last-Event-ID`` when it
reconnects, WHATWG HTML §9.2) was the last event's id, and a resume replayed ``id > N``. On
PostgreSQL that can skip events: ids are drawn when a row is inserted, not when it commits, so
event 41 may commit (and be streamed) after 42 — and a client that had 42 and reconnects
before 41 committed never gets 41. Decision 0008 has the details.

So the field carries a cursor: the highest id sent, and the ids below it not sent yet
(``42/41``; plain ``42`` when there are none, which is the rule on SQLite). A resume replays
everything above the highest plus those holes, and skips what the client already has. A hole
is kept for :data:`WINDOW` ids and at most :data:`MAX_HOLES` of them (the newest): an id that
commits later than that, or never (a rolled-back insert), stops being waited for.
"""

from __future__ import annotations

WINDOW = 1000
MAX_HOLES = 64


class BadCursor(ValueError):
    """Not a cursor this server wrote."""


class Cursor:
    """Every id up to ``high`` was sent, except ``holes``."""

    def __init__(self, high: int, holes: set[int] | None = None) -> None:
        self.high = high
        self.holes = holes or set()

    @classmethod
    def parse(cls, text: str) -> Cursor:
        head, slash, rest = text.strip().partition("/")
        parts = [head, *(rest.split(".") if slash else [])]
        if not all(p.isascii() and p.isdigit() and len(p) <= 18 for p in parts):
            raise BadCursor(f"{text[:80]!r} is not an event id")
        high, holes = int(head), {int(p) for p in parts[1:]}
        if any(not high - WINDOW <= h < high for h in holes):
            raise BadCursor(f"{text[:80]!r} is not an event id this server sent")
        if len(holes) > MAX_HOLES:
            raise BadCursor(f"{text[:80]!r} lists more than {MAX_HOLES} missing ids")
        return cls(high, holes)

    def __str__(self) -> str:
        if not self.holes:
            return str(self.high)
        return f"{self.high}/" + ".".join(str(h) for h in sorted(self.holes))

    def sent(self, event_id: int) -> bool:
        """Has the client got ``event_id`` (so it must not get it twice)?"""
        return event_id <= self.high and event_id not in self.holes

    def add(self, event_id: int) -> None:
        """``event_id`` was just sent."""
        if event_id > self.high:
            # the ids skipped over may still commit: wait for the newest of them
            self.holes.update(range(max(self.high + 1, event_id - MAX_HOLES), event_id))
            self.high = event_id
            floor = self.high - WINDOW
            self.holes = {h for h in self.holes if h >= floor}
            if len(self.holes) > MAX_HOLES:
                self.holes = set(sorted(self.holes)[-MAX_HOLES:])
        else:
            self.holes.discard(event_id)
