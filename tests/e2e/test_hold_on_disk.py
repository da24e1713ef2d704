"""The hold lives on the disk: a held node power-cycled while netdeploy is down never starts
its image (issue 21), under SeaBIOS and under OVMF.

One guest (sql-n2, not the first node, so it is held once imaged) PXE-boots from a real
`netdeploy serve`, is imaged with a master that boots both ways (MBR boot code and
EFI/BOOT/BOOTX64.EFI, each printing the local-boot marker) and waits at the gate. Then the server
stops and the guest is power-cycled: the network boot fails, the firmware falls through to the
disk, and finds netdeploy's hold stub instead of the image's boot code: it prints "held by
netdeploy" and reboots (QEMU -no-reboot exits with 0), never the marker (which exits with 3).
The server comes back (under SeaBIOS a cluster reset re-images and re-holds the node first), the
admin releases the node; its next boot runs the agent, which restores the real boot code and
verifies it, and the boot after that prints the marker: the real disk.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request

import pytest

from netdeploy.media.holdstub import HELD_MESSAGE, MBR_CODE_BYTES, bios_stub, efi_stub
from tests.conftest import add_image, free_port, start_server
from tests.e2e.diskimage import LOCAL_BOOT_MARKER, blank_disk, make_image, read_file
from tests.e2e.test_cluster_rollout import NODES, states, wait_state
from tests.e2e.vm import VM, keep_serial_logs, ovmf_available, qemu_available

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(qemu_available() is not None, reason=str(qemu_available())),
    pytest.mark.skipif(shutil.which("mtype") is None, reason="needs mtools"),
    pytest.mark.skipif(shutil.which("mkfs.vfat") is None, reason="needs dosfstools"),
    pytest.mark.skipif(shutil.which("apt-get") is None, reason="media build needs apt-get"),
]

HOST = "sql-n2"
LOADER = "EFI/BOOT/BOOTX64.EFI"


def admin_post(url: str, path: str, token: str, body: dict) -> dict:
    request = urllib.request.Request(
        url + path,
        method="POST",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def wait_for_line(vm: VM, text: str, timeout: float) -> float:
    """Seconds after the guest started at which it printed ``text``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for stamp, line in vm.lines:
            if text in line:
                return stamp
        assert vm.proc and vm.proc.poll() is None, f"{vm.name} exited:\n{vm.text()[-3000:]}"
        time.sleep(0.5)
    vm.kill()
    raise AssertionError(f"{vm.name}: no {text!r} after {timeout}s:\n{vm.text()[-3000:]}")


@pytest.mark.timeout(900)
@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_a_held_node_never_boots_its_image_without_netdeploy(media, tmp_path, firmware):
    if firmware == "uefi" and ovmf_available() is not None:
        pytest.skip(str(ovmf_available()))
    uefi = firmware == "uefi"
    state_dir = tmp_path / "state"
    master = tmp_path / "master.img"
    built = make_image(master, size_mib=64, efi=True)  # boots under SeaBIOS and OVMF alike
    add_image(state_dir, master)
    real_mbr = master.read_bytes()[:MBR_CODE_BYTES]
    http_port = free_port()
    public = ("--public-url", f"http://10.0.2.2:{http_port}")
    server = start_server(state_dir, http_port=http_port, extra=public)
    admin = (state_dir / "admin-token").read_text().strip()
    disk = blank_disk(tmp_path / f"{HOST}.img")
    logs = tmp_path / "serial"
    logs.mkdir()
    vms: list[VM] = []
    timings: dict[str, float] = {}
    boot_s = 400 if uefi else 240

    def boot(tag: str) -> VM:
        vm = VM(
            f"{HOST}-{firmware}-{tag}",
            NODES[HOST],
            logs / f"{HOST}-{firmware}-{tag}.log",
            disk=disk,
            bootfile=f"http://10.0.2.2:{http_port}/boot.ipxe",
            uefi=uefi,
            # OVMF: the disk right after the network entries (not after the EFI shell), and no
            # IPv6 network boot, whose PXE and HTTP entries wait 75 s each on slirp
            disk_bootindex=2 if uefi else None,
            extra=("-fw_cfg", "name=opt/org.tianocore/IPv6Support,string=no") if uefi else (),
        )
        vms.append(vm.start())
        return vm

    try:
        # 1. imaged and held: the agent holds the disk before it reports imaged
        first = boot("image")
        wait_for_line(first, "waiting at the gate", boot_s)
        assert wait_state(server, HOST, {"held"}, timeout=30) == "held"
        assert first.saw("held on disk: MBR boot code")
        first.kill()
        server.stop()
        assert disk.read_bytes()[:MBR_CODE_BYTES] == bios_stub()
        assert read_file(disk, LOADER) == efi_stub()
        assert read_file(disk, "EFI/netdeploy/held/" + LOADER) == built["files"][LOADER]

        # 2. power-cycled while netdeploy is down: the stub, never the image
        dark = boot("no-server")
        rc = dark.wait(boot_s)
        assert dark.saw(HELD_MESSAGE), dark.text()[-3000:]
        assert not dark.saw(LOCAL_BOOT_MARKER), dark.text()[-3000:]
        assert rc == 0, f"rc {rc}: not the stub's reboot\n{dark.text()[-3000:]}"  # 3: marker
        timings["held stub shown"] = next(s for s, line in dark.lines if HELD_MESSAGE in line)
        timings["power-cycle to reboot"] = time.monotonic() - dark.started

        # 3. netdeploy is back. BIOS run: a reset works from the held disk (the node is imaged
        # again and held again); then the admin releases it (the cluster is not formed: force)
        server = start_server(state_dir, http_port=http_port, extra=public)
        if not uefi:
            admin_post(server.url, "/api/admin/clusters/sqlclu/reset", admin, {})
            again = boot("reset")
            wait_for_line(again, "waiting at the gate", boot_s)
            assert again.saw("held on disk: MBR boot code")
            again.kill()
            assert states(server)[HOST] == "held"
            assert disk.read_bytes()[:MBR_CODE_BYTES] == bios_stub()
        node = admin_post(server.url, f"/api/admin/nodes/{HOST}/release", admin, {"force": True})
        assert node["state"] == "released", node
        restore = boot("release")
        assert restore.wait(boot_s) == 0, restore.text()[-3000:]
        assert restore.saw("boot code restored and verified"), restore.text()[-3000:]
        assert not restore.saw(LOCAL_BOOT_MARKER)
        assert states(server)[HOST] == "starting"
        assert disk.read_bytes()[:MBR_CODE_BYTES] == real_mbr
        assert read_file(disk, LOADER) == built["files"][LOADER]
        assert read_file(disk, "EFI/netdeploy/held.sha256") is None

        # 4. the released node boots its real disk
        local = boot("local")
        assert local.wait(boot_s) == 3, local.text()[-3000:]  # isa-debug-exit from the image
        assert local.saw(LOCAL_BOOT_MARKER)
        timings["local boot"] = next(s for s, line in local.lines if LOCAL_BOOT_MARKER in line)
    finally:
        for vm in vms:
            vm.kill()
        server.stop()
        keep_serial_logs(vms)
    print(f"{firmware}: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    # the image's files are untouched by the hold and its release
    for name, data in built["files"].items():
        assert read_file(disk, name) == data, name
