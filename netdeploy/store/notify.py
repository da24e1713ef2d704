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

import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

CHANNEL = "netdeploy_events"
# Live progress (repeated ``imaging`` reports) has no event row to name: its payload carries the
# events themselves, JSON, sent by the rollout writer in the batch's transaction (so only when
# it commits): ``<origin> <json list>``, at most LIVE_MAX_BYTES per notification.
LIVE_CHANNEL = "netdeploy_live"
LIVE_MAX_BYTES = 7500
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


def encode_live(origin: str, events: list[dict[str, Any]]) -> list[str]:
    """Payloads for ``events`` (``kind, mac, cluster, to, detail, at``), each under the limit;
    an event too big for one payload on its own is left out (a progress message is short)."""
    payloads: list[str] = []
    chunk: list[str] = []
    size = len(origin) + 3
    for event in events:
        item = json.dumps(event, separators=(",", ":"), default=str)
        if len(item.encode()) + len(origin) + 3 > LIVE_MAX_BYTES:
            continue
        if chunk and size + len(item.encode()) + 1 > LIVE_MAX_BYTES:
            payloads.append(f"{origin} [{','.join(chunk)}]")
            chunk, size = [], len(origin) + 3
        chunk.append(item)
        size += len(item.encode()) + 1
    if chunk:
        payloads.append(f"{origin} [{','.join(chunk)}]")
    return payloads


def decode_live(payload: str) -> tuple[str, list[dict[str, Any]]]:
    """``(origin, events)`` from a live payload; :class:`BadNotice` for anything else."""
    origin, _, body = payload.partition(" ")
    try:
        events = json.loads(body)
    except ValueError as exc:
        raise BadNotice(f"live payload is not JSON: {exc}") from None
    keys = {"kind", "mac", "cluster", "to", "detail", "at"}
    if not origin or not isinstance(events, list):
        raise BadNotice(f"expected '<origin> [events]', got {payload[:80]!r}")
    for event in events:
        if (
            not isinstance(event, dict)
            or set(event) != keys
            or not isinstance(event["detail"], dict)
        ):
            raise BadNotice(f"not a live event: {str(event)[:80]!r}")
        try:
            event["at"] = datetime.fromisoformat(event["at"])
        except (TypeError, ValueError):
            raise BadNotice(f"bad time in a live event: {event['at']!r}") from None
    return origin, events


async def notify_live(session: AsyncSession, events: list[Any], origin: str | None) -> None:
    """Send this transaction's live events to the other servers (PostgreSQL only; delivered
    at commit, in commit order). Skips the work when no other server could listen (SQLite).
    ``origin`` is this server's (``store.db.origin_of``), so it skips its own."""
    if not events or session.bind.dialect.name != "postgresql":
        return
    items = [
        {
            "kind": e.kind,
            "mac": e.mac,
            "cluster": e.cluster,
            "to": e.to_state,
            "detail": e.detail,
            "at": e.at.isoformat(),
        }
        for e in events
    ]
    for payload in encode_live(origin or "?", items):
        await session.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": LIVE_CHANNEL, "payload": payload},
        )
