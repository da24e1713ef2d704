"""A real iPXE ROM in QEMU (slirp) fetches /boot.ipxe, chains to its per-MAC script, prints its MAC.

The guest reaches our loopback as 10.0.2.2 (shared/RECIPES.md §1), so the server's public URL is
``http://10.0.2.2:<port>`` while it listens on 127.0.0.1. The agent media are not built here,
so the kernel fetch fails (404), the script prints its failure line and reboots, which
``-no-reboot`` turns into QEMU exiting: the whole chain, including the failure path, is real.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.e2e.vm import VM, qemu_available
from tests.integration.conftest_boot import ROOT, boot_server, free_port

pytestmark = pytest.mark.e2e


async def run_guest(port: int, mac: str, log: Path) -> str:
    if qemu_available():
        pytest.skip(str(qemu_available()))
    guest = VM("ipxe", mac, log, bootfile=f"http://10.0.2.2:{port}/boot.ipxe", memory=256)
    return await guest.serial_until_exit(180)


async def test_ipxe_guest_chains_to_its_per_mac_script(tmp_path: Path) -> None:
    bootfiles = tmp_path / "bootfiles"  # templates only: no media, so the agent start fails
    shutil.copytree(ROOT / "bootfiles" / "templates", bootfiles / "templates")
    port = free_port()
    async with boot_server(
        tmp_path,
        public_url=f"http://10.0.2.2:{port}",
        http_port=str(port),
        bootfiles_dir=str(bootfiles),
    ) as srv:
        assert srv.url.endswith(f":{port}")
        serial = await run_guest(port, "52:54:00:00:10:01", tmp_path / "serial.log")
        boots = await srv.events("boot")
        node = await srv.node("52:54:00:00:10:01")
    tail = serial[-3000:]
    assert "netdeploy: 52:54:00:00:10:01 (10.0.2.15) asks http://10.0.2.2:" in serial, tail
    assert "netdeploy: 52:54:00:00:10:01 sql-n1: image:" in serial, tail  # per-MAC script ran
    assert "could not start the agent for 52:54:00:00:10:01" in serial, tail
    assert [(e.mac, e.detail["path"], e.detail["decision"]) for e in boots] == [
        (None, "/boot.ipxe", "chain"),
        ("52:54:00:00:10:01", "/boot/52-54-00-00-10-01.ipxe", "image"),
    ]
    assert node is not None and node.state == "pxe"


async def test_unknown_ipxe_guest_gets_the_discovery_script(tmp_path: Path) -> None:
    bootfiles = tmp_path / "bootfiles"
    shutil.copytree(ROOT / "bootfiles" / "templates", bootfiles / "templates")
    port = free_port()
    async with boot_server(
        tmp_path,
        public_url=f"http://10.0.2.2:{port}",
        http_port=str(port),
        bootfiles_dir=str(bootfiles),
    ) as srv:
        serial = await run_guest(port, "52:54:00:ab:cd:ef", tmp_path / "serial.log")
        node = await srv.node("52:54:00:ab:cd:ef")
        boots = await srv.events("boot", "52:54:00:ab:cd:ef")
    tail = serial[-3000:]
    assert "netdeploy: 52:54:00:ab:cd:ef (unknown): discover: MAC not in the inventory" in serial, (
        tail
    )
    assert node is not None and (node.state, node.in_config) == ("discovered", False)
    assert [b.detail["decision"] for b in boots] == ["discover"]
