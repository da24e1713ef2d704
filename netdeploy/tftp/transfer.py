"""One read transfer: its own socket (the server's TID), windows of DATA, ACKs, retransmission.

The data path is kept short on purpose (docs/decisions/0013): the engine's data plane
(:mod:`netdeploy.tftp.plane`) calls :meth:`Transfer.readable` for every ready socket from one
private epoll, an ACK is four bytes compared in place, and the retransmission timer is lazy
(one timer per timeout period, not one per packet). After an ACK is answered the socket is
read again at once: on a loaded host the client usually runs the moment our DATA wakes it
and its next ACK is already queued when ``sendto`` returns, so a lockstep transfer moves
several blocks per wake-up instead of one loop iteration per block. Statistics are counted
at the end, from block numbers, not per packet. Block numbers are tracked as absolute
integers and only folded to 16 bits on the wire, so files past 65535 blocks roll over cleanly.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from netdeploy.tftp import packets
from netdeploy.tftp.files import Content
from netdeploy.tftp.packets import ErrorCode, Op
from netdeploy.tftp.plane import DataPlane

DRAIN = 64  # datagrams one transfer handles per wake-up before the loop serves others
MAX_BACKOFF = 8.0  # seconds; a doubled timeout never waits longer than this (or the RFC 2349 one)


@dataclass
class TransferStats:
    """What one request came to; becomes metrics and an event row."""

    client_ip: str
    client_port: int
    filename: str
    outcome: str = "ok"  # ok | timeout | aborted | error | refused | reclaimed
    message: str = ""
    size: int = 0
    bytes_sent: int = 0  # payload bytes put on the wire, retransmissions included
    blocks: int = 0
    retransmits: int = 0
    blksize: int = 512
    windowsize: int = 1
    virtual: bool = False
    started: float = field(default_factory=time.monotonic)
    duration: float = 0.0

    def detail(self) -> dict[str, object]:
        detail: dict[str, object] = {
            "file": self.filename,
            "client": self.client_ip,
            "outcome": self.outcome,
            "bytes": self.size if self.outcome == "ok" else self.bytes_sent,
            "seconds": round(self.duration, 4),
            "retransmits": self.retransmits,
            "blksize": self.blksize,
            "windowsize": self.windowsize,
        }
        if self.virtual:
            detail["virtual"] = True
        if self.message:
            detail["message"] = self.message
        return detail


# What an ended transfer's record says; the C plane's ends (native.py) are told in these words.
def send_failed(reason: str) -> str:
    return f"send failed: {reason}"


def no_first_ack(budget: float) -> str:
    return f"no first ACK within {budget:g} s"


def no_ack(retries: int) -> str:
    return f"no ACK after {retries} retransmissions"


def client_error(code: int, text: str) -> str:
    return f"client sent error {code}: {text}"


def client_opcode(code: int) -> str:
    return f"client sent opcode {code} during a read"


@dataclass(frozen=True, slots=True)
class Terms:
    """What a transfer runs with: the negotiated options and the configured limits. Both
    data planes take them (this module's :class:`Transfer` and the C plane's
    :class:`~netdeploy.tftp.native.NativeTransfer`)."""

    blksize: int
    windowsize: int
    timeout: float  # the first retransmission's wait; doubled up to `retries` times
    retries: int
    oack: bytes | None  # sent first (RFC 2347); None: DATA 1 is
    gso_batch: int = 1  # DATA packets per send (UDP_SEGMENT); 1 = one each
    first_ack_budget: float = 10.0


class Transfer:
    """Sends ``content`` to ``peer`` from ``sock``; calls ``on_done(self)`` exactly once."""

    def __init__(
        self,
        sock: socket.socket,
        peer: tuple[str, int],
        content: Content,
        stats: TransferStats,
        terms: Terms,
        *,
        on_done: Callable[[Transfer], None],
        on_confirmed: Callable[[Transfer], None] | None = None,
    ):
        self.sock = sock
        self.peer = peer
        self.content = content
        self.stats = stats
        # copied out of terms: the packet path reads them as plain attributes
        self.blksize = blksize = terms.blksize
        self.windowsize = terms.windowsize
        self.timeout = terms.timeout
        self.retries = terms.retries
        self.oack = oack = terms.oack
        self.on_done = on_done
        self.gso_batch = terms.gso_batch
        self.first_ack_budget = terms.first_ack_budget
        self.on_confirmed = on_confirmed
        self.confirmed = False  # the client's first ACK arrived: it is real, not spoofed
        self.loop = asyncio.get_running_loop()
        self.begun = self.loop.time()
        # Absolute block numbers. The last block is shorter than blksize, possibly empty.
        self.last_block = content.size // blksize + 1
        self.acked = -1 if oack else 0  # -1: waiting for ACK 0 of our OACK (RFC 2347)
        self.sent = 0
        self.tries = 0
        self.deadline = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.done = False
        self.resent_bytes = 0  # payload bytes sent again (the first sends are counted at the end)
        self.plane: DataPlane | None = None
        self.packets = content.packets(blksize)  # shared, prebuilt for a cached file

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, plane: DataPlane | None = None) -> None:
        """Start sending; the socket is watched by ``plane`` (else by the loop itself)."""
        self.plane = plane
        if plane is None:
            self.loop.add_reader(self.sock.fileno(), self.readable)
        else:
            plane.watch(self.sock.fileno(), self.readable)
        self._send_window()

    def finish(self, outcome: str, message: str = "") -> None:
        if self.done:
            return
        self.done = True
        stats = self.stats
        stats.outcome = outcome
        stats.message = message
        stats.duration = time.monotonic() - stats.started
        stats.blocks = self.sent
        stats.bytes_sent = min(self.sent * self.blksize, self.content.size) + self.resent_bytes
        if self.timer:
            self.timer.cancel()
        if self.plane is None:
            self.loop.remove_reader(self.sock.fileno())
        else:
            self.plane.unwatch(self.sock.fileno())
        self.sock.close()
        self.content.close()
        self.on_done(self)

    def abort(self, code: ErrorCode, message: str) -> None:
        """End the transfer and tell the client why (server shutting down, limits)."""
        if not self.done:
            self._send(packets.error(code, message))
            self.finish("error", message)

    # -- sending -------------------------------------------------------------------------
    def _send(self, packet: bytes) -> None:
        try:
            self.sock.send(packet)
        except (BlockingIOError, InterruptedError):
            pass  # a full socket buffer is a lost packet: the retransmission timer recovers
        except OSError as exc:  # e.g. network unreachable: nothing will get through
            self.finish("error", send_failed(exc.strerror or str(exc)))

    def _send_window(self) -> None:
        """Send the window after the last acknowledged block (RFC 7440 §4), or the OACK."""
        if self.acked < 0:
            assert self.oack is not None
            self._send(self.oack)
            self.stats.retransmits += self.tries > 0
        elif self.windowsize == 1:  # lockstep, as PXE ROMs do: one block, no window
            block = self.acked + 1
            packet = self._packet(block)
            try:
                self.sock.send(packet)
            except (BlockingIOError, InterruptedError):
                pass  # a full socket buffer is a lost packet: the timer recovers
            except OSError as exc:
                self.finish("error", send_failed(exc.strerror or str(exc)))
                return
            if block <= self.sent:
                self.stats.retransmits += 1
                self.resent_bytes += len(packet) - 4
            else:
                self.sent = block
        else:
            first = self.acked + 1
            last = min(self.acked + self.windowsize, self.last_block)
            if first < last and self.gso_batch > 1:
                sent = self._send_segmented(first, last)
            else:
                sent = self._send_each(first, last)
            if not sent:
                return
            if first <= self.sent:  # blocks sent before: retransmissions
                again = min(last, self.sent)
                self.stats.retransmits += again - first + 1
                self.resent_bytes += (
                    min(again * self.blksize, self.content.size) - (first - 1) * self.blksize
                )
            if last > self.sent:
                self.sent = last
        self._arm()

    def _packet(self, block: int) -> bytes:
        table = self.packets.packets
        packet = table[block - 1] if table else None
        return self.packets.packet(block) if packet is None else packet

    def _send_each(self, first: int, last: int) -> bool:
        send, packet = self.sock.send, self._packet
        for block in range(first, last + 1):
            try:
                send(packet(block))
            except (BlockingIOError, InterruptedError):
                pass  # a full socket buffer is a lost packet: the timer recovers
            except OSError as exc:
                self.finish("error", send_failed(exc.strerror or str(exc)))
                return False
        return True

    def _send_segmented(self, first: int, last: int) -> bool:
        """Hand the kernel up to ``gso_batch`` DATA packets in one call (UDP GSO).

        With UDP_SEGMENT set to 4 + blksize the kernel cuts the buffer into one datagram
        per block, so a window costs one system call instead of one per block; the
        client sees ordinary DATA packets.
        """
        for start in range(first, last + 1, self.gso_batch):
            end = min(start + self.gso_batch - 1, last)
            buffer = b"".join(self._packet(block) for block in range(start, end + 1))
            try:
                self.sock.send(buffer)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:  # the route refuses segmentation (MTU below a block): go singly
                self.gso_batch = 1
                return self._send_each(start, last)
        return True

    # -- timing --------------------------------------------------------------------------
    def _arm(self) -> None:
        if self.tries:
            wait = min(self.timeout * (1 << self.tries), max(self.timeout, MAX_BACKOFF))
        else:
            wait = self.timeout
        now = self.loop.time()
        if not self.confirmed:  # before the first ACK the whole budget is first_ack_budget
            wait = max(0.0, min(wait, self.begun + self.first_ack_budget - now))
        self.deadline = now + wait
        if self.timer is None:
            self.timer = self.loop.call_at(self.deadline, self._expired)

    def _expired(self) -> None:
        self.timer = None
        if self.done:
            return
        if self.loop.time() < self.deadline:  # progress since this timer was set: re-arm lazily
            self.timer = self.loop.call_at(self.deadline, self._expired)
            return
        if not self.confirmed and self.loop.time() - self.begun >= self.first_ack_budget:
            # never ACKed (a spoofed or vanished requester): free the slot quickly and quietly
            self.finish("timeout", no_first_ack(self.first_ack_budget))
            return
        if self.tries >= self.retries:
            # Say why before letting go, so a client still listening does not wait in vain.
            self._send(packets.error(ErrorCode.UNDEFINED, "timed out waiting for ACK"))
            self.finish("timeout", no_ack(self.retries))
            return
        self.tries += 1  # back off: RFC 1350 leaves the schedule to us; we double it
        self._send_window()

    # -- receiving -----------------------------------------------------------------------
    def readable(self) -> None:
        """Handle what the client sent: up to DRAIN datagrams, then let others have the loop.

        The socket is connected to the client's TID (RFC 1350 §4), so only the client's
        datagrams reach it. The ACK of the block just sent in a confirmed lockstep transfer
        (every PXE ROM's case, and nearly every packet of a storm) is answered right here:
        the next packet from the table, one ``send``, the deadline moved. Everything else
        (ACK 0 of the OACK, windows, duplicates, the last block, errors) takes the general path.
        """
        sock, loop = self.sock, self.loop
        recv, send = sock.recv, sock.send
        source = self.packets
        table = source.packets  # [] when packets are built per send
        lockstep = self.windowsize == 1
        for _ in range(DRAIN):
            try:
                packet = recv(1024)  # ACK/ERROR; longer junk is cut short
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ICMP port unreachable from an earlier send: the timer decides
                return
            if len(packet) < 4 or packet[1] != Op.ACK or packet[0] != 0:
                self._from_peer(packet)
                if self.done:
                    return
                continue
            wire = packet[2] << 8 | packet[3]
            block = self.sent
            if not (lockstep and wire == block & 0xFFFF and self.confirmed):
                self._acked(wire)
                if self.done:
                    return
                continue
            # lockstep: the ACK of the block just sent (absolute `block`)
            if block >= self.last_block:
                self._acked(wire)  # the last one: finish
                return
            self.acked, self.tries = block, 0
            data = table[block] if table else None  # the packet of block + 1
            if data is None:
                data = source.packet(block + 1)
            try:
                send(data)
            except (BlockingIOError, InterruptedError):
                pass  # a full socket buffer is a lost packet: the timer recovers
            except OSError as exc:
                self.finish("error", send_failed(exc.strerror or str(exc)))
                return
            self.sent = block + 1
            self.deadline = loop.time() + self.timeout  # what _arm sets with tries == 0
            if self.timer is None:
                self.timer = loop.call_at(self.deadline, self._expired)

    def _from_peer(self, packet: bytes) -> None:
        err = packets.parse_error(packet)
        if err is not None:
            self.finish("aborted", client_error(*err))
        elif len(packet) >= 2:
            code = packets.opcode(packet)
            self._send(packets.error(ErrorCode.ILLEGAL_OPERATION, f"unexpected opcode {code}"))
            self.finish("error", client_opcode(code))
        # shorter than an opcode: noise, ignore

    def _acked(self, wire: int) -> None:
        # Map the 16-bit number onto the newest absolute block it can mean (<= self.sent).
        block = self.sent - ((self.sent - wire) & 0xFFFF)
        if block <= self.acked:
            # Duplicate or stale ACK: never answer it with data (Sorcerer's Apprentice,
            # RFC 1123 §4.2.3.1); the timer alone retransmits.
            return
        self.acked = block
        self.tries = 0
        if not self.confirmed:
            self.confirmed = True
            if self.on_confirmed is not None:
                self.on_confirmed(self)
        if block >= self.last_block:
            self.finish("ok")
            return
        # A full window acknowledged: send the next. An ACK inside the window means the
        # client saw a gap after `block` (RFC 7440 §4): resend from there.
        self._send_window()
