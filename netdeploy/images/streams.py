"""Who is streaming which image right now, and how many bytes each node has been sent.

The HTTP adapter asks :class:`~netdeploy.images.admission.Admission` for a slot before a large
transfer (so a rack of machines cannot saturate the uplink: past the limit a client gets a
place in line, never a dropped connection) and reports every block it hands to the kernel to
a :class:`Stream` from :class:`TransferLog`. The log is in memory: it exists so the dashboard
can show each node's progress before the node's agent reports anything; the agent's own
reports are the record.
Clocks are passed in, so tests need no sleeps.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Gauge

from netdeploy.config import HttpConfig
from netdeploy.images.admission import Admission

BYTES_SENT = Counter(
    "netdeploy_image_bytes_sent", "Image bytes handed to the kernel for sending", ["image"]
)
STREAMS_ACTIVE = Gauge("netdeploy_image_streams_active", "Image transfers in progress")
STREAMS = Counter(
    "netdeploy_image_streams", "Image transfers finished, by result", ["image", "result"]
)
REFUSED = Counter(
    "netdeploy_image_requests_refused",
    "Image requests answered with an error, by reason",
    ["reason"],
)

ANONYMOUS = "anonymous"
MAX_ENTRIES = 4096  # bounded memory even if many unidentified peers fetch images


@dataclass
class NodeTransfer:
    """Everything sent to one node (or one unidentified peer address) since the server started."""

    key: str
    mac: str | None
    hostname: str | None
    peer: str | None
    image: str = ""
    image_size: int = 0
    bytes_sent: int = 0  # all streams, including retries and resumes
    streams: int = 0
    active: int = 0
    position: int = 0  # the byte offset the latest stream has reached
    complete: bool = False  # the latest stream delivered the image's last byte
    stream_started: float = 0.0  # monotonic
    stream_sent: int = 0
    last_activity: float = 0.0  # wall clock (seconds since the epoch)

    def as_json(self, now: float) -> dict[str, Any]:
        elapsed = now - self.stream_started
        return {
            "mac": self.mac,
            "hostname": self.hostname,
            "peer": self.peer,
            "anonymous": self.mac is None,
            "image": self.image,
            "image_size": self.image_size,
            "bytes_sent": self.bytes_sent,
            "position": self.position,
            "percent": round(100 * self.position / self.image_size, 1) if self.image_size else None,
            "complete": self.complete,
            "streams": self.streams,
            "active": self.active,
            "rate_bps": round(self.stream_sent / elapsed) if self.active and elapsed > 0 else 0,
            "last_activity": datetime.fromtimestamp(self.last_activity, UTC).isoformat(),
        }


@dataclass
class Stream:
    """One response body in flight; :meth:`sent` after each block, :meth:`end` exactly once."""

    log: TransferLog
    entry: NodeTransfer
    image: str
    offset: int
    length: int
    started: float
    sent_bytes: int = 0
    ended: bool = field(default=False, repr=False)

    def sent(self, n: int) -> None:
        self.sent_bytes += n
        e = self.entry
        e.bytes_sent += n
        e.stream_sent += n
        e.position = self.offset + self.sent_bytes
        e.last_activity = self.log.wallclock()
        BYTES_SENT.labels(self.image).inc(n)

    def end(self) -> dict[str, Any]:
        """Close the stream; returns the facts for its event row."""
        if self.ended:
            raise RuntimeError("stream ended twice")
        self.ended = True
        complete = self.sent_bytes == self.length
        e = self.entry
        e.active -= 1
        e.complete = complete and self.offset + self.length == e.image_size
        STREAMS_ACTIVE.dec()
        STREAMS.labels(self.image, "complete" if complete else "aborted").inc()
        return {
            "image": self.image,
            "offset": self.offset,
            "length": self.length,
            "sent": self.sent_bytes,
            "complete": complete,
            "seconds": round(self.log.clock() - self.started, 3),
        }


class TransferLog:
    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
    ):
        self.clock = clock
        self.wallclock = wallclock
        self._entries: OrderedDict[str, NodeTransfer] = OrderedDict()

    def begin(
        self,
        *,
        mac: str | None,
        hostname: str | None,
        peer: str | None,
        image: str,
        image_size: int,
        offset: int,
        length: int,
    ) -> Stream:
        """Start accounting one response body; ``mac`` None means an unidentified client."""
        key = mac or f"{ANONYMOUS}:{peer or '?'}"
        entry = self._entries.get(key)
        if entry is None:
            entry = NodeTransfer(key, mac, hostname, peer)
            self._entries[key] = entry
            self._evict()
        self._entries.move_to_end(key)
        if entry.image != image:  # a different image: position restarts
            entry.position, entry.complete = offset, False
        entry.image, entry.image_size, entry.peer = image, image_size, peer
        entry.hostname = hostname or entry.hostname
        entry.streams += 1
        entry.active += 1
        entry.position = offset
        entry.stream_started = self.clock()
        entry.stream_sent = 0
        entry.last_activity = self.wallclock()
        STREAMS_ACTIVE.inc()
        return Stream(self, entry, image, offset, length, entry.stream_started)

    def _evict(self) -> None:
        while len(self._entries) > MAX_ENTRIES:
            idle = next((k for k, e in self._entries.items() if e.active == 0), None)
            if idle is None:
                return
            del self._entries[idle]

    def get(self, mac: str) -> NodeTransfer | None:
        return self._entries.get(mac)

    def snapshot(self) -> list[dict[str, Any]]:
        now = self.clock()
        return [e.as_json(now) for e in self._entries.values()]


class ImageStreams:
    """One server's streaming state: admission (slots and the line) and the per-node log.

    Built once by the composition root (server.py) and handed to the HTTP image routes.
    """

    def __init__(
        self,
        max_streams: int,
        retry_after: int,
        *,
        per_address: int | None = None,
        queue_wait: float = 0.0,
        stall_timeout: float = 30.0,
    ) -> None:
        # a ticket outlives one parked request and one Retry-After sleep with room to spare
        hold = queue_wait + 3 * retry_after + 10
        self.admission = Admission(max_streams, per_address=per_address, hold=hold)
        self.transfers = TransferLog()
        self.retry_after = retry_after
        self.queue_wait = queue_wait
        self.stall_timeout = stall_timeout

    @classmethod
    def from_config(cls, http: HttpConfig) -> ImageStreams:
        return cls(
            http.max_image_streams,
            http.image_retry_after,
            per_address=http.max_streams_per_address,
            queue_wait=http.image_queue_wait,
            stall_timeout=http.stall_timeout,
        )
