"""Event notifications between servers sharing one PostgreSQL (DESIGN "Scale", decision 0008).

Every transaction that inserts ``events`` rows also sends ``NOTIFY netdeploy_events``: a
trigger on the table does it (migration ``0005_pgnotify``), so no code path that writes an
event can forget, whether it uses the ORM, a Core ``INSERT`` or raw SQL. PostgreSQL delivers
a notification only when its transaction commits, in commit order, and caps the payload at
8,000 bytes, so the payload names rows instead of carrying them::

    <ids> <origin>

``<ids>`` is ``17,18,21`` (the ids the statement inserted) or ``17-4120`` when that list
would be too long (a range: it may then also cover other transactions' rows, which readers
drop by id). ``<origin>`` is the writer's ``application_name``: every netdeploy engine sets
it to its own :func:`new_origin`, so a server recognises, and skips, its own notifications.
Anyone may ``NOTIFY`` on the channel, so :func:`decode` treats the payload as hostile.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

CHANNEL = "netdeploy_events"
# PostgreSQL's payload limit is 8,000 bytes; the trigger switches to a range above this many
# characters of id list, leaving room for the origin (application_name: at most 63 bytes).
IDS_MAX_CHARS = 7000
# a range wider than this is not believed (nobody inserts 100,000 events in one statement)
SPAN_MAX = 100_000


class BadNotice(ValueError):
    """A payload on our channel that netdeploy did not write; the message says what is wrong."""


@dataclass(frozen=True)
class Notice:
    origin: str
    ids: tuple[int, ...] = ()  # the exact ids, or
    span: tuple[int, int] | None = None  # an inclusive range of ids

    @property
    def highest(self) -> int:
        return self.span[1] if self.span else max(self.ids)


def new_origin() -> str:
    """A name for one engine's connections (PostgreSQL ``application_name``): unique per
    process and engine, short, and readable in ``pg_stat_activity``."""
    return f"netdeploy-{secrets.token_hex(4)}"


def encode(origin: str, ids: list[int]) -> str:
    """What the trigger sends (the SQL in migration 0005 does the same; tests check both)."""
    text = ",".join(str(i) for i in sorted(ids))
    if len(text) > IDS_MAX_CHARS:
        text = f"{min(ids)}-{max(ids)}"
    return f"{text} {origin}"


def _id(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise BadNotice(f"{text[:40]!r} is not an event id")
    return int(text)


def decode(payload: str) -> Notice:
    """Parse a payload; raises :class:`BadNotice` for anything the trigger would not send."""
    ids_text, _, origin = payload.partition(" ")
    if not ids_text or not origin:
        raise BadNotice(f"expected '<ids> <origin>', got {payload[:80]!r}")
    if "-" in ids_text:
        low_text, _, high_text = ids_text.partition("-")
        low, high = _id(low_text), _id(high_text)
        if not 0 <= high - low <= SPAN_MAX:
            raise BadNotice(f"id range {low}-{high} is empty or wider than {SPAN_MAX}")
        return Notice(origin, span=(low, high))
    return Notice(origin, ids=tuple(_id(part) for part in ids_text.split(",")))
