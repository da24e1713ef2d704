"""Long-poll waiters: ``GET /api/nodes/{mac}/gate`` parks here until the node's state changes.

In memory by design: the state itself lives in the store. A waiter is registered *before*
the node's state is read, and woken only *after* a change is committed, so a release can
never slip between the read and the wait. After a restart the agents simply poll again.
"""

from __future__ import annotations

import asyncio
from typing import Any


class Waiters:
    def __init__(self) -> None:
        self._by_mac: dict[str, set[asyncio.Future[Any]]] = {}

    def register(self, mac: str) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._by_mac.setdefault(mac, set()).add(future)
        return future

    def discard(self, mac: str, future: asyncio.Future[Any]) -> None:
        futures = self._by_mac.get(mac)
        if futures is not None:
            futures.discard(future)
            if not futures:
                del self._by_mac[mac]

    def wake(self, mac: str, value: Any) -> int:
        """Hand ``value`` to everyone waiting on ``mac``; returns how many were waiting."""
        futures = self._by_mac.pop(mac, set())
        for future in futures:
            if not future.done():
                future.set_result(value)
        return len(futures)

    def wake_all(self, value: Any) -> None:
        for mac in list(self._by_mac):
            self.wake(mac, value)

    def macs(self) -> list[str]:
        """Every MAC someone waits on now."""
        return list(self._by_mac)

    def __contains__(self, mac: str) -> bool:
        """Is anyone waiting on ``mac`` (another server's change may concern them)."""
        return mac in self._by_mac

    def __len__(self) -> int:
        return sum(len(f) for f in self._by_mac.values())
