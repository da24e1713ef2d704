"""What the dashboard's Multicast section shows, from the multicast service's status.

Pure: it takes ``MulticastService.status()`` (the same dict ``GET /api/multicast/sessions``
answers) and the node labels, and returns what the template places. The page's script
formats the same JSON the same way when it refreshes the section (static/dashboard.js,
``mcSession``); the browser test compares both renderings.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

# what a dropped receiver's reason ends with: the page says it in its own words
_UNICAST_SUFFIX = "; finishes by unicast"
ACTIVE_STATES = ("waiting", "running", "repairing")
TIMES = "\u00d7"  # multiplication sign: "sent 1.03 times the image"


def percent(value: float) -> str:
    """Whole percent, halves rounded up as the page's script does (Math.round)."""
    return f"{math.floor(value + 0.5)}%"


@dataclass
class ReceiverView:
    label: str
    mac: str | None
    ip: str
    state: str
    reason: str
    progress: float
    loss: float
    done_after: float | None

    @property
    def progress_text(self) -> str:
        return percent(self.progress)

    @property
    def loss_text(self) -> str:
        return f"{100 * self.loss:.1f}%"

    @property
    def note(self) -> str:
        """Why it was dropped or judged bad, or when it was done."""
        if self.reason:
            return self.reason
        if self.state == "done" and self.done_after is not None:
            return f"verified after {self.done_after:.1f} s"
        return ""


@dataclass
class SessionView:
    id: int
    image: str
    cluster: str | None
    state: str
    detail: str
    group: str
    port: int
    size: int
    progress: float
    round: int
    rate_mbit: float
    bytes_sent: int
    repair_slices: int
    expected: int | None
    elapsed: float | None
    receivers: list[ReceiverView]

    @property
    def hex_id(self) -> str:
        return f"{self.id:08x}"

    @property
    def progress_text(self) -> str:
        return percent(self.progress)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def title(self) -> str:
        return f"{self.image} → {self.cluster or 'no cluster'}"

    @property
    def state_detail(self) -> str:
        if self.state == "waiting":
            joined = f"{len(self.receivers)} joined"
            return f"{joined} of {self.expected} expected" if self.expected else joined
        return self.detail

    @property
    def ratio_text(self) -> str:
        """Image bytes sent (repairs included) per image byte: what one stream cost."""
        return f"{self.bytes_sent / self.size:.2f}{TIMES}" if self.size else "—"

    @property
    def rate_text(self) -> str:
        if self.active:
            return f"{self.rate_mbit:.1f} Mbit/s" if self.state != "waiting" else "—"
        if self.elapsed:
            return f"{self.bytes_sent * 8 / self.elapsed / 1e6:.1f} Mbit/s average"
        return "—"

    @property
    def tally(self) -> str:
        """Receivers per state, e.g. "2 done, 1 dropped"."""
        counts = Counter(r.state for r in self.receivers)
        return ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "none"


@dataclass
class MulticastView:
    available: bool  # the multicast service runs in this server
    enabled: bool
    sessions: list[SessionView]  # waiting, running or repairing
    finished: list[SessionView]  # newest first

    @property
    def summary(self) -> str:
        """One line for screen readers (aria-live): changes with states, not with progress."""
        if not self.sessions:
            return "No multicast session running."
        parts = [f"{s.title} {s.state}: {s.tally}" for s in self.sessions]
        return "; ".join(parts) + "."

    @property
    def empty_text(self) -> str:
        if not self.available:
            return "Multicast is not running in this server."
        if not self.enabled:
            return (
                "Multicast is off ([multicast] enabled = false): every node gets its image by HTTP."
            )
        return (
            "No multicast sessions yet. One opens when the first node of a cluster that "
            'receives by multicast (distribution = "multicast") joins.'
        )


def _receiver(data: dict[str, Any], labels: dict[str, str]) -> ReceiverView:
    mac = data.get("mac")
    reason = str(data.get("reason") or "")
    return ReceiverView(
        label=labels.get(mac or "") or str(data.get("name") or mac or data.get("ip")),
        mac=mac,
        ip=str(data.get("ip") or ""),
        state=str(data["state"]),
        reason=reason.removesuffix(_UNICAST_SUFFIX),
        progress=float(data.get("progress") or 0.0),
        loss=float(data.get("loss") or 0.0),
        done_after=data.get("done_after"),
    )


def _session(data: dict[str, Any], labels: dict[str, str]) -> SessionView:
    return SessionView(
        id=int(data["id"]),
        image=str(data["image"]),
        cluster=data.get("cluster"),
        state=str(data["state"]),
        detail=str(data.get("detail") or ""),
        group=str(data["group"]),
        port=int(data["port"]),
        size=int(data["size"]),
        progress=float(data.get("progress") or 0.0),
        round=int(data.get("round") or 0),
        rate_mbit=float(data.get("rate_mbit") or 0.0),
        bytes_sent=int(data.get("bytes_sent") or 0),
        repair_slices=int(data.get("repair_slices") or 0),
        expected=data.get("expected"),
        elapsed=data.get("elapsed"),
        # by name, as the node tables are: an admin looks a host up
        receivers=sorted(
            (_receiver(r, labels) for r in data.get("receivers", [])), key=lambda r: r.label
        ),
    )


def multicast_view(
    status: dict[str, Any] | None, labels: dict[str, str], *, enabled: bool = True
) -> MulticastView:
    """``status`` is ``MulticastService.status()``, or None when the service is not running."""
    if status is None:
        return MulticastView(available=False, enabled=enabled, sessions=[], finished=[])
    return MulticastView(
        available=True,
        enabled=enabled,
        sessions=[_session(s, labels) for s in status.get("sessions", [])],
        finished=[_session(s, labels) for s in status.get("finished", [])],
    )
