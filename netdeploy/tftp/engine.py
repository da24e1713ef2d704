"""The TFTP server: listening sockets, request dispatch, limits, one event loop for everything.

Why asyncio and not fbtftp: measured in docs/decisions/0001-tftp-engine.md. In short, a
process per transfer costs more than the transfer itself during a boot storm, and fbtftp
has no windowsize (RFC 7440).

Each read request gets a fresh socket bound to the local address the request arrived at
(``IP_PKTINFO``/``IPV6_PKTINFO``), so replies leave from the address the client asked even on
a multihomed server; that socket's port is the server's transfer ID (RFC 1350 §4).

The engine asks ``resolver(path, client_ip)`` for every read request before it looks at the
disk: per-MAC virtual files come from the boot decisions, not from files.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path

from netdeploy.config import TftpConfig
from netdeploy.tftp import packets
from netdeploy.tftp.files import (
    Content,
    FileCache,
    NetasciiContent,
    clean_name,
    load,
    to_netascii,
)
from netdeploy.tftp.native import NativePlane, NativeTransfer, open_native
from netdeploy.tftp.options import negotiate
from netdeploy.tftp.packets import BadPacket, ErrorCode, Op, Request
from netdeploy.tftp.plane import DataPlane, open_plane
from netdeploy.tftp.transfer import Terms, Transfer, TransferStats

log = logging.getLogger("netdeploy.tftp")

Resolver = Callable[[str, str], Awaitable[bytes | None]]
Finished = Callable[[TransferStats], None]
Refused = Callable[[str], None]

RESOLVE_TIMEOUT = 10.0  # seconds the boot decision may take before the request fails
LISTEN_RCVBUF = 4 << 20  # a storm's RRQs arrive together; do not drop them in the kernel
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux value; Python 3.11 does not export it
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)  # Linux 4.18+ UDP GSO
GSO_MAX_SEGMENTS = 64  # the kernel's UDP_MAX_SEGMENTS
GSO_MAX_BYTES = 65000  # one GSO send is still one UDP datagram before it is cut
WILDCARDS = ("", "0.0.0.0", "::")


def _listen_socket(family: int, host: str, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # IPv4 too
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
            if option is None:
                continue
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, LISTEN_RCVBUF)
                break
            except OSError:  # SO_RCVBUFFORCE needs CAP_NET_ADMIN
                continue
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _enable_gso(sock: socket.socket, blksize: int, windowsize: int) -> int:
    """DATA packets per send for a windowed transfer: UDP GSO when the kernel has it, else 1."""
    if windowsize < 2:
        return 1
    with contextlib.suppress(OSError):  # let a whole window sit in the kernel at once
        want = windowsize * (blksize + 64)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, min(want, 8 << 20))
    batch = min(windowsize, GSO_MAX_SEGMENTS, GSO_MAX_BYTES // (blksize + 4))
    if batch < 2:
        return 1
    try:
        sock.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, blksize + 4)
    except OSError:  # Linux before 4.18, or not Linux
        return 1
    return batch


def _local_address(ancdata: list[tuple[int, int, bytes]]) -> tuple[str, int] | None:
    """(address, interface index) the request was sent to, from its PKTINFO."""
    for level, kind, data in ancdata:
        if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO and len(data) >= 20:
            return socket.inet_ntop(socket.AF_INET6, data[:16]), int.from_bytes(
                data[16:20], "little"
            )
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 12:
            return socket.inet_ntop(socket.AF_INET, data[4:8]), int.from_bytes(data[:4], "little")
    return None


def _plain_ip(ip: str) -> str:
    """'::ffff:10.0.0.5' (IPv4 on a dual-stack socket) as '10.0.0.5'."""
    if ip.startswith("::ffff:") and "." in ip:
        return ip[7:]
    return ip


class TftpServer:
    """A read-only TFTP server rooted at ``root``."""

    def __init__(
        self,
        root: Path,
        config: TftpConfig | None = None,
        *,
        resolver: Resolver | None = None,
        on_finished: Finished | None = None,
        on_refused: Refused | None = None,
    ):
        self.root = Path(root)
        self.config = config or TftpConfig()
        self.resolver = resolver
        self.on_finished = on_finished
        self.on_refused = on_refused
        self.cache = FileCache(self.config.cache_max_bytes, self.config.cache_file_max_bytes)
        # None: still starting
        self.transfers: dict[tuple[str, int], Transfer | NativeTransfer | None] = {}
        self.per_client: Counter[str] = Counter()
        # transfers that have not had their first ACK yet, oldest first: RRQs are spoofable,
        # so these hold a pool of their own (max_unacked) and never the confirmed slots
        self.unacked: OrderedDict[tuple[str, int], None] = OrderedDict()
        self.listeners: list[socket.socket] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.plane: DataPlane | None = None
        self.native: NativePlane | None = None  # the C data phase, when built and enabled

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port``; a wildcard host listens on IPv6 and IPv4 (dual stack)."""
        self._loop = asyncio.get_running_loop()
        if host in WILDCARDS:
            try:
                sock = _listen_socket(socket.AF_INET6, "::", port)
            except OSError:  # no IPv6 on this host
                sock = _listen_socket(socket.AF_INET, "0.0.0.0", port)
        else:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = _listen_socket(family, host, port)
        self.listeners.append(sock)
        self._loop.add_reader(sock.fileno(), self._on_listener, sock)
        if self.plane is None:
            self.plane = open_plane(self._loop)
        if self.native is None:
            self.native = open_native(self._loop, self.config.native, self.config.native_threads)

    @property
    def port(self) -> int:
        return int(self.listeners[0].getsockname()[1])

    async def stop(self) -> None:
        for sock in self.listeners:
            if self._loop:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self.listeners.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for transfer in list(self.transfers.values()):
            if transfer:
                transfer.abort(ErrorCode.UNDEFINED, "server shutting down; retry shortly")
        if self.plane is not None:
            self.plane.close()
            self.plane = None
        if self.native is not None:
            self.native.close()
            self.native = None

    @property
    def active(self) -> int:
        return len(self.transfers)

    # -- requests ------------------------------------------------------------------------
    def _on_listener(self, sock: socket.socket) -> None:
        for _ in range(64):  # drain a burst of requests per wake-up
            try:
                packet, ancdata, _flags, addr = sock.recvmsg(packets.MAX_REQUEST + 1, 256)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            try:
                self._dispatch(sock, packet, addr, _local_address(ancdata))
            except Exception:  # one bad request must never stop the listener
                log.exception("TFTP request from %s failed", addr[0])

    def _dispatch(
        self,
        sock: socket.socket,
        packet: bytes,
        addr: tuple,  # type: ignore[type-arg]
        local: tuple[str, int] | None,
    ) -> None:
        op = packets.opcode(packet)
        if op == Op.RRQ:
            try:
                request = packets.parse_request(packet)
            except BadPacket as exc:
                self._reply(sock, addr, exc.code, exc.message)
                self._refused("bad_request")
                return
            self._accept(request, addr, local)
        elif op == Op.WRQ:
            self._reply(sock, addr, ErrorCode.ACCESS_VIOLATION, "read-only server: writes refused")
            self._refused("write")
        elif op == Op.ERROR or len(packet) < 4:
            self._refused("noise")  # never answer an error, nor a fragment, with an error
        else:
            self._reply(sock, addr, ErrorCode.ILLEGAL_OPERATION, f"opcode {op} is not a request")
            self._refused("bad_request")

    def _reply(self, sock: socket.socket, addr: tuple, code: ErrorCode, message: str) -> None:  # type: ignore[type-arg]
        with contextlib.suppress(OSError):
            sock.sendto(packets.error(code, message), addr)

    def _refused(self, reason: str) -> None:
        if self.on_refused:
            self.on_refused(reason)

    def _accept(self, request: Request, addr: tuple, local: tuple[str, int] | None) -> None:  # type: ignore[type-arg]
        ip = _plain_ip(addr[0])
        key = (ip, addr[1])
        if key in self.transfers:
            running = self.transfers[key]
            if isinstance(running, NativeTransfer) and not running.done:
                # its last ACK may still be queued on a worker: a client reusing its port
                running.request_again(lambda: self._accept(request, addr, local))
            return  # a retransmitted RRQ: the running transfer retransmits by itself
        # Over a limit we stay silent: the client retransmits its RRQ, which queues it
        # without ending its boot the way an ERROR would.
        if len(self.transfers) - len(self.unacked) >= self.config.max_transfers:
            self._refused("busy")
            return
        if self.per_client[ip] >= self.config.max_per_client:
            self._refused("client_limit")
            return
        if len(self.unacked) >= self.config.max_unacked and not self._reclaim_unacked():
            self._refused("busy")
            return
        self.transfers[key] = None
        self.unacked[key] = None
        self.per_client[ip] += 1
        task = asyncio.get_running_loop().create_task(self._begin(request, key, addr, local))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _begin(
        self,
        request: Request,
        key: tuple[str, int],
        addr: tuple,  # type: ignore[type-arg]
        local: tuple[str, int] | None,
    ) -> None:
        stats = TransferStats(key[0], key[1], request.filename)
        try:
            sock, peer = self._transfer_socket(key, addr, local)
        except OSError as exc:  # out of descriptors or ports: the client retries
            log.warning("cannot open a transfer socket for %s: %s", key[0], exc)
            self._release(key, stats, "error", f"no transfer socket: {exc.strerror or exc}")
            return
        try:
            content, virtual = await self._content(request, key[0])
            stats.filename, stats.virtual, stats.size = request.filename, virtual, content.size
            chosen = negotiate(
                request.options,
                content.size,
                max_blksize=self.config.max_blksize,
                max_windowsize=self.config.max_windowsize,
                timeout=self.config.timeout,
                max_timeout=self.config.max_client_timeout,
            )
        except BadPacket as exc:
            with contextlib.suppress(OSError):
                sock.sendto(packets.error(exc.code, exc.message), peer)
            sock.close()
            self._release(key, stats, "refused", exc.message)
            return
        except BaseException as exc:
            internal = not isinstance(exc, asyncio.CancelledError)
            if internal:
                log.exception("TFTP read request for %r failed", request.filename)
                with contextlib.suppress(OSError):  # an ERROR, never silence (issue 21)
                    sock.sendto(
                        packets.error(ErrorCode.UNDEFINED, "server error; retry shortly"), peer
                    )
            sock.close()
            self._release(key, stats, "error", "internal error" if internal else "shutdown")
            if not internal:
                raise
            return
        stats.blksize, stats.windowsize = chosen.blksize, chosen.windowsize
        gso_batch = _enable_gso(sock, chosen.blksize, chosen.windowsize)
        terms = Terms(
            blksize=chosen.blksize,
            windowsize=chosen.windowsize,
            timeout=chosen.timeout,
            retries=self.config.retries,
            oack=packets.oack(chosen.reply) if chosen.reply else None,
            gso_batch=gso_batch,
            first_ack_budget=self.config.first_ack_budget,
        )
        done, confirmed = self._transfer_done, self._confirmed
        if self.native is not None and not isinstance(content, NetasciiContent):
            native = NativeTransfer(
                self.native, sock, content, stats, terms, on_done=done, on_confirmed=confirmed
            )
            try:
                native.start()
            except Exception as exc:  # a plane that cannot take it: the client retries
                log.exception("TFTP transfer of %r could not start", request.filename)
                content.close()
                self._release(key, stats, "error", f"data plane refused it: {exc}")
                return
            self.transfers[key] = native
            return
        transfer = Transfer(sock, peer, content, stats, terms, on_done=done, on_confirmed=confirmed)
        if isinstance(content, NetasciiContent):  # keep what a window may ask for again
            content.keep = chosen.blksize * (chosen.windowsize + 1)
        self.transfers[key] = transfer
        transfer.start(self.plane)

    async def _content(self, request: Request, client_ip: str) -> tuple[Content, bool]:
        name = clean_name(request.filename)
        request_name = name
        if self.resolver is not None:
            try:
                data = await asyncio.wait_for(
                    self.resolver(request_name, client_ip), RESOLVE_TIMEOUT
                )
            except TimeoutError:
                raise BadPacket(
                    ErrorCode.UNDEFINED, "boot decision timed out; retry shortly"
                ) from None
            if data is not None:  # small, generated per request
                return Content.of(to_netascii(data) if request.mode == "netascii" else data), True
        return load(self.root, name, request.mode, self.cache), False

    def _transfer_socket(
        self,
        key: tuple[str, int],
        addr: tuple,  # type: ignore[type-arg]
        local: tuple[str, int] | None,
    ) -> tuple[socket.socket, tuple]:  # type: ignore[type-arg]
        ip = key[0]
        if ipaddress.ip_address(ip).version == 4:
            family, peer = socket.AF_INET, (ip, key[1])
            bind: tuple = ((_plain_ip(local[0]) if local else "0.0.0.0"), 0)  # type: ignore[type-arg]
        else:
            family, peer = socket.AF_INET6, addr
            bind = (local[0], 0, 0, local[1]) if local else ("::", 0)
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind(bind)
            # Connected to the client's TID: the kernel keeps other senders' datagrams from
            # it (they get ICMP port unreachable, as from tftp-hpa), and send/recv skip the
            # address work and the route lookup of every packet.
            sock.connect(peer)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock, peer

    # -- bookkeeping ---------------------------------------------------------------------
    def _release(self, key: tuple[str, int], stats: TransferStats, outcome: str, msg: str) -> None:
        stats.outcome, stats.message = outcome, msg
        if not stats.duration:
            stats.duration = time.monotonic() - stats.started
        self.transfers.pop(key, None)
        self.unacked.pop(key, None)
        self.per_client[key[0]] -= 1
        if self.per_client[key[0]] <= 0:
            del self.per_client[key[0]]
        if self.on_finished:
            self.on_finished(stats)

    def _confirmed(self, transfer: Transfer | NativeTransfer) -> None:
        """The first ACK came: the client is real, its transfer now holds a confirmed slot."""
        self.unacked.pop((transfer.stats.client_ip, transfer.stats.client_port), None)

    def _reclaim_unacked(self) -> bool:
        """Give up the oldest transfer still waiting for its first ACK, for a new request.

        A flood of RRQs that never ACK only displaces itself: a real client ACKs within a
        round trip and leaves this pool long before its turn to be reclaimed comes.
        """
        for key in self.unacked:
            transfer = self.transfers.get(key)
            if transfer is not None:  # (None: still opening; it joins the pool in a moment)
                transfer.finish("reclaimed", "no first ACK; slot given to a newer request")
                return True
        return False

    def _transfer_done(self, transfer: Transfer | NativeTransfer) -> None:
        key = (transfer.stats.client_ip, transfer.stats.client_port)
        self._release(key, transfer.stats, transfer.stats.outcome, transfer.stats.message)
