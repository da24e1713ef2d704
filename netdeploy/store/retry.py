"""A bounded retry for reads on the boot path when SQLite says "database is locked".

In WAL mode readers do not wait for the writer, but a reader can still meet SQLITE_BUSY
while a checkpoint resets the WAL or a connection recovers the WAL index; the busy timeout
covers most of it, not all. A booting machine's request must not fail for that: a read is
retried a few times with a short, growing pause, then the error goes to the caller (the
HTTP error middleware answers 503 + Retry-After, never 500).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from prometheus_client import Counter
from sqlalchemy.exc import OperationalError

T = TypeVar("T")

RETRIED = Counter(
    "netdeploy_store_busy_retries", "Store reads retried because the database was busy"
)
ATTEMPTS = 5
FIRST_PAUSE = 0.05  # seconds; doubles: 0.05 + 0.1 + 0.2 + 0.4 = 0.75 s at most


def is_busy(exc: BaseException) -> bool:
    """SQLite's "database is locked" / "database is busy" (PostgreSQL has no such state)."""
    text = str(getattr(exc, "orig", exc)).lower()
    return isinstance(exc, OperationalError) and ("locked" in text or "busy" in text)


async def read_retrying(read: Callable[[], Awaitable[T]]) -> T:
    """``await read()``, again after a short pause while the store is busy (bounded)."""
    pause = FIRST_PAUSE
    for _ in range(ATTEMPTS - 1):
        try:
            return await read()
        except OperationalError as exc:
            if not is_busy(exc):
                raise
            RETRIED.inc()
            await asyncio.sleep(pause)
            pause *= 2
    return await read()
