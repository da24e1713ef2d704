"""Session rules as pure functions: when to start, whom to drop, how fast to send.

Nothing here reads a clock or touches a socket; callers pass ``now`` and counters, so the
rules are tested exhaustively without I/O.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

ETHERNET_MTU = 1500
IPV4_HEADER = 20
UDP_HEADER = 8
ETHERNET_FRAME_OVERHEAD = 14  # what tc and the interface counters see per frame (no FCS)
# Judge a receiver's loss only after this many slices were due, so that one early burst of
# loss (or a receiver that joined a moment late) is not mistaken for a bad link.
MIN_SLICES_FOR_LOSS = 256


def start_reason(
    joined: int, expected: int | None, min_receivers: int, waited: float, max_wait: float
) -> str | None:
    """Why a waiting session may start now, or None to keep waiting.

    The rule of udpcast's --min-receivers/--max-wait and WDS's "start at N clients or a
    time": every expected receiver has joined; or at least ``min_receivers`` have joined and
    the first of them has waited ``max_wait`` seconds.
    """
    if expected and joined >= expected:
        return f"all {expected} expected receivers joined"
    if joined >= max(min_receivers, 1) and waited >= max_wait:
        return f"{joined} receivers joined (min_receivers={min_receivers}) and max_wait passed"
    return None


def too_lossy(received: int, highest: int, bound: float, slices: int) -> bool:
    """True when a receiver lost more than ``bound`` of the slices sent so far.

    ``highest`` is one past the highest slice it saw. A receiver above the bound would make
    every other receiver wait for its repairs; it finishes by unicast instead (as WDS does).
    """
    due = min(MIN_SLICES_FOR_LOSS, max(slices // 2, 1))
    if highest < due:
        return False
    return 1.0 - received / highest > bound


def within_repair_allowance(asked: int, sent: int, bound: float) -> bool:
    """May a receiver that asked for ``asked`` distinct slices of the ``sent`` so far have its
    requests repaired during the pass?

    Its allowance is what an acceptable receiver can lose (``bound``), counted on at least
    MIN_SLICES_FOR_LOSS slices: before :func:`too_lossy` can judge a bad link, that link
    costs the others at most ``bound * MIN_SLICES_FOR_LOSS`` repairs (13 at 5 %)."""
    return asked <= bound * max(sent, MIN_SLICES_FOR_LOSS)


def frames_on_wire(udp_payload: int, mtu: int = ETHERNET_MTU) -> int:
    per_fragment = (mtu - IPV4_HEADER) // 8 * 8  # RFC 791: offsets in 8-byte units
    return -(-(udp_payload + UDP_HEADER) // per_fragment)


def wire_bytes(udp_payload: int, mtu: int = ETHERNET_MTU) -> int:
    """Bytes one datagram costs on an Ethernet link, IPv4 fragments included."""
    frames = frames_on_wire(udp_payload, mtu)
    return udp_payload + UDP_HEADER + frames * (IPV4_HEADER + ETHERNET_FRAME_OVERHEAD)


@dataclass
class RateControl:
    """Sending rate in bytes/s: the configured maximum, less while receivers report loss.

    The signal is the median receiver's loss in the last interval, so one bad link does not
    slow the whole rack (that receiver is dropped by :func:`too_lossy` instead), while loss
    at most receivers (a congested uplink) makes the sender back off multiplicatively and
    then creep back up (AIMD, as TCP does: RFC 5681 §3.1).
    """

    max_rate: float
    rate: float = 0.0
    backoff_loss: float = 0.02
    calm_loss: float = 0.005
    decrease: float = 0.7
    floor_fraction: float = 0.02
    backoffs: int = 0  # how often it backed off, and how low it went (the status API shows)
    lowest: float = 0.0

    def __post_init__(self) -> None:
        self.rate = self.rate or self.max_rate
        self.lowest = self.rate

    def on_interval(self, losses: list[float]) -> float:
        """Feed the interval loss of each reporting receiver; returns the new rate."""
        if not losses:
            return self.rate
        loss = statistics.median(losses)
        if loss > self.backoff_loss:
            self.rate = max(self.rate * self.decrease, self.max_rate * self.floor_fraction)
            self.backoffs += 1
            self.lowest = min(self.lowest, self.rate)
        elif loss < self.calm_loss:
            self.rate = min(self.rate + self.max_rate / 20, self.max_rate)
        return self.rate


@dataclass
class Pacer:
    """Token bucket: may we send ``n`` bytes at ``now``, and if not, how long to wait."""

    rate: float  # bytes per second
    burst: float  # bytes
    tokens: float = 0.0
    last: float | None = None

    def _refill(self, now: float) -> None:
        if self.last is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        else:
            self.tokens = self.burst
        self.last = now

    def delay(self, nbytes: int, now: float) -> float:
        """Seconds to wait before ``nbytes`` may go; 0 means send now (then call spend)."""
        self._refill(now)
        if self.tokens >= nbytes:
            return 0.0
        return (nbytes - self.tokens) / self.rate

    def spend(self, nbytes: int) -> None:
        self.tokens -= nbytes
