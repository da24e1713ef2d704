"""ProxyDHCP under hostile input and boot storms: never a crash, every packet counted, the store
not flooded. The real service (sockets, event writer, store) on loopback with ephemeral ports."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from netdeploy.dhcp import packet as p
from netdeploy.dhcp import service
from tests.conftest import demo_variant
from tests.integration.conftest_boot import Server, boot_server

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="SO_BINDTODEVICE (lo) needs root")

MAC_A = bytes.fromhex("525400001001")  # sql-n1 in the demo config
MAC_B = bytes.fromhex("5254000000ff")  # unknown


def discover(mac: bytes, *, xid: int = 1, arch: int = 0, message: int = p.DISCOVER) -> bytes:
    """A PXE client's request, built field by field (not by the code under test)."""
    head = struct.pack(
        "!BBBBIHH16s16s64s128s", 1, 1, 6, 0, xid, 0, 0x8000, bytes(16), mac, b"", b""
    )
    vendor = f"PXEClient:Arch:{arch:05d}:UNDI:002001".encode()
    opts = bytes([53, 1, message, 60, len(vendor)]) + vendor + bytes([93, 2, 0, arch, 255])
    return head + p.MAGIC_COOKIE + opts


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """DHCP-shaped packets with damage: cut anywhere, options with lying lengths, bad
    overload, bad cookie, absurd hlen, or plain noise."""
    base = bytearray(
        discover(draw(st.binary(min_size=6, max_size=6)), arch=draw(st.integers(0, 20)))
    )
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(base) - 1))
        base[at] = draw(st.integers(0, 255))
    extra = draw(
        st.sampled_from(
            [
                b"",
                b"\x34\x01\x03",
                b"\x34\x01\x09",
                b"\x3c\xffPXE",
                b"\x2b\x05\x06\x01",
                b"\xff" * 40,
            ]
        )
    )
    data = bytes(base[:-1]) + extra + b"\xff"
    return data[: draw(st.integers(0, len(data)))]


packets = st.one_of(st.binary(max_size=700), damaged(), st.binary(min_size=236, max_size=300))


def config(tmp: Path, interval: float) -> Path:
    return demo_variant(
        tmp / "netdeploy.toml",
        append=(
            '\n[dhcp]\nproxy = true\ninterface = "lo"\naddress = "127.0.0.1"\n'
            f"port = {free_udp()}\npxe_port = {free_udp()}\nevent_interval = {interval}\n"
        ),
    )


def free_udp() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.asynccontextmanager
async def proxy(tmp: Path, interval: float = 30.0) -> AsyncIterator[tuple[Server, socket.socket]]:
    """The demo server with its ProxyDHCP; the socket is a client that hears the replies."""
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)  # hears a whole storm
    client.bind(("0.0.0.0", 0))
    client.setblocking(False)
    async with boot_server(tmp, config=config(tmp, interval)) as server:
        dhcp = await service.start(server.ctx, server.boot, client_port=client.getsockname()[1])
        assert dhcp is not None
        server.dhcp = dhcp
        try:
            yield server, client
        finally:
            await dhcp.stop()
            client.close()


def ports(server: Server) -> tuple[int, int]:
    assert server.dhcp is not None
    return server.dhcp.ports


async def replies(client: socket.socket, wait: float = 0.5) -> list[p.DhcpPacket]:
    await asyncio.sleep(wait)
    out = []
    while True:
        try:
            out.append(p.parse(client.recv(4096)))
        except BlockingIOError:
            return out


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_thousands_of_malformed_packets_then_a_normal_offer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sent = 0
    async with proxy(tmp_path) as (server, client):
        dhcp, pxe_port = ports(server)
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        before = counted("netdeploy_dhcp_requests_total", port="dhcp", outcome="malformed")

        @settings(
            max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        @given(st.lists(packets, min_size=4, max_size=6))
        def hammer(batch: list[bytes]) -> None:
            nonlocal sent
            for data in batch:
                sender.sendto(data, ("127.0.0.1", dhcp if sent % 2 else pxe_port))
                sent += 1

        await asyncio.get_running_loop().run_in_executor(None, hammer)
        sender.sendto(discover(MAC_A, xid=77), ("127.0.0.1", dhcp))
        sender.close()
        got = [r for r in await replies(client, 1.0) if r.xid == 77]
        assert sent >= 1000
        assert len(got) == 1 and got[0].file == b"media/undionly.kpxe"
        assert got[0].message_type == p.OFFER and got[0].yiaddr == "0.0.0.0"
        assert counted("netdeploy_dhcp_requests_total", port="dhcp", outcome="malformed") > before
        assert counted("netdeploy_dhcp_malformed_total", reason="truncated") > 0
    crashes = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not crashes, crashes[0].getMessage()


async def test_a_boot_storm_is_one_event_and_one_summary_per_mac(tmp_path: Path) -> None:
    async with proxy(tmp_path, interval=1.0) as (server, client):
        dhcp, _ = ports(server)
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for xid in range(300):  # a storm of retransmits from one machine
            sender.sendto(discover(MAC_A, xid=xid), ("127.0.0.1", dhcp))
            if xid % 50 == 49:  # let the server read: the test runs in its event loop
                await asyncio.sleep(0.05)
        sender.sendto(discover(MAC_B, xid=1000, arch=7), ("127.0.0.1", dhcp))
        sender.close()
        answered = await replies(client, 0.5)
        assert len({r.xid for r in answered}) == 301  # every request is answered
        await asyncio.sleep(2.5)  # the window closes (1 s) and the writer flushes (1 s)
        events_a = await server.events("dhcp", "52:54:00:00:10:01")
        events_b = await server.events("dhcp", "52:54:00:00:00:ff")
    assert [e.detail.get("repeats") for e in events_a] == [None, 299]
    first = events_a[0]
    assert first.cluster == "sqlclu"
    assert (
        first.detail["decision"] == "offer" and first.detail["boot_file"] == "media/undionly.kpxe"
    )
    assert first.detail["firmware"] == "bios" and first.detail["arch"] == 0
    assert "299 more identical DHCPDISCOVERs" in events_a[1].detail["message"]
    assert len(events_b) == 1 and events_b[0].cluster is None  # unknown MAC: answered, recorded
    assert events_b[0].detail["boot_file"] == "media/snponly.efi"


async def test_port_4011_request_is_answered_to_its_source(tmp_path: Path) -> None:
    async with proxy(tmp_path) as (server, _):
        _, pxe_port = ports(server)
        asker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        asker.bind(("127.0.0.1", 0))
        asker.setblocking(False)
        asker.sendto(discover(MAC_B, xid=9, arch=7, message=p.REQUEST), ("127.0.0.1", pxe_port))
        (reply,) = await replies(asker)
        asker.close()
        await asyncio.sleep(1.5)
        events = await server.events("dhcp", "52:54:00:00:00:ff")
    assert reply.message_type == p.ACK and reply.xid == 9
    assert reply.file == b"media/snponly.efi" and reply.siaddr == "127.0.0.1"
    assert [e.detail["port"] for e in events] == [4011]
    assert events[0].detail["decision"] == "ack"
