"""``netdeploy receive``: take an image from a multicast session into a file or block device.

Joins over HTTP, receives slices straight into the target at their offsets, reports and
NAKs what it misses, hashes the image in order as it completes, and exits 0 only when the
sha256 matches. When the session drops it (too lossy or slow), ends without it, or goes
silent (a server restart), it re-joins or fetches what is still missing over unicast HTTP,
so a copy is either verified or reported as failed — never a corrupt copy marked good.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import socket
import stat
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from netdeploy.multicast import wire
from netdeploy.multicast.netio import local_address_towards, receiver_socket
from netdeploy.multicast.progress import Progress
from netdeploy.multicast.slicemap import SliceMap
from netdeploy.multicast.unicast import ReceiveError, fetch_ranges, join

STATUS_INTERVAL = 0.25
DONE_REPEATS = 20  # completion reports, 0.1 s apart, until the sender ACKs
# during the pass: every status interval NAK the holes seen since the last one; every
# REFRESH_TICKS intervals again every hole from the hash's position (a repair was lost),
# at most REFRESH_WINDOWS NAK datagrams of it
REFRESH_TICKS = 4
REFRESH_WINDOWS = 4
DRAIN = 64  # datagrams read per wake-up before the timers are looked at again
RELEASE_BYTES = 8 << 20  # hashed bytes handed to write-back (and out of the page cache) at once


class Target:
    """The output: a regular file (sized up front, sparse) or a block device (big enough)."""

    def __init__(self, path: str, size: int):
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ReceiveError(f"cannot open {path} for writing: {exc.strerror}") from None
        mode = os.fstat(self.fd).st_mode
        if stat.S_ISBLK(mode):
            capacity = os.lseek(self.fd, 0, os.SEEK_END)
            if capacity < size:
                os.close(self.fd)
                raise ReceiveError(f"{path} holds {capacity} bytes; the image needs {size}")
        elif stat.S_ISREG(mode):
            os.ftruncate(self.fd, size)
        self.size = size
        self.released = 0

    def release(self, upto: int) -> None:
        """Start writing back ``[released, upto)`` and let it leave the page cache: bytes
        already hashed are never read again, so the final fsync finds little left to do
        and a node imaging from RAM keeps its memory."""
        if upto - self.released >= RELEASE_BYTES or (upto == self.size > self.released):
            with contextlib.suppress(OSError):
                os.posix_fadvise(
                    self.fd, self.released, upto - self.released, os.POSIX_FADV_DONTNEED
                )
            self.released = upto

    def close(self) -> None:
        os.fsync(self.fd)
        os.close(self.fd)


class Hasher:
    """sha256 of the image in slice order, fed as slices arrive; holes are read back later."""

    def __init__(self, target: Target, slice_size: int, slices: SliceMap):
        self.target, self.slice_size, self.map = target, slice_size, slices
        self.sha = hashlib.sha256()
        self.next = 0

    def advance(self, index: int = -1, payload: bytes | memoryview = b"") -> None:
        if index == self.next:
            self.sha.update(payload)
            self.next += 1
        if self.next < self.map.slices and self.map.has(self.next):
            buffer = bytearray(self.slice_size)
            view = memoryview(buffer)
            while self.next < self.map.slices and self.map.has(self.next):
                length = wire.slice_length(self.next, self.target.size, self.slice_size)
                got = os.preadv(self.target.fd, [view[:length]], self.next * self.slice_size)
                self.sha.update(view[:got])
                self.next += 1
        self.target.release(min(self.next * self.slice_size, self.target.size))

    @property
    def done(self) -> bool:
        return self.next == self.map.slices

    def hexdigest(self) -> str:
        return self.sha.hexdigest()


@dataclass
class Outcome:
    result: str  # verified | bad | dropped | incomplete | idle
    rejected: Counter[str] = field(default_factory=Counter)


class SessionReceiver:
    """One session, from join answer to an outcome. Blocking; two sockets (the group's, and
    a connected one for feedback and the sender's unicast answers)."""

    def __init__(
        self,
        answer: dict[str, Any],
        server_host: str,
        target: Target,
        slices: SliceMap,
        hasher: Hasher,
        progress: Progress,
        interface: str | None = None,
        idle_timeout: float = 10.0,
    ):
        self.a = answer
        self.session, self.rid = int(answer["session"]), int(answer["receiver"])
        self.size, self.slice_size = int(answer["size"]), int(answer["slice_size"])
        self.feedback = (server_host, int(answer["feedback_port"]))
        self.target, self.map, self.hasher, self.progress = target, slices, hasher, progress
        self.interface = interface or local_address_towards(server_host)
        self.idle_timeout = idle_timeout
        self.rejected: Counter[str] = Counter()
        self.highest = 0
        self.round = 0
        self.dropped = False
        self.naked_upto = 0  # holes below this were NAKed during the pass
        self.ticks = 0
        self.done_flags = 0
        self.next_status = 0.0
        self.last_heard = 0.0
        self.answered = (-1, 0.0)
        self._sock: socket.socket | None = None

    def _send(self, datagram: bytes) -> None:
        if self.dropped or self._sock is None:
            return  # a dropped receiver listens but no longer asks
        try:
            self._sock.send(datagram)
        except OSError:
            self.rejected["send-error"] += 1  # feedback is best effort; the next one follows

    def _status(self, flags: int = 0) -> None:
        self._send(
            wire.pack_status(
                self.session,
                self.rid,
                self.round,
                self.map.received,
                self.highest,
                self.map.missing,
                flags,
            ),
        )

    def _naks(self, first: int = 0, end: int | None = None, windows: int | None = None) -> None:
        for count, (base, nbits, bitmap) in enumerate(self.map.nak_windows(first=first, end=end)):
            if windows is not None and count >= windows:
                break
            self._send(wire.pack_nak(self.session, self.rid, self.round, base, nbits, bitmap))

    def _report(self) -> None:
        """Answer END: counters, then the missing bitmap window by window."""
        self._status()
        self._naks()

    def _tick(self) -> None:
        """Every status interval: counters; during the pass, the holes seen since (NAK)."""
        self._status()
        self.ticks += 1
        if self.round or self.dropped:
            return  # after the pass the END rounds ask for everything at once
        if self.ticks % REFRESH_TICKS == 0:
            self._naks(self.map.first_missing(self.hasher.next), self.highest, REFRESH_WINDOWS)
        elif self.naked_upto < self.highest:
            self._naks(self.naked_upto, self.highest)
        self.naked_upto = max(self.naked_upto, self.highest)

    def run(self) -> Outcome:
        group = receiver_socket(self.a["group"], int(self.a["port"]), self.interface)
        # feedback goes out, and ACK/DROP come back, on a connected unicast socket: the group
        # socket is bound to the group address and never sees unicast
        feedback = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            feedback.connect(self.feedback)
            self._sock = feedback
            return Outcome(self._loop(group, feedback), self.rejected)
        finally:
            self._sock = None
            group.close()
            feedback.close()

    def _loop(self, group: socket.socket, sock: socket.socket) -> str:
        buf = bytearray(65536)
        view = memoryview(buf)
        now = time.monotonic()
        self.last_heard = self.next_status = now
        self._status()  # tell the sender where we are before any data flows
        done_sent = 0
        sockets = [group, sock]
        while True:
            now = time.monotonic()
            if self.done_flags & (wire.Flag.VERIFIED | wire.Flag.BAD):
                if now >= self.next_status:
                    if done_sent >= DONE_REPEATS:
                        return self._verdict()
                    self._status(self.done_flags)
                    done_sent += 1
                    self.next_status = now + 0.1
            elif now >= self.next_status:
                self._tick()
                self.next_status = now + STATUS_INTERVAL
            if now - self.last_heard > self.idle_timeout:
                return "idle"
            ready, _, _ = select.select(sockets, [], [], 0.05)
            for ready_sock in ready:
                for _ in range(DRAIN):
                    try:
                        n = ready_sock.recv_into(buf, 0, socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        break
                    except OSError:  # ICMP port unreachable from a sender that is gone
                        self.rejected["send-error"] += 1
                        break
                    result = self._datagram(view, n, now)
                    if result:
                        return result

    def _verdict(self) -> str:
        return "verified" if self.done_flags & wire.Flag.VERIFIED else "bad"

    def _datagram(self, view: memoryview, n: int, now: float) -> str | None:
        """One datagram; returns the outcome when the session is over for us."""
        if n >= wire.DATA_HEADER.size:
            magic, version, kind, session, index, crc = wire.DATA_HEADER.unpack_from(view)
            if magic == wire.MAGIC and version == wire.VERSION and kind == wire.Kind.DATA:
                if session != self.session:
                    self.rejected["session"] += 1
                    return None
                self.last_heard = now
                self._data(index, crc, view[wire.DATA_HEADER.size : n], now)
                return None
        try:
            msg = wire.parse(view[:n])
        except wire.Malformed:
            self.rejected["malformed"] += 1
            return None
        if msg.session != self.session:
            self.rejected["session"] += 1
            return None
        self.last_heard = now
        done = self.done_flags & (wire.Flag.VERIFIED | wire.Flag.BAD)
        if isinstance(msg, wire.Hello):
            if (msg.size, msg.slice_size) != (self.size, self.slice_size):
                raise ReceiveError("the session announces another image than the join said")
            self.progress.note(f"waiting for receivers: {msg.joined}/{msg.expected or '?'}")
        elif isinstance(msg, wire.End) and not self.done_flags:
            if msg.round != self.answered[0] or now - self.answered[1] > 0.03:
                self.round = max(self.round, msg.round)
                self._report()
                self.answered = (msg.round, now)
                self.next_status = now + STATUS_INTERVAL
        elif isinstance(msg, wire.Ack) and msg.receiver == self.rid and done:
            return self._verdict()
        elif isinstance(msg, wire.Drop) and msg.receiver == self.rid and not self.done_flags:
            self.dropped = True
            self.progress.note("dropped by the sender: will finish by unicast")
        elif isinstance(msg, wire.Finish):
            if msg.code == wire.FINISH_ABORTED and not done:
                return "idle"  # the server is stopping: join its next incarnation
            if done:
                return self._verdict()
            return "dropped" if self.dropped else "incomplete"
        return None

    def _data(self, index: int, crc: int, payload: memoryview, now: float) -> None:
        why = self._check(index, crc, payload)
        if why:
            self.rejected[why] += 1
            return
        if index >= self.highest:
            self.highest = index + 1
        if not self.map.add(index):
            return  # a repair for another receiver
        os.pwrite(self.target.fd, payload, index * self.slice_size)
        self.progress.update(self.map.received * self.slice_size)
        if self.map.complete and not self.hasher.done:
            # every slice is here: say so before reading back and hashing what was behind
            # the last hole, so the sender does not wait on us through its END rounds
            self._status(wire.Flag.COMPLETE)
        self.hasher.advance(index, payload)
        if self.map.complete and not self.done_flags:
            good = self.hasher.done and self.hasher.hexdigest() == self.a["sha256"]
            self.done_flags = wire.Flag.COMPLETE | (wire.Flag.VERIFIED if good else wire.Flag.BAD)
            self.next_status = now

    def _check(self, index: int, crc: int, payload: memoryview) -> str | None:
        if index >= self.map.slices:
            return "range"
        if len(payload) != wire.slice_length(index, self.size, self.slice_size):
            return "length"
        if wire.crc32(payload) != crc:
            return "crc"
        return None


def receive(
    server: str,
    image: str,
    out: str,
    *,
    mac: str | None = None,
    name: str | None = None,
    token: str | None = None,
    interface: str | None = None,
    idle_timeout: float = 10.0,
    rejoins: int = 3,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Receive ``image`` into ``out``; returns a summary, raises ReceiveError unless verified."""
    started = time.monotonic()
    server = server.rstrip("/")
    host = server.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
    host = socket.gethostbyname(host)
    answer = join(server, image, mac=mac, name=name, token=token)
    size, sha256 = int(answer["size"]), answer["sha256"]
    progress = progress or Progress(size, enabled=False)
    progress.total = size
    target = Target(out, size)
    summary: dict[str, Any] = {"image": image, "size": size, "sessions": [], "unicast_bytes": 0}
    slice_size = int(answer.get("slice_size") or wire.DEFAULT_SLICE_SIZE)
    slices = SliceMap(wire.slice_count(size, slice_size))
    hasher = Hasher(target, slice_size, slices)
    try:
        for attempt in range(rejoins + 1):
            if answer["mode"] != "multicast":
                summary["unicast_reason"] = answer.get("reason", "")
                break
            progress.note(f"session {int(answer['session']):08x}, group {answer['group']}")
            outcome = SessionReceiver(
                answer, host, target, slices, hasher, progress, interface, idle_timeout
            ).run()
            summary["sessions"].append(
                {
                    "id": answer["session"],
                    "result": outcome.result,
                    "rejected": dict(outcome.rejected),
                }
            )
            if outcome.result == "verified":
                break
            if outcome.result == "bad":  # some slice was wrong though its CRC held: start over
                slices = SliceMap(slices.slices)
                hasher = Hasher(target, slice_size, slices)
                break
            if outcome.result in ("dropped", "incomplete") or attempt == rejoins:
                break
            progress.note("the session went silent or stopped; joining again")
            answer = join(server, image, mac=mac, name=name, token=token, retry_for=60.0)
            if answer["mode"] == "multicast" and (
                int(answer["size"]),
                answer["sha256"],
                int(answer["slice_size"]),
            ) != (size, sha256, slice_size):
                raise ReceiveError("the image changed on the server while receiving; start again")
        if not slices.complete:
            url = answer.get("url") or f"{server}/images/{image}"
            progress.note(f"fetching {slices.missing} missing slices from {url}")
            summary["unicast_bytes"] = fetch_ranges(
                url, target.fd, slices, slice_size, size, token=token, progress=progress
            )
            hasher.advance()
        digest = hasher.hexdigest() if hasher.done else ""
        if digest != sha256:
            raise ReceiveError(
                f"sha256 of {out} is {digest or 'incomplete'}, expected {sha256}: "
                "the copy is NOT good; run the command again"
            )
    finally:
        target.close()
        progress.finish()
    summary.update(sha256=sha256, seconds=round(time.monotonic() - started, 2))
    return summary
