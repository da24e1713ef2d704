"""The ProxyDHCP asks the boot service once per machine, not once per packet: a retransmit storm
of one MAC waits on the decision in flight and every request is answered with it. Real UDP
sockets on loopback; the boot decision is a stand-in that counts and is slow on purpose."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter

from netdeploy.boot.programs import BootChoice, FirmwareClient
from netdeploy.dhcp import packet as p
from netdeploy.dhcp.service import ProxyDhcpServer
from tests.integration.test_dhcp_hostile import discover, replies

STORMY = bytes.fromhex("525400aa0001")
CIADDR = slice(12, 16)  # RFC 2131 §2: a client with an address is answered there, not broadcast


def request(mac: bytes, xid: int) -> bytes:
    data = bytearray(discover(mac, xid=xid))
    data[CIADDR] = socket.inet_aton("127.0.0.1")
    return bytes(data)


OTHERS = [bytes.fromhex(f"525400bb000{i}") for i in range(1, 4)]


async def test_a_storm_of_one_mac_is_one_decision_answered_to_every_request() -> None:
    asked: Counter[str] = Counter()
    release = asyncio.Event()

    async def decide(client: FirmwareClient) -> BootChoice:
        asked[client.mac] += 1
        await release.wait()  # every request of the storm arrives while this one is asked
        return BootChoice("media/undionly.kpxe", "tftp", "test")

    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    client.bind(("127.0.0.1", 0))
    client.setblocking(False)
    server = ProxyDhcpServer("127.0.0.1", decide, client_port=client.getsockname()[1])
    await server.start(None, 0, 0)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        storm = 300
        for xid in range(storm):
            sender.sendto(request(STORMY, xid), ("127.0.0.1", server.ports[0]))
        for i, mac in enumerate(OTHERS):
            sender.sendto(request(mac, 10_000 + i), ("127.0.0.1", server.ports[0]))
        for _ in range(100):  # until every request is parked on its machine's decision
            if sum(map(len, server.pending.values())) == storm + len(OTHERS):
                break
            await asyncio.sleep(0.02)
        assert sum(map(len, server.pending.values())) == storm + len(OTHERS)
        release.set()
        got = [r for r in await replies(client, 0.5) if r.message_type == p.OFFER]
    finally:
        sender.close()
        client.close()
        await server.stop()
    assert dict(asked) == {
        "52:54:00:aa:00:01": 1,
        "52:54:00:bb:00:01": 1,
        "52:54:00:bb:00:02": 1,
        "52:54:00:bb:00:03": 1,
    }
    assert len(got) == storm + len(OTHERS)
    assert {r.xid for r in got} == set(range(storm)) | {10_000, 10_001, 10_002}
    assert server.pending == {} and server.waiting == 0
