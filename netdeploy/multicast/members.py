"""Who takes part in a session: its parameters, and each receiver as the sender sees it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from netdeploy.multicast import wire
from netdeploy.multicast.slicemap import MissingMap


@dataclass(frozen=True)
class SessionParams:
    group: str
    data_port: int
    feedback_port: int
    bind: str = "0.0.0.0"
    interface: str | None = None
    ttl: int = 1
    max_rate: float = 125e6  # bytes/s
    min_receivers: int = 1
    max_wait: float = 60.0
    slow_receiver_loss: float = 0.05
    slow_receiver_timeout: float = 30.0
    slice_size: int = wire.DEFAULT_SLICE_SIZE
    round_wait: float = 0.05


@dataclass
class ReceiverInfo:
    id: int
    name: str
    mac: str | None
    ip: str
    joined_at: float
    last_seen: float
    state: str = "joined"  # joined | receiving | verifying | done | bad | dropped
    reason: str = ""
    received: int = 0
    highest: int = 0
    missing: int | None = None
    report_round: int = -1
    addr: tuple[str, int] | None = None
    interval_mark: tuple[int, int] = (0, 0)  # (received, highest) at the last rate tick
    missing_map: MissingMap | None = None
    asked: MissingMap | None = None  # what it NAKed during the first pass
    asked_count: int = 0
    done_after: float | None = None  # seconds from the session's start to its verdict

    def matches(self, name: str, mac: str | None, ip: str) -> bool:
        """The same machine: same MAC, or (without MACs) the same name from the same address."""
        if mac or self.mac:
            return mac == self.mac
        return (self.name, self.ip) == (name, ip)

    @property
    def active(self) -> bool:
        return self.state in ("joined", "receiving", "verifying")

    def json(self, slices: int, now: float) -> dict[str, Any]:
        loss = 1.0 - self.received / self.highest if self.highest else 0.0
        return {
            "id": self.id,
            "name": self.name,
            "mac": self.mac,
            "ip": self.ip,
            "state": self.state,
            "reason": self.reason,
            "received": self.received,
            "missing": self.missing,
            "progress": round(100.0 * self.received / slices, 1) if slices else 100.0,
            "loss": round(loss, 4),
            "seen_ago": round(now - self.last_seen, 1),
            "done_after": self.done_after,
        }
