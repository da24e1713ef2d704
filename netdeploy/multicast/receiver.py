"""``netdeploy receive``: take an image from a multicast session into a file or block device.

Joins over HTTP, receives slices straight into the target at their offsets, reports and
NAKs what it misses, hashes the image in order as it completes, and exits 0 only when the
sha256 matches. When the session drops it (too lossy or slow), ends without it, or goes
silent (a server restart), it re-joins or fetches what is still missing over unicast HTTP,
so a copy is either verified or reported as failed — never a corrupt copy marked good.
"""

from __future__ import annotations

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
        while self.next < self.map.slices and self.map.has(self.next):
            length = wire.slice_length(self.next, self.target.size, self.slice_size)
            self.sha.update(os.pread(self.target.fd, length, self.next * self.slice_size))
            self.next += 1

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
    """One session, from join answer to an outcome. Blocking; one socket."""

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

    def _send(self, sock: socket.socket, datagram: bytes) -> None:
        if self.dropped:
            return  # a dropped receiver listens but no longer asks
        try:
            sock.send(datagram)
        except OSError:
            self.rejected["send-error"] += 1  # feedback is best effort; the next one follows

    def _status(self, sock: socket.socket, flags: int = 0) -> None:
        self._send(
            sock,
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

    def _report(self, sock: socket.socket) -> None:
        """Answer END: counters, then the missing bitmap window by window."""
        self._status(sock)
        for base, nbits, bitmap in self.map.nak_windows():
            self._send(sock, wire.pack_nak(self.session, self.rid, self.round, base, nbits, bitmap))

    def run(self) -> Outcome:
        group = receiver_socket(self.a["group"], int(self.a["port"]), self.interface)
        # feedback goes out, and ACK/DROP come back, on a connected unicast socket: the group
        # socket is bound to the group address and never sees unicast
        feedback = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            feedback.connect(self.feedback)
            return Outcome(self._loop(group, feedback), self.rejected)
        finally:
            group.close()
            feedback.close()

    def _loop(self, group: socket.socket, sock: socket.socket) -> str:
        buf = bytearray(65536)
        view = memoryview(buf)
        unpack = wire.DATA_HEADER.unpack_from
        now = time.monotonic()
        last_heard, next_status, answered = now, now, (-1, 0.0)
        done_flags, done_sent = 0, 0
        self._status(sock)  # tell the sender where we are before any data flows
        while True:
            now = time.monotonic()
            if done_flags and now >= next_status:
                if done_sent >= DONE_REPEATS:
                    return "verified" if done_flags & wire.Flag.VERIFIED else "bad"
                self._status(sock, done_flags)
                done_sent += 1
                next_status = now + 0.1
            elif now >= next_status:
                self._status(sock)
                next_status = now + STATUS_INTERVAL
            if now - last_heard > self.idle_timeout:
                return "idle"
            ready, _, _ = select.select([group, sock], [], [], 0.05)
            if not ready:
                continue
            try:
                n = ready[-1].recv_into(buf)
            except OSError:  # ICMP port unreachable from a sender that is gone
                self.rejected["send-error"] += 1
                continue
            if n >= wire.DATA_HEADER.size:
                magic, version, kind, session, index, crc = unpack(buf)
                if magic == wire.MAGIC and version == wire.VERSION and kind == wire.Kind.DATA:
                    if session != self.session:
                        self.rejected["session"] += 1
                        continue
                    last_heard = now
                    payload = view[wire.DATA_HEADER.size : n]
                    why = self._check(index, crc, payload)
                    if why:
                        self.rejected[why] += 1
                        continue
                    self.highest = max(self.highest, index + 1)
                    if self.map.has(index):
                        continue
                    os.pwrite(self.target.fd, payload, index * self.slice_size)
                    self.map.add(index)
                    self.hasher.advance(index, payload)
                    self.progress.update(self.map.received * self.slice_size)
                    if self.map.complete and not done_flags:
                        good = self.hasher.done and self.hasher.hexdigest() == self.a["sha256"]
                        done_flags = wire.Flag.COMPLETE | (
                            wire.Flag.VERIFIED if good else wire.Flag.BAD
                        )
                        next_status = now
                    continue
            try:
                msg = wire.parse(view[:n])
            except wire.Malformed:
                self.rejected["malformed"] += 1
                continue
            if msg.session != self.session:
                self.rejected["session"] += 1
                continue
            last_heard = now
            if isinstance(msg, wire.Hello):
                if (msg.size, msg.slice_size) != (self.size, self.slice_size):
                    raise ReceiveError("the session announces another image than the join said")
                self.progress.note(f"waiting for receivers: {msg.joined}/{msg.expected or '?'}")
            elif isinstance(msg, wire.End) and not done_flags:
                if msg.round != answered[0] or now - answered[1] > 0.03:
                    self.round = max(self.round, msg.round)
                    self._report(sock)
                    answered = (msg.round, now)
                    next_status = now + STATUS_INTERVAL
            elif isinstance(msg, wire.Ack) and msg.receiver == self.rid and done_flags:
                return "verified" if done_flags & wire.Flag.VERIFIED else "bad"
            elif isinstance(msg, wire.Drop) and msg.receiver == self.rid and not done_flags:
                self.dropped = True
                self.progress.note("dropped by the sender: will finish by unicast")
            elif isinstance(msg, wire.Finish):
                if msg.code == wire.FINISH_ABORTED and not done_flags:
                    return "idle"  # the server is stopping: join its next incarnation
                if done_flags:
                    return "verified" if done_flags & wire.Flag.VERIFIED else "bad"
                return "dropped" if self.dropped else "incomplete"

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
