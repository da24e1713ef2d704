"""A real iPXE ROM in QEMU (slirp networking) fetches its script and a payload from us.

Under slirp the guest reaches the host's loopback as 10.0.2.2 (shared/RECIPES.md §1); port
69 there is slirp's own TFTP, so the server listens on a high port. The script prints a
marker, waits a second (so the serial line drains) and reboots, which ``-no-reboot`` turns
into QEMU exiting.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from tests.integration.conftest_tftp import need, tftp_server

pytestmark = pytest.mark.e2e

SCRIPT = """#!ipxe
echo ND-SCRIPT-START
imgfetch tftp://10.0.2.2:{port}/payload.bin || goto failed
imgstat
echo ND-TFTP-OK
sleep 1
reboot
:failed
echo ND-TFTP-FAIL
sleep 1
reboot
"""


async def test_ipxe_guest_fetches_over_tftp(tmp_path: Path) -> None:
    qemu = need("qemu-system-x86_64")
    if not Path("/usr/lib/ipxe/qemu/pxe-virtio.rom").exists() and not shutil.which("ipxe"):
        pytest.skip("iPXE ROMs missing: install ipxe-qemu (tests/debian-packages.txt)")
    root = tmp_path / "root"
    root.mkdir()
    payload = os.urandom(300_001)
    (root / "payload.bin").write_bytes(payload)
    async with tftp_server(root) as (server, finished):
        (root / "boot.ipxe").write_text(SCRIPT.format(port=server.port))
        argv = [
            qemu, "-accel", "tcg", "-m", "256", "-nographic", "-serial", "stdio",
            "-monitor", "none", "-no-reboot", "-boot", "n",
            "-netdev", f"user,id=n0,bootfile=tftp://10.0.2.2:{server.port}/boot.ipxe",
            "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56",
        ]  # fmt: skip
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            async with asyncio.timeout(150):
                out, _ = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        serial = out.decode(errors="replace")
        stats = await finished.wait(2)
    assert "ND-TFTP-OK" in serial, serial[-3000:]
    assert "300001 bytes" in serial, serial[-3000:]  # imgstat: iPXE got every byte
    by_file = {s.filename: s for s in stats}
    assert by_file["payload.bin"].outcome == "ok"
    assert by_file["payload.bin"].size == len(payload)
    assert by_file["boot.ipxe"].outcome == "ok"
