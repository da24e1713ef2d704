"""The TFTP data phase on native threads (``_native.c``), seen from the event loop.

The loop decides every request as before (limits, boot decision, options, the socket
connected to the client); :meth:`NativePlane.submit` then hands the transfer's socket and
bytes to a worker thread that sends, answers ACKs and retransmits without the GIL
(docs/decisions/0021-tftp-native-data-plane.md). What comes back, through one eventfd the
loop watches, is each transfer's first ACK and its end. :class:`NativeTransfer` gives the
engine the same handle as a Python :class:`~netdeploy.tftp.transfer.Transfer`.

The module is compiled when netdeploy is installed with a C compiler and Python's headers;
without it (or with ``[tftp] native = false``) :func:`open_native` returns None and the
Python plane serves every transfer. Netascii transfers always take the Python plane: their
bytes are converted while they are sent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable

from netdeploy.tftp import packets, transfer
from netdeploy.tftp.files import Content
from netdeploy.tftp.packets import ErrorCode
from netdeploy.tftp.transfer import Terms, TransferStats

try:
    from netdeploy.tftp import _native  # type: ignore[attr-defined]
except ImportError:  # built without a compiler: the Python plane serves everything
    _native = None

log = logging.getLogger("netdeploy.tftp")

AVAILABLE = _native is not None
MAX_THREADS = 64  # the C plane's limit (and [tftp] native_threads'); auto stops there


def cpus() -> int:
    """CPUs this process may run on (its affinity, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class NativeTransfer:
    """One transfer whose data phase runs on the native plane; ends by ``on_done(self)`` once."""

    def __init__(
        self,
        plane: NativePlane,
        sock: socket.socket,
        content: Content,
        stats: TransferStats,
        terms: Terms,
        *,
        on_done: Callable[[NativeTransfer], None],
        on_confirmed: Callable[[NativeTransfer], None] | None = None,
    ):
        self.plane = plane
        self.sock = sock
        self.content = content
        self.stats = stats
        self.terms = terms
        self.on_done = on_done
        self.on_confirmed = on_confirmed
        self.confirmed = False
        self.done = False
        self.id = 0
        # an RRQ from this client port that came while the transfer ran: retried at its end
        self.again: Callable[[], None] | None = None

    def start(self) -> None:
        """Hand the socket (now the plane's) and the bytes to a worker thread."""
        fd = self.sock.detach()
        try:
            self.id = self.plane.submit(self, fd)
        except BaseException:
            os.close(fd)
            raise

    # -- ended by the loop ---------------------------------------------------------------
    def finish(self, outcome: str, message: str = "") -> None:
        """End it from the loop (a reclaimed slot): the slot is free when this returns."""
        self._end_here(outcome, message, None)

    def abort(self, code: ErrorCode, message: str) -> None:
        """End the transfer and tell the client why (server shutting down, limits)."""
        self._end_here("error", message, packets.error(code, message))

    def _end_here(self, outcome: str, message: str, packet: bytes | None) -> None:
        if self.done:
            return
        self.done = True
        self.plane.cancel(self.id, packet)  # the worker ends it; its report only frees content
        self.stats.outcome, self.stats.message = outcome, message
        self.stats.duration = time.monotonic() - self.stats.started
        self.on_done(self)

    def request_again(self, retry: Callable[[], None]) -> None:
        """An RRQ from this transfer's client port: ``retry`` it if the transfer turns out to
        have ended (its last ACK still queued on the worker's side), drop it if it goes on."""
        asked = self.again is not None  # one poke at a time, however many RRQs come
        self.again = retry
        if not asked:
            self.plane.core.poke(self.id)

    # -- reported by the plane -----------------------------------------------------------
    def running(self) -> None:
        self.again = None  # the RRQ was a retransmission: the transfer resends by itself

    def confirmed_now(self) -> None:
        if self.done or self.confirmed:
            return
        self.confirmed = True
        if self.on_confirmed is not None:
            self.on_confirmed(self)

    def ended(
        self,
        end: int,
        code: int,
        detail: bytes,
        sent: int,
        retransmits: int,
        resent: int,
        errno: int,
    ) -> None:
        self.content.close()  # the worker no longer reads it
        if self.done:
            return
        self.done = True
        stats = self.stats
        stats.outcome, stats.message = _outcome(self, end, code, detail, errno)
        stats.duration = time.monotonic() - stats.started
        stats.blocks = sent
        stats.retransmits = retransmits
        stats.bytes_sent = min(sent * self.terms.blksize, self.content.size) + resent
        self.on_done(self)


def _outcome(t: NativeTransfer, end: int, code: int, detail: bytes, errno: int) -> tuple[str, str]:
    """The (outcome, message) the Python plane gives the same end (transfer.py's words)."""
    assert _native is not None
    if end == _native.END_OK:
        return "ok", ""
    if end == _native.END_ABORTED:
        return "aborted", transfer.client_error(code, detail.decode("utf-8", "replace"))
    if end == _native.END_BADOP:
        return "error", transfer.client_opcode(code)
    if end == _native.END_FIRST_ACK:
        return "timeout", transfer.no_first_ack(t.terms.first_ack_budget)
    if end == _native.END_RETRIES:
        return "timeout", transfer.no_ack(t.terms.retries)
    if end == _native.END_SEND:
        return "error", transfer.send_failed(os.strerror(errno))
    if end == _native.END_READ:
        return "error", f"read failed: {os.strerror(errno)}"
    return "error", "shutdown"


class NativePlane:
    """Worker threads serving transfers' data phase; the loop watches one eventfd."""

    def __init__(self, loop: asyncio.AbstractEventLoop, threads: int):
        assert _native is not None
        self.loop = loop
        self.core = _native.Plane(threads)
        self.transfers: dict[int, NativeTransfer] = {}
        self.closing = False
        loop.add_reader(self.core.fileno(), self._drain)

    @property
    def threads(self) -> int:
        return int(self.core.threads)

    def submit(self, transfer: NativeTransfer, fd: int) -> int:
        content, terms = transfer.content, transfer.terms
        data = content.data
        id_ = int(
            self.core.submit(
                fd,
                data,
                -1 if content.fd is None else content.fd,
                content.size,
                terms.blksize,
                terms.windowsize,
                terms.timeout,
                terms.retries,
                terms.first_ack_budget,
                terms.oack,
                terms.gso_batch if data is not None else 1,
            )
        )
        self.transfers[id_] = transfer
        return id_

    def cancel(self, id_: int, packet: bytes | None) -> None:
        self.core.cancel(id_, packet)

    def _drain(self) -> None:
        assert _native is not None
        confirmed, going_on = _native.EV_CONFIRMED, _native.EV_RUNNING
        for event in self.core.events():
            running = self.transfers.get(event[0])
            if running is None:
                continue
            try:
                if event[1] == confirmed:
                    running.confirmed_now()
                elif event[1] == going_on:
                    running.running()
                else:
                    del self.transfers[event[0]]
                    _, _, end, code, detail, sent, retransmits, resent, errno = event
                    running.ended(end, code, detail, sent, retransmits, resent, errno)
                    if running.again is not None and not self.closing:
                        running.again()  # a new request from the same port
            except Exception:  # one transfer's bookkeeping must not stop the others'
                log.exception("TFTP transfer %d: its end could not be recorded", event[0])

    def close(self) -> None:
        """Stop the threads; transfers still running end (their files are closed)."""
        self.closing = True
        self.core.close()
        self._drain()
        self.loop.remove_reader(self.core.fileno())


def missing_note(enabled: bool) -> str | None:
    """What `netdeploy check` says when TFTP would run on the Python plane for want of a build."""
    if not enabled or AVAILABLE:
        return None
    return (
        "TFTP will run on the slower Python data plane: netdeploy was installed without its C "
        "part (install gcc and Python's headers, e.g. Debian's gcc python3-dev, then reinstall "
        "netdeploy; docs/tftp.md), or set [tftp] native = false to say so"
    )


def open_native(loop: asyncio.AbstractEventLoop, enabled: bool, threads: int) -> NativePlane | None:
    """The native plane with ``threads`` workers (0: one per CPU), or None when it is off or
    was not built (the Python plane then serves every transfer)."""
    if not enabled:
        return None
    if _native is None:
        log.warning("%s", missing_note(enabled))
        return None
    return NativePlane(loop, threads or min(cpus(), MAX_THREADS))
