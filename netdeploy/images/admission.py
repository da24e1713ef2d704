"""Who may stream an image now, and who waits in line: admission instead of failure.

A rack that powers on at once asks for more image streams than ``[http] max_image_streams``.
A node over the limit is not failed: it gets a **place in line** (a ticket, kept while it keeps
asking) and is told where it stands ("queued, 7th in line"). Freed slots go to the line in
order; a newcomer never overtakes a node that waits. Three rules keep the slots with nodes
that make progress, not with whoever holds connections:

- a ticket expires when its holder stops asking (``hold`` seconds): a node that gave up does
  not keep a slot reserved;
- one address holds at most ``per_address`` slots and ``per_address`` places in line: a
  single host (or a script opening connections under many names) cannot take every slot or
  push the rack back; its waiting requests never block anybody behind them;
- a stream that moves no bytes for ``[http] stall_timeout`` is cut by the HTTP adapter
  (``http/image_routes.py``), which releases its slot here.

Pure bookkeeping with the clock passed in; the only asyncio is the wake-up that lets the HTTP
adapter park a request until a slot frees (``wait``) instead of making it poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Ticket:
    """A place in line: ``key`` is the node's MAC, or ``anonymous:<address>``."""

    key: str
    address: str
    joined: float
    seen: float


@dataclass(frozen=True)
class Slot:
    """One admitted stream; hand it back with :meth:`Admission.release` exactly once."""

    key: str
    address: str


def ordinal(n: int) -> str:
    """1 → "1st", 2 → "2nd", 11 → "11th", 23 → "23rd"."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


class Admission:
    """``limit`` concurrent streams in all, ``per_address`` per client address, and a line."""

    def __init__(
        self,
        limit: int,
        *,
        per_address: int | None = None,
        hold: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.per_address = per_address or limit
        self.hold = hold
        self.clock = clock
        self.active = 0
        self._by_address: Counter[str] = Counter()
        self._line: OrderedDict[str, Ticket] = OrderedDict()
        self._freed: asyncio.Event | None = None

    # ---------------------------------------------------------------- the rule

    def try_enter(self, key: str, address: str) -> Slot | int:
        """A slot, or this client's 1-based place in line (kept while it keeps asking)."""
        now = self.clock()
        self._expire(now)
        if self._may_enter(key, address):
            self._line.pop(key, None)
            self.active += 1
            self._by_address[address] += 1
            return Slot(key, address)
        ticket = self._line.get(key)
        if ticket is None:
            if self._waiting_from(address) >= self.per_address:
                # one address keeps at most per_address places: a host cannot push the rest
                # of the rack back by asking under many names; it is told the end of the line
                return len(self._line) + 1
            ticket = self._line[key] = Ticket(key, address, now, now)
        ticket.seen, ticket.address = now, address
        return self.position(key) or len(self._line)

    def _waiting_from(self, address: str) -> int:
        return sum(1 for t in self._line.values() if t.address == address)

    def _may_enter(self, key: str, address: str) -> bool:
        if self.active >= self.limit or self._by_address[address] >= self.per_address:
            return False
        # every waiting client that could take a slot now and stands before us keeps one
        ahead = 0
        for ticket in self._line.values():
            if ticket.key == key:
                break
            if self._by_address[ticket.address] < self.per_address:
                ahead += 1
        return self.limit - self.active > ahead

    def release(self, slot: Slot) -> None:
        self.active -= 1
        self._by_address[slot.address] -= 1
        if self._by_address[slot.address] <= 0:
            del self._by_address[slot.address]
        if self._freed is not None:  # wake the parked requests: one of them is next
            self._freed.set()
            self._freed = None

    def _expire(self, now: float) -> None:
        for key in [k for k, t in self._line.items() if now - t.seen > self.hold]:
            del self._line[key]

    # ---------------------------------------------------------------- parking

    async def wait(self, key: str, address: str, timeout: float) -> Slot | int:
        """:meth:`try_enter`, parking the request up to ``timeout`` seconds for a slot."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = self.try_enter(key, address)
            remaining = deadline - loop.time()
            if isinstance(result, Slot) or remaining <= 0:
                return result
            if self._freed is None:
                self._freed = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._freed.wait(), remaining)

    def leave(self, key: str) -> None:
        """Give up a place in line (the client went away while parked)."""
        self._line.pop(key, None)

    # ---------------------------------------------------------------- what admins see

    def position(self, key: str) -> int | None:
        for n, k in enumerate(self._line, 1):
            if k == key:
                return n
        return None

    def queued(self) -> list[dict[str, object]]:
        """The line, first first: key, address, place and seconds waited."""
        now = self.clock()
        self._expire(now)
        return [
            {
                "key": t.key,
                "peer": t.address,
                "position": n,
                "waiting_s": round(now - t.joined, 1),
            }
            for n, t in enumerate(self._line.values(), 1)
        ]
