"""How much the store takes from machines it does not know: bounded rows, folded events.

Anyone on the LAN can PXE-boot (or script) 20,000 MACs. Each is recorded as ``discovered``
(DESIGN: shown, never imaged), but:

- at most ``[discovery] max_rows`` discovered rows are kept: recording one more drops the
  oldest (``Batch.discover`` does it in the same transaction);
- at most ``events_per_minute`` newly seen MACs get their events one by one; the others of
  that minute are folded into one ``discovery`` event with their number;
- a discovered MAC that boots again is logged once per ``record_interval``, like a
  first-stage request (no MAC) per client address.

Pure: the writer hands in ``now``; nothing here reads a clock or the store.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime, timedelta

from netdeploy.config import DiscoveryConfig

WINDOW = timedelta(minutes=1)
MAX_REMEMBERED = 8192  # MACs and addresses whose last logged boot is remembered


class DiscoveryLimits:
    def __init__(self, config: DiscoveryConfig) -> None:
        self.max_rows = config.max_rows
        self.per_minute = config.events_per_minute
        self.interval = timedelta(seconds=config.record_interval)
        self._window: datetime | None = None
        self._logged = 0
        self._folded = 0
        self._recent: OrderedDict[str, datetime] = OrderedDict()

    def new_mac(self, mac: str, now: datetime) -> tuple[bool, int]:
        """A MAC seen for the first time: (log its events one by one?, how many MACs of the
        previous minute were not logged one by one — to be told in one event now). Its next
        boots count as repeats (:meth:`boot_due`) either way."""
        self._due(f"mac:{mac}", now)
        folded = 0
        if self._window is None or now - self._window >= WINDOW:
            folded, self._window, self._logged, self._folded = self._folded, now, 0, 0
        if self._logged < self.per_minute:
            self._logged += 1
            return True, folded
        self._folded += 1
        return False, folded

    def boot_due(self, mac: str, now: datetime) -> bool:
        """Log this boot of an already discovered MAC? Once per ``record_interval``."""
        return self._due(f"mac:{mac}", now)

    def first_stage_due(self, address: str, now: datetime) -> bool:
        """Log this first-stage request (no MAC yet) from ``address``?"""
        return self._due(f"ip:{address}", now)

    def _due(self, key: str, now: datetime) -> bool:
        last = self._recent.get(key)
        if last is not None and now - last < self.interval:
            return False
        self._recent[key] = now
        self._recent.move_to_end(key)
        while len(self._recent) > MAX_REMEMBERED:
            self._recent.popitem(last=False)
        return True
