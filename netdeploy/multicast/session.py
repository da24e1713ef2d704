"""One multicast sender session: wait for receivers, stream the image, repair, finish.

A session sends one image once to a group. Receivers report counters while the first pass
runs (the sender backs off when most of them lose, and drops one that loses too much);
after the pass, rounds of END → reports → repairs follow, each repair sent once for every
receiver that asked (the union of their NAK bitmaps). Receivers that stay incomplete, go
silent or lose too much are told to finish by unicast; they never hold the others back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from netdeploy.multicast import policy, wire
from netdeploy.multicast.members import ReceiverInfo, SessionParams
from netdeploy.multicast.netio import sender_socket
from netdeploy.multicast.slicemap import MissingMap, RepairQueue, runs, set_bits, union

log = logging.getLogger("netdeploy.multicast")

BATCH_SLICES = 64  # slices read from the image per pread
HELLO_INTERVAL = 0.5
RATE_INTERVAL = 0.5
END_REPEATS = 8
# a slice repaired during the pass is not sent again for this long: the receivers that
# lost it together get one copy (their NAKs arrive within a status interval of each other)
REPAIR_HOLDOFF = 0.5
REPAIR_BURST = 16  # queued repairs sent before the next new slice of the pass


class SenderSession:
    """Streams ``path`` (``size`` bytes, expected ``sha256``) to everyone who joined."""

    def __init__(
        self,
        image: str,
        cluster: str | None,
        path: str,
        size: int,
        sha256: str,
        params: SessionParams,
        expected: int | None = None,
        on_change: Callable[[str, dict[str, Any]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.id = secrets.randbits(32) or 1
        self.image, self.cluster, self.path = image, cluster, path
        self.size, self.sha256, self.params, self.expected = size, sha256, params, expected
        self.slices = wire.slice_count(size, params.slice_size)
        self.receivers: dict[int, ReceiverInfo] = {}
        self.state = "waiting"  # waiting | running | repairing | finished | failed
        self.detail = ""
        self.created_at = clock()
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.pass_ended_at: float | None = None
        self.first_join_at: float | None = None
        self.round = 0
        self.sent_slices = 0  # first-pass progress
        self.repair_slices = 0
        self.pass_repairs = 0  # of which sent during the first pass, as receivers asked
        self.bytes_sent = 0
        self.wire_bytes = 0
        self.rejected: Counter[str] = Counter()
        self.rate = policy.RateControl(params.max_rate)
        self.after: asyncio.Future[Any] | None = None  # an earlier session of the same image
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._clock = clock
        self._on_change = on_change or (lambda kind, detail: None)
        self._joined = asyncio.Event()
        self._reported = asyncio.Event()
        self._sock: socket.socket | None = None
        self._fd: int | None = None
        self._repairs = RepairQueue(self.slices, REPAIR_HOLDOFF)
        self._repair_view: memoryview | None = None  # one slice, read for a pass repair

    # ------------------------------------------------------------------ receivers

    def join(self, name: str, mac: str | None, ip: str) -> ReceiverInfo:
        """Add a receiver, or return the one already there (joining twice changes nothing)."""
        for rec in self.receivers.values():
            if rec.matches(name, mac, ip):
                rec.last_seen = self._clock()
                return rec
        rid = secrets.randbits(32) or 1
        while rid in self.receivers:
            rid = secrets.randbits(32) or 1
        now = self._clock()
        rec = ReceiverInfo(rid, name, mac, ip, joined_at=now, last_seen=now)
        self.receivers[rid] = rec
        self.first_join_at = self.first_join_at or now
        self._joined.set()
        return rec

    def _drop(self, rec: ReceiverInfo, reason: wire.DropReason, why: str) -> None:
        rec.state, rec.reason = "dropped", f"{why}; finishes by unicast"
        log.warning("session %08x: dropped receiver %s (%s): %s", self.id, rec.name, rec.ip, why)
        self._tell(rec, wire.pack_drop(self.id, rec.id, reason))
        self._on_change("receiver_dropped", {"receiver": rec.name, "mac": rec.mac, "why": why})
        self._reported.set()

    def _tell(self, rec: ReceiverInfo, datagram: bytes) -> None:
        if self._sock and rec.addr:
            with contextlib.suppress(BlockingIOError, OSError):
                self._sock.sendto(datagram, rec.addr)

    # ------------------------------------------------------------------ feedback

    def _on_readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                datagram, addr = self._sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ICMP errors queued on the socket
                log.debug("session %08x: feedback socket: %s", self.id, exc)
                return
            try:
                self._on_feedback(wire.parse(datagram), addr)
            except wire.Malformed:
                self.rejected["malformed"] += 1

    def _on_feedback(self, msg: wire.Message, addr: tuple[str, int]) -> None:
        if not isinstance(msg, wire.Status | wire.Nak):
            self.rejected["type"] += 1
            return
        rec = self.receivers.get(msg.receiver)
        if msg.session != self.id or rec is None:
            self.rejected["session"] += 1
            return
        if addr[0] != rec.ip:  # a receiver speaks from the address it joined from
            self.rejected["address"] += 1
            return
        rec.addr, rec.last_seen = addr, self._clock()
        if rec.state == "dropped":
            self._tell(rec, wire.pack_drop(self.id, rec.id, wire.DropReason.SLOW))
            return
        if rec.state in ("done", "bad"):
            self._tell(rec, wire.pack_ack(self.id, rec.id))
            return
        if rec.report_round < 0:
            self._joined.set()  # it listens now: it counts towards the start rule
        if isinstance(msg, wire.Nak) and msg.round == 0:
            self._on_pass_nak(rec, msg)
            return
        if msg.round > rec.report_round:
            rec.report_round = msg.round
            rec.missing_map = rec.missing_map or MissingMap(self.slices)
            rec.missing_map.clear()
        if isinstance(msg, wire.Nak):
            if msg.round == rec.report_round and rec.missing_map is not None:
                try:
                    rec.missing_map.apply(msg.base, msg.nbits, msg.bitmap)
                except ValueError:
                    self.rejected["range"] += 1
            return
        if msg.received > self.slices or msg.highest > self.slices:
            self.rejected["range"] += 1
            return
        rec.received, rec.highest, rec.missing = msg.received, msg.highest, msg.missing
        if msg.flags & wire.Flag.COMPLETE:
            rec.received = rec.highest = self.slices
            rec.missing = 0
            if msg.flags & (wire.Flag.VERIFIED | wire.Flag.BAD):
                good = bool(msg.flags & wire.Flag.VERIFIED)
                rec.state = "done" if good else "bad"
                if self.started_at is not None:
                    rec.done_after = round(self._clock() - self.started_at, 3)
                rec.reason = "" if good else "sha256 of the copy did not match"
                self._tell(rec, wire.pack_ack(self.id, rec.id))
                self._on_change("receiver_" + rec.state, {"receiver": rec.name, "mac": rec.mac})
            else:
                rec.state = "verifying"
        elif rec.state == "joined":
            rec.state = "receiving"
        # judge loss against what we really sent: a forged slice far ahead must not make
        # an honest receiver look lossy
        due = min(rec.highest, self.sent_slices)
        got = min(rec.received, due)
        if self.state == "running" and policy.too_lossy(
            got, due, self.params.slow_receiver_loss, self.slices
        ):
            loss = 1 - got / due
            self._drop(rec, wire.DropReason.LOSSY, f"lost {loss:.0%} of the slices")
        self._reported.set()

    def _on_pass_nak(self, rec: ReceiverInfo, msg: wire.Nak) -> None:
        """A hole the receiver saw during the first pass: repair it now, once for all.

        Every slice a receiver asks for counts against it like a lost one, so a receiver
        that asks for more than ``slow_receiver_loss`` of what was sent (lossy or lying) is
        dropped, and its requests stop costing the others."""
        if self.state != "running":
            return  # after the pass the END rounds ask, and they carry a round number
        rec.asked = rec.asked or MissingMap(self.slices)
        due, now = self.sent_slices, self._clock()
        try:
            # only what was sent counts: a slice forged far ahead must not make an honest
            # receiver ask for (and be blamed for) everything in between
            rec.asked_count += rec.asked.merge(msg.base, msg.nbits, msg.bitmap, due)
        except ValueError:
            self.rejected["range"] += 1
            return
        bound = self.params.slow_receiver_loss
        if policy.too_lossy(max(due - rec.asked_count, 0), due, bound, self.slices):
            loss = min(rec.asked_count / max(due, 1), 1.0)
            self._drop(rec, wire.DropReason.LOSSY, f"asked for {loss:.0%} of the slices again")
        elif policy.within_repair_allowance(rec.asked_count, due, bound):
            self._repairs.request(msg.base, msg.nbits, msg.bitmap, due, now)
        # else: over its allowance before it can be judged; it asks again (its refresh)

    # ------------------------------------------------------------------ sending

    async def _writable(self) -> None:
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        fd = self._sock.fileno()
        loop.add_writer(fd, lambda: ready.done() or ready.set_result(None))
        try:
            await ready
        finally:
            loop.remove_writer(fd)

    async def _send(self, buffers: list[bytes | memoryview], nbytes: int) -> None:
        assert self._sock is not None
        cost = policy.wire_bytes(nbytes)
        pacer = self._pacer
        pacer.rate = self.rate.rate
        delay = pacer.delay(cost, self._clock())
        if delay > 0:
            await asyncio.sleep(max(delay, 0.001))
            pacer.delay(cost, self._clock())
        while True:
            try:
                self._sock.sendmsg(buffers, [], 0, (self.params.group, self.params.data_port))
                break
            except BlockingIOError:  # the local link is full: it paces us
                await self._writable()
            except InterruptedError:
                continue
        pacer.spend(cost)
        self.bytes_sent += nbytes
        self.wire_bytes += cost

    async def _send_control(self, datagram: bytes) -> None:
        await self._send([datagram], len(datagram))

    async def _send_runs(self, runs: Iterable[tuple[int, int]], first_pass: bool) -> None:
        """Send slices ``[first, end)`` run by run, reading the image in batches."""
        assert self._fd is not None
        size, slice_size = self.size, self.params.slice_size
        buffer = bytearray(BATCH_SLICES * slice_size)
        view = memoryview(buffer)
        next_tick = self._clock() + RATE_INTERVAL
        for first, end in runs:
            for batch in range(first, end, BATCH_SLICES):
                stop = min(batch + BATCH_SLICES, end)
                offset = batch * slice_size
                length = min(stop * slice_size, size) - offset
                got = os.preadv(self._fd, [view[:length]], offset)
                if got != length:
                    raise OSError(f"{self.path} is shorter than {size} bytes: changed under us?")
                for index in range(batch, stop):
                    start = (index - batch) * slice_size
                    payload = view[start : min(start + slice_size, length)]
                    header = wire.data_header(self.id, index, payload)
                    await self._send([header, payload], len(header) + len(payload))
                    if first_pass:
                        self.sent_slices = index + 1
                        if self._repairs.count:
                            await self._send_pass_repairs()
                    else:
                        self.repair_slices += 1
                if self._clock() >= next_tick:
                    next_tick = self._clock() + RATE_INTERVAL
                    self._tick()
                if not any(r.active for r in self.receivers.values()):
                    return

    async def _send_pass_repairs(self) -> None:
        """What receivers asked for during the pass, lowest first, before the next slice."""
        assert self._fd is not None
        slice_size = self.params.slice_size
        if self._repair_view is None:
            self._repair_view = memoryview(bytearray(slice_size))
        view = self._repair_view
        for index in self._repairs.take(REPAIR_BURST, self._clock()):
            length = wire.slice_length(index, self.size, slice_size)
            if os.preadv(self._fd, [view[:length]], index * slice_size) != length:
                raise OSError(f"{self.path} is shorter than {self.size} bytes: changed under us?")
            header = wire.data_header(self.id, index, view[:length])
            await self._send([header, view[:length]], len(header) + length)
            self.repair_slices += 1
            self.pass_repairs += 1

    def _tick(self) -> None:
        """Every RATE_INTERVAL during the pass: rate control and silent receivers."""
        now = self._clock()
        losses = []
        for rec in self.receivers.values():
            if not rec.active:
                continue
            if now - rec.last_seen > self.params.slow_receiver_timeout:
                self._drop(rec, wire.DropReason.SILENT, "no report")
                continue
            got, due = rec.received - rec.interval_mark[0], rec.highest - rec.interval_mark[1]
            if due >= 16:
                losses.append(max(0.0, 1.0 - got / due))
                rec.interval_mark = (rec.received, rec.highest)
        self.rate.on_interval(losses)

    # ------------------------------------------------------------------ phases

    async def _wait_start(self) -> str:
        while True:
            self._joined.clear()
            now = self._clock()
            waited = now - self.first_join_at if self.first_join_at else 0.0
            # a receiver counts once it listens on the group (its first report), not at its
            # HTTP join: what we sent before it bound its socket would only need repairs
            joined = sum(1 for r in self.receivers.values() if r.active and r.report_round >= 0)
            reason = policy.start_reason(
                joined, self.expected, self.params.min_receivers, waited, self.params.max_wait
            )
            # an earlier session of this image runs: wait for it, saying HELLO meanwhile so
            # our receivers know we are alive and do not give up on us
            if reason and (self.after is None or self.after.done()):
                return reason
            await self._send_control(
                wire.pack_hello(
                    self.id,
                    self.size,
                    self.params.slice_size,
                    self.slices,
                    joined,
                    self.expected or 0,
                )
            )
            timeout = HELLO_INTERVAL
            if self.first_join_at:
                timeout = min(timeout, max(self.params.max_wait - waited, 0.01))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._joined.wait(), timeout)

    async def _repair(self) -> None:
        pass_end = self._clock()
        while True:
            waiting = [r for r in self.receivers.values() if r.active]
            if not waiting:
                return
            now = self._clock()
            for rec in waiting:
                if now - pass_end > self.params.slow_receiver_timeout:
                    self._drop(rec, wire.DropReason.SLOW, "still incomplete after the repairs")
                elif now - rec.last_seen > self.params.slow_receiver_timeout:
                    self._drop(rec, wire.DropReason.SILENT, "no report")
            self.round += 1
            for attempt in range(END_REPEATS):
                self._reported.clear()
                await self._send_control(wire.pack_end(self.id, self.round, self.slices))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._all_reported(), self.params.round_wait * (1 + attempt)
                    )
                    break
            reporters = [
                r
                for r in self.receivers.values()
                if r.state == "receiving" and r.report_round == self.round and r.missing_map
            ]
            wanted = union((r.missing_map for r in reporters if r.missing_map), self.slices)
            wanted_runs = runs(set_bits(wanted))
            log.debug(
                "session %08x: round %d: %d/%d reported after %d END; repairing %d slices",
                self.id,
                self.round,
                len(reporters),
                len(waiting),
                attempt + 1,
                sum(end - first for first, end in wanted_runs),
            )
            if wanted_runs:
                await self._send_runs(wanted_runs, first_pass=False)
            else:
                await asyncio.sleep(self.params.round_wait)

    async def _all_reported(self) -> None:
        while any(
            r.state in ("joined", "receiving") and r.report_round < self.round
            for r in self.receivers.values()
        ):
            await self._reported.wait()
            self._reported.clear()

    async def run(self) -> None:
        """The whole life of the session; never raises (the failure is its state)."""
        loop = asyncio.get_running_loop()
        p = self.params
        try:
            self._sock = sender_socket(p.bind, p.feedback_port, p.group, p.interface, p.ttl)
            self._fd = os.open(self.path, os.O_RDONLY)
            loop.add_reader(self._sock.fileno(), self._on_readable)
            self._pacer = policy.Pacer(self.rate.rate, burst=max(self.rate.rate * 0.004, 65536))
            reason = await self._wait_start()
            self.state, self.started_at = "running", self._clock()
            log.info("session %08x (%s): starting: %s", self.id, self.image, reason)
            self._on_change("session_started", {"reason": reason, **self._summary()})
            await self._send_runs([(0, self.slices)], first_pass=True)
            self.state, self.pass_ended_at = "repairing", self._clock()
            await self._repair()
            for _ in range(3):
                await self._send_control(wire.pack_finish(self.id))
                await asyncio.sleep(0.02)
            self.state = "finished"
        except asyncio.CancelledError:
            self.state, self.detail = "failed", "stopped with the server"
            with contextlib.suppress(OSError, BlockingIOError):
                if self._sock:
                    self._sock.sendto(
                        wire.pack_finish(self.id, wire.FINISH_ABORTED), (p.group, p.data_port)
                    )
            raise
        except OSError as exc:
            self.state, self.detail = "failed", f"{exc.strerror or exc}"
            log.error("session %08x (%s) failed: %s", self.id, self.image, self.detail)
        finally:
            self.finished_at = self._clock()
            if self._sock is not None:
                loop.remove_reader(self._sock.fileno())
                self._sock.close()
            if self._fd is not None:
                os.close(self._fd)
            if not self.done.done():
                self.done.set_result(None)
            self._on_change("session_" + self.state, self._summary())

    def _summary(self) -> dict[str, Any]:
        counts = Counter(r.state for r in self.receivers.values())
        return {
            "session": f"{self.id:08x}",
            "image": self.image,
            "receivers": len(self.receivers),
            **{f"receivers_{k}": v for k, v in counts.items()},
            "bytes_sent": self.bytes_sent,
            "repair_slices": self.repair_slices,
            **({"detail": self.detail} if self.detail else {}),
        }

    def _phases(self, end: float) -> dict[str, float]:
        """Seconds spent waiting for receivers (first join to start), in the first pass and
        in the repair rounds: where a slow session lost its time (bench/multicast.py)."""
        out: dict[str, float] = {}
        if self.first_join_at is not None:
            out["waiting"] = round((self.started_at or end) - self.first_join_at, 3)
        if self.started_at is not None:
            out["pass"] = round((self.pass_ended_at or end) - self.started_at, 3)
        if self.pass_ended_at is not None:
            out["repair"] = round(end - self.pass_ended_at, 3)
        return out

    def json(self) -> dict[str, Any]:
        now = self._clock()
        end = self.finished_at or now
        return {
            "id": self.id,
            "image": self.image,
            "cluster": self.cluster,
            "state": self.state,
            "detail": self.detail,
            "group": self.params.group,
            "port": self.params.data_port,
            "feedback_port": self.params.feedback_port,
            "size": self.size,
            "sha256": self.sha256,
            "slice_size": self.params.slice_size,
            "slices": self.slices,
            "expected": self.expected,
            "min_receivers": self.params.min_receivers,
            "max_wait": self.params.max_wait,
            "progress": round(100.0 * self.sent_slices / self.slices, 1) if self.slices else 100.0,
            "round": self.round,
            "rate_mbit": round(self.rate.rate * 8 / 1e6, 1),
            "rate_min_mbit": round(self.rate.lowest * 8 / 1e6, 1),
            "backoffs": self.rate.backoffs,
            "bytes_sent": self.bytes_sent,
            "wire_bytes": self.wire_bytes,
            "repair_slices": self.repair_slices,
            "pass_repairs": self.pass_repairs,
            "rejected": dict(self.rejected),
            "age": round(now - self.created_at, 1),
            "elapsed": round(end - self.started_at, 2) if self.started_at else None,
            "phases": self._phases(end),
            "receivers": [r.json(self.slices, now) for r in self.receivers.values()],
        }
