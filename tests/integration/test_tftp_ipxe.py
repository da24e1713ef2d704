"""A real iPXE ROM in QEMU (slirp networking) fetches its script and a payload from us.

Under slirp the guest reaches the host's loopback as 10.0.2.2 (shared/RECIPES.md §1); port
69 there is slirp's own TFTP, so the server listens on a high port. The script prints a
marker, waits a second (so the serial line drains) and reboots, which ``-no-reboot`` turns
into QEMU exiting.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.vm import VM, qemu_available
from tests.integration.conftest_tftp import tftp_server

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
    if qemu_available():
        pytest.skip(str(qemu_available()))
    root = tmp_path / "root"
    root.mkdir()
    payload = os.urandom(300_001)
    (root / "payload.bin").write_bytes(payload)
    async with tftp_server(root) as (server, finished):
        (root / "boot.ipxe").write_text(SCRIPT.format(port=server.port))
        bootfile = f"tftp://10.0.2.2:{server.port}/boot.ipxe"
        guest = VM("tftp", "52:54:00:12:34:56", tmp_path / "serial.log", bootfile=bootfile)
        serial = await guest.serial_until_exit(150)
        stats = await finished.wait(2)
    assert "ND-TFTP-OK" in serial, serial[-3000:]
    assert "300001 bytes" in serial, serial[-3000:]  # imgstat: iPXE got every byte
    by_file = {s.filename: s for s in stats}
    assert by_file["payload.bin"].outcome == "ok"
    assert by_file["payload.bin"].size == len(payload)
    assert by_file["boot.ipxe"].outcome == "ok"
