"""``netdeploy serve`` runs the ProxyDHCP through :func:`start` when ``[dhcp] proxy = true``.

Two UDP sockets on the boot LAN's interface: port 67 hears the PXE clients' broadcast
DHCPDISCOVERs (next to the LAN's own DHCP server, which may run on this same host: both bind
with SO_REUSEADDR and the kernel hands each of them every broadcast), port 4011 the boot server
requests of PXE 2.1 §2.2.1. :mod:`netdeploy.dhcp.pxe` parses and builds replies; which boot
program a machine gets is asked of the boot service (``decide``, from netdeploy.boot), the same
decision HTTP and TFTP answers come from. This module only moves bytes, counts and records.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from netdeploy.boot import programs
from netdeploy.boot.programs import BootChoice, FirmwareClient
from netdeploy.boot.service import BootService
from netdeploy.context import Context, ServiceError
from netdeploy.dhcp import packet as p
from netdeploy.dhcp import pxe, record
from netdeploy.dhcp.packet import MalformedPacket

# the boot program for one firmware client (BootService.program_for)
Decide = Callable[[FirmwareClient], Awaitable[BootChoice]]
# Machines whose boot decision is being asked at once, and requests waiting for those decisions
# (all machines together, ~1 KiB each): a retransmit storm of one MAC costs one decision,
# answered to every request. Past these a flood is dropped and counted; PXE clients retransmit
# (PXE 2.1: after 4, 8, 16 and 32 s).
MAX_PENDING = 256
MAX_WAITING = 4096

# one request waiting for its machine's decision: what it asked, where to answer
Waiting = tuple[p.DhcpPacket, pxe.Pending, tuple[str, int], bool, asyncio.DatagramTransport]

log = logging.getLogger("netdeploy.dhcp")

CLIENT_PORT = 68
SIOCGIFADDR = 0x8915  # linux/sockios.h
RECEIVE_BUFFER = 4 << 20


def interface_ipv4(name: str) -> str | None:
    """The interface's (first) IPv4 address, or None when it has none or does not exist."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            res = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
        except OSError:
            return None
    return socket.inet_ntoa(res[20:24])


def udp_socket(port: int, interface: str | None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        # a rack powering on at once: room for a few thousand requests between two reads
        # (the kernel caps it at net.core.rmem_max)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        if interface:  # broadcasts to 255.255.255.255 go out of (and are heard on) this LAN only
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        sock.bind(("0.0.0.0", port))  # a broadcast reaches only a wildcard-bound socket
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class _Listener(asyncio.DatagramProtocol):
    def __init__(self, server: ProxyDhcpServer, pxe_port: bool):
        self.server = server
        self.pxe_port = pxe_port
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.server.handle(data, addr, self.pxe_port, self.transport)

    def error_received(self, exc: Exception) -> None:  # ICMP errors of earlier sends
        log.debug("DHCP socket error: %s", exc)


def _factory(server: ProxyDhcpServer, pxe_port: bool) -> Callable[[], _Listener]:
    return lambda: _Listener(server, pxe_port)


class ProxyDhcpServer:
    """Answers PXE clients on two ports; ``on_answer`` gets every recorded decision."""

    def __init__(
        self,
        server_ip: str,
        decide: Decide,
        on_answer: Callable[[pxe.Answer, dict[str, Any]], None] = lambda a, d: None,
        client_port: int = CLIENT_PORT,
        writer: record.EventWriter | None = None,
    ):
        self.server_ip = server_ip
        self.writer = writer  # closed (what it holds written) when the server stops
        self.decide = decide
        self.on_answer = on_answer
        self.pending: dict[str, list[Waiting]] = {}  # MAC -> requests awaiting its decision
        self.waiting = 0  # requests in ``pending``, all machines together
        self.tasks: set[asyncio.Task[None]] = set()
        self.client_port = client_port
        self.transports: list[asyncio.DatagramTransport] = []
        self.ports: tuple[int, int] = (0, 0)

    async def start(self, interface: str | None, port: int, pxe_port: int) -> None:
        loop = asyncio.get_running_loop()
        bound = []
        try:
            for number, is_pxe in ((port, False), (pxe_port, True)):
                sock = udp_socket(number, interface)
                transport, _ = await loop.create_datagram_endpoint(
                    _factory(self, is_pxe), sock=sock
                )
                self.transports.append(transport)
                bound.append(sock.getsockname()[1])
        except OSError:
            await self.stop()
            raise
        self.ports = (bound[0], bound[1])

    async def stop(self) -> None:
        for transport in self.transports:
            transport.close()
        self.transports = []
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.writer is not None:
            await self.writer.close()

    def handle(
        self,
        data: bytes,
        addr: tuple[str, int],
        pxe_port: bool,
        transport: asyncio.DatagramTransport,
    ) -> None:
        """One datagram: parse and classify now; a PXE request gets its answer once the boot
        service decided for its MAC (one task per MAC, at most :data:`MAX_PENDING` MACs at
        once; repeats of a MAC join the decision in flight). Never raises."""
        port_label = "pxe" if pxe_port else "dhcp"
        try:
            request = p.parse(data)
        except MalformedPacket as exc:
            record.MALFORMED.labels(exc.reason).inc()
            record.REQUESTS.labels(port_label, "malformed").inc()
            log.debug("malformed DHCP packet from %s:%d: %s", *addr, exc)
            return
        found = pxe.classify(request, pxe_port=pxe_port, server_ip=self.server_ip)
        if isinstance(found, pxe.Answer):
            self.finish(request, found, addr, pxe_port, transport)
            return
        mac = found.client.mac
        waiting = self.pending.get(mac)
        if self.waiting >= MAX_WAITING or (waiting is None and len(self.pending) >= MAX_PENDING):
            record.REQUESTS.labels(port_label, "busy").inc()
            return
        self.waiting += 1
        if waiting is not None:
            waiting.append((request, found, addr, pxe_port, transport))
            return
        self.pending[mac] = [(request, found, addr, pxe_port, transport)]
        task = asyncio.get_running_loop().create_task(self._decide(found.client))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _decide(self, client: pxe.PxeClient) -> None:
        """Ask the boot service once for ``client``'s MAC, answer every request waiting on it."""
        try:
            choice: BootChoice | None = await self.decide(client.firmware_client)
        except Exception as exc:  # the store is down: no answer now; the client retransmits
            log.warning("no boot decision for %s: %s", client.mac, exc)
            choice = None
        waiting = self.pending.pop(client.mac, [])
        self.waiting -= len(waiting)
        for request, pending, addr, pxe_port, transport in waiting:
            if choice is None:
                record.REQUESTS.labels("pxe" if pxe_port else "dhcp", "undecided").inc()
                continue
            answer = pxe.reply_with(request, pending, choice, self.server_ip)
            self.finish(request, answer, addr, pxe_port, transport)

    def finish(
        self,
        request: p.DhcpPacket,
        answer: pxe.Answer,
        addr: tuple[str, int],
        pxe_port: bool,
        transport: asyncio.DatagramTransport,
    ) -> None:
        """Send ``answer``'s reply (if any), count it and record it."""
        port_label = "pxe" if pxe_port else "dhcp"
        if answer.client is None:
            record.REQUESTS.labels(port_label, "not_pxe").inc()
            return
        outcome = answer.decision
        if answer.reply is not None:
            try:
                transport.sendto(p.build(answer.reply), self._destination(request, addr, pxe_port))
            except (OSError, ValueError) as exc:
                log.warning("cannot answer %s at %s: %s", answer.client.mac, addr[0], exc)
                outcome = "send_error"
            else:
                record.ANSWERS.labels(answer.client.firmware.value).inc()
        record.REQUESTS.labels(port_label, outcome).inc()
        if answer.decision != "not_for_us":
            self.on_answer(answer, event_detail(answer, addr, pxe_port, self.server_ip))

    def _destination(
        self, request: p.DhcpPacket, addr: tuple[str, int], pxe_port: bool
    ) -> tuple[str, int]:
        if pxe_port:  # PXE 2.1 §2.2.1 step 6: back to the request's source address and port
            return addr
        if request.giaddr != "0.0.0.0":  # RFC 2131 §4.1: through the relay agent, port 67
            return request.giaddr, 67
        if request.ciaddr != "0.0.0.0":  # RFC 2131 §4.1: a client that has an address
            return request.ciaddr, self.client_port
        return "255.255.255.255", self.client_port  # no address yet: broadcast (PXE 2.1)


def event_detail(
    answer: pxe.Answer, addr: tuple[str, int], pxe_port: bool, server_ip: str
) -> dict[str, Any]:
    """What the client said and what we did, for ``Event(kind="dhcp")``."""
    client = answer.client
    assert client is not None
    request = p.MESSAGE_NAMES.get(client.message, f"type {client.message}")
    target = answer.choice.boot_file if answer.choice and answer.choice.boot_file else None
    what = f"{answer.decision} {target}" if target else "no answer"
    detail: dict[str, Any] = {
        "message": (
            f"{request} on port {'4011' if pxe_port else '67'} from {client.firmware.value} "
            f"({client.arch_name}{', iPXE' if client.ipxe else ''}): {what}"
        ),
        "request": request,
        "port": 4011 if pxe_port else 67,
        "ip": addr[0],
        "arch": client.arch,
        "arch_name": client.arch_name,
        "arch_from": client.arch_from,
        "vendor_class": client.vendor_class,
        "ipxe": client.ipxe,
        "firmware": client.firmware.value,
        "decision": answer.decision,
        "why": answer.why,
    }
    if client.user_class:
        detail["user_class"] = client.user_class
    if client.guid:
        detail["guid"] = client.guid.hex()
    if target:
        detail["boot_file"] = target
        detail["via"] = answer.choice.via if answer.choice else ""
        detail["next_server"] = server_ip
    return detail


def coalesce_key(answer: pxe.Answer, pxe_port: bool) -> tuple[object, ...]:
    """Requests with the same key for one MAC are the same question with the same answer."""
    client = answer.client
    assert client is not None
    boot_file = answer.choice.boot_file if answer.choice else None
    return (client.message, pxe_port, client.arch, client.ipxe, answer.decision, boot_file)


def missing_program(bootfiles_dir: Path, boot_file: str | None, public_url: str) -> str | None:
    """The bootfiles path of a program we hand out that is not there (media not built)."""
    if not boot_file:
        return None
    path = boot_file.removeprefix(f"{public_url}/bootfiles/")
    if "://" in path:  # boot.ipxe and other server routes: always there
        return None
    return None if (bootfiles_dir / path).is_file() else path


async def start(
    ctx: Context, boot: BootService, client_port: int = CLIENT_PORT
) -> ProxyDhcpServer | None:
    """Listen on ``[dhcp] interface`` when ``[dhcp] proxy`` (else None); ``client_port`` only
    for tests. The caller stops the returned server."""
    cfg = ctx.config.dhcp
    if not cfg.proxy:
        return None
    assert cfg.interface is not None  # the config validator requires it with proxy = true
    server_ip = cfg.address or interface_ipv4(cfg.interface)
    if server_ip is None:
        raise ServiceError(
            f"[dhcp] interface {cfg.interface!r} does not exist or has no IPv4 address; "
            "check `ip -4 addr`, or set [dhcp] address"
        )
    bootfiles = ctx.config.server.bootfiles_dir
    writer = record.EventWriter(ctx.sessions, ctx.bus.publish, boot.clusters_of, cfg.event_interval)

    def on_answer(answer: pxe.Answer, detail: dict[str, Any]) -> None:
        assert answer.client is not None
        missing = missing_program(bootfiles, detail.get("boot_file"), ctx.public_url)
        if missing:
            detail["warning"] = f"{missing} is missing: run `netdeploy media build`"
        writer.add(answer.client.mac, coalesce_key(answer, detail["port"] == 4011), detail)

    server = ProxyDhcpServer(server_ip, boot.program_for, on_answer, client_port, writer)
    try:
        await server.start(cfg.interface, cfg.port, cfg.pxe_port)
    except OSError as exc:
        hint = (
            "run as root (ports 67/4011 and SO_BINDTODEVICE need it), "
            if exc.errno in (errno.EPERM, errno.EACCES)
            else ""
        )
        raise ServiceError(
            f"cannot listen for ProxyDHCP on {cfg.interface} ports {cfg.port}/{cfg.pxe_port}: "
            f"{exc.strerror or exc}; {hint}or set [dhcp] proxy = false"
        ) from None
    writer.start()
    log.info(
        "ProxyDHCP on %s (ports %d, %d): next-server %s, iPXE gets %s/boot.ipxe",
        cfg.interface,
        cfg.port,
        cfg.pxe_port,
        server_ip,
        ctx.public_url,
    )
    if ctx.ports.tftp != 69:
        log.warning(
            "TFTP is on port %d, but PXE firmware always fetches its boot program from port 69: "
            "BIOS and UEFI PXE clients that are not iPXE will fail; use --tftp-port 69",
            ctx.ports.tftp,
        )
    for program in (programs.BIOS_PROGRAM, programs.UEFI_PROGRAM, programs.UEFI_HTTP_PROGRAM):
        if not (bootfiles / program).is_file():
            log.warning("%s is missing: run `netdeploy media build`", bootfiles / program)

    return server
