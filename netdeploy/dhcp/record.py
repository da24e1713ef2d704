"""What the ProxyDHCP saw and decided: ``Event(kind="dhcp")`` per MAC, and Prometheus counters.

A PXE client retransmits (PXE 2.1: after 4, 8, 16 and 32 s) and a rack powers on together, so
recording every packet would flood the store. :class:`Coalescer` writes the first request of
each kind per MAC at once and folds identical ones that follow within ``[dhcp]
event_interval`` into one summary event with a count (``repeats``), written when the window
closes. Nothing is lost from the record: every request is either an event or counted in one.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import async_sessionmaker

from netdeploy import eventlog
from netdeploy.store.batch import BatchWriter
from netdeploy.store.models import Event

# MACs -> the cluster each belongs to (netdeploy.boot reads the inventory)
ClustersOf = Callable[[set[str]], Awaitable[dict[str, str | None]]]


REQUESTS = Counter(
    "netdeploy_dhcp_requests",
    "Packets reaching the ProxyDHCP, by port (dhcp = 67, pxe = 4011) and outcome",
    ["port", "outcome"],  # offer | ack | ignored | not_for_us | not_pxe | malformed | send_error
)
ANSWERS = Counter(
    "netdeploy_dhcp_answers",
    "ProxyDHCP offers and acks sent, by client firmware (bios, uefi, uefi-http, ipxe)",
    ["firmware"],
)
MALFORMED = Counter(
    "netdeploy_dhcp_malformed",
    "Packets on the DHCP ports that are not DHCP, by reason (truncated, bad_cookie, ...)",
    ["reason"],
)
COALESCED = Counter(
    "netdeploy_dhcp_events_coalesced",
    "Requests folded into an identical earlier event of the same MAC (boot-storm retransmits)",
)
EVENTS_LOST = Counter(
    "netdeploy_dhcp_events_lost", "DHCP event rows dropped because the store fell behind"
)


@dataclass
class _Window:
    opened: float
    detail: dict[str, Any]
    repeats: int = 0


class Coalescer:
    """Per (MAC, kind of request): the first at once, identical ones within ``interval`` as one
    summary with a count. Pure: the caller passes the clock. Holds at most ``max_windows``
    open windows; the oldest is closed early when a new one would exceed that."""

    def __init__(self, interval: float, max_windows: int = 10_000):
        self.interval = interval
        self.max_windows = max_windows
        self._open: OrderedDict[tuple[str, Hashable], _Window] = OrderedDict()

    def add(
        self, mac: str, key: Hashable, detail: dict[str, Any], now: float
    ) -> list[tuple[str, dict[str, Any]]]:
        """Events to write now for this request: none (folded), itself, or a summary + itself."""
        out: list[tuple[str, dict[str, Any]]] = []
        window = self._open.get((mac, key))
        if window is not None and now - window.opened < self.interval:
            window.repeats += 1
            window.detail = detail  # the latest ip/secs; the decision is the same by key
            COALESCED.inc()
            return out
        if window is not None:
            out += self._close((mac, key))
        while len(self._open) >= self.max_windows:
            out += self._close(next(iter(self._open)))
        self._open[(mac, key)] = _Window(now, detail)
        out.append((mac, detail))
        return out

    def due(self, now: float) -> list[tuple[str, dict[str, Any]]]:
        """Summaries of the windows that closed by ``now``."""
        expired = [k for k, w in self._open.items() if now - w.opened >= self.interval]
        return [ev for k in expired for ev in self._close(k)]

    def drain(self) -> list[tuple[str, dict[str, Any]]]:
        return [ev for k in list(self._open) for ev in self._close(k)]

    def _close(self, key: tuple[str, Hashable]) -> list[tuple[str, dict[str, Any]]]:
        window = self._open.pop(key)
        if not window.repeats:
            return []
        detail = dict(window.detail)
        detail["repeats"] = window.repeats
        detail["message"] = (
            f"{window.repeats} more identical {detail.get('request', 'request')}s within "
            f"{self.interval:g} s: {detail.get('message', '')}"
        )
        return [(key[0], detail)]


class EventWriter(BatchWriter[tuple[str, dict[str, Any]]]):
    """Coalesces per MAC, then writes event rows in batches off the packet path."""

    what = "DHCP events"
    log = logging.getLogger("netdeploy.dhcp")

    def __init__(
        self,
        sessions: async_sessionmaker,
        publish: Callable[[list[Event]], Any],
        clusters_of: ClustersOf,
        interval: float,
        flush_every: float = 1.0,
    ):
        super().__init__(sessions, publish, EVENTS_LOST, interval=flush_every)
        self.coalescer = Coalescer(interval)
        self.clusters_of = clusters_of

    def add(self, mac: str, key: Hashable, detail: dict[str, Any]) -> None:
        now = asyncio.get_running_loop().time()
        for item in self.coalescer.add(mac, key, detail, now):
            self.put(item)

    def due(self, closing: bool) -> list[tuple[str, dict[str, Any]]]:
        """Repeats folded into a summary once their window closed (all of them on close)."""
        if closing:
            return self.coalescer.drain()
        return self.coalescer.due(asyncio.get_running_loop().time())

    async def rows(self, batch: list[tuple[str, dict[str, Any]]]) -> list[Event]:
        cluster_of = await self.clusters_of({mac for mac, _ in batch})
        return [eventlog.dhcp_answer(mac, cluster_of.get(mac), detail) for mac, detail in batch]
