"""One decision seam (DESIGN "Seams that must hold"): HTTP, TFTP and ProxyDHCP ask the same boot
service, so a machine gets the same answer whichever way it asks. A started node boots its
disk over all three (iPXE `sanboot`, pxelinux `LOCALBOOT`, ProxyDHCP silent so the firmware
falls through to the disk); a node being imaged gets the agent over all three."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from sqlalchemy import select

from netdeploy.boot.tftp import virtual_file
from netdeploy.dhcp import packet as p
from netdeploy.inventory import NodeState
from netdeploy.store.models import Event
from tests.integration.conftest_boot import curl
from tests.integration.test_dhcp_hostile import discover, ports, proxy, replies

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="SO_BINDTODEVICE (lo) needs root")

MAC = "52:54:00:00:10:03"  # sql-n3 in the demo config
RAW = bytes.fromhex(MAC.replace(":", ""))


async def dhcp_answer(server, client, sender: socket.socket, xid: int) -> list[p.DhcpPacket]:  # type: ignore[no-untyped-def]
    port, _ = ports(server)
    sender.sendto(discover(RAW, xid=xid), ("127.0.0.1", port))
    return [r for r in await replies(client, 0.5) if r.xid == xid]


async def test_all_three_protocols_give_the_boot_plans_answer(tmp_path: Path) -> None:
    async with proxy(tmp_path) as (server, client):
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            # registered: the agent, every way
            offers = await dhcp_answer(server, client, sender, 1)
            assert [o.file for o in offers] == [b"media/undionly.kpxe"]
            pxelinux = await virtual_file(
                server.boot, "pxelinux.cfg/01-52-54-00-00-10-03", "10.1.1.3"
            )
            assert pxelinux is not None and b"KERNEL " in pxelinux and b"LOCALBOOT" not in pxelinux
            script = await curl(f"{server.url}/boot/52-54-00-00-10-03.ipxe")
            assert "nd.mode=image" in script.text

            # starting (released, boot code restored): the local disk, every way
            await server.force_state(MAC, NodeState.STARTING)
            assert await dhcp_answer(server, client, sender, 2) == []  # silence: next device
            pxelinux = await virtual_file(
                server.boot, "pxelinux.cfg/01-52-54-00-00-10-03", "10.1.1.3"
            )
            assert pxelinux is not None and b"LOCALBOOT 0" in pxelinux
            assert b"KERNEL" not in pxelinux
            script = await curl(f"{server.url}/boot/52-54-00-00-10-03.ipxe")
            assert "sanboot" in script.text and "nd.mode" not in script.text
        finally:
            sender.close()
        await server.dhcp.writer.close()  # type: ignore[union-attr]
        async with server.ctx.sessions() as session:
            rows = (
                await session.scalars(
                    select(Event).where(Event.kind == "dhcp", Event.mac == MAC).order_by(Event.id)
                )
            ).all()
    decisions = [(r.detail["decision"], r.detail["why"]) for r in rows]
    assert decisions[0][0] == "offer"
    assert decisions[-1][0] == "ignored"
    assert "past release; boot from the local disk" in decisions[-1][1]
