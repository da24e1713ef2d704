"""From discovered machine to inventory on real QEMU PXE clients (issue 18).

An unknown MAC PXE-boots: the discovery agent reads its hardware from sysfs (SMBIOS, disks,
NICs, the storage controllers' PCI IDs) and the server keeps it; `netdeploy nodes --facts`
shows it. A second unknown machine whose disk hangs off an AHCI controller reports another PCI
ID, and `netdeploy adopt ... --hardware auto` refuses it, naming the ID with no driver in the
profile its SMBIOS product matched. The virtio machine is adopted into the demo cluster through
the running server (no restart): its discovery agent sees the new plan, reboots, and the next
boot images it with its own answer files.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import (
    ServerProcess,
    add_image,
    demo_variant,
    free_port,
    run_cli,
    start_server,
)
from tests.e2e.diskimage import blank_disk, make_image, read_file
from tests.e2e.vm import VM, keep_serial_logs, qemu_available

VIRTIO_BOX = "52:54:00:00:99:01"
AHCI_BOX = "52:54:00:00:99:02"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(qemu_available() is not None, reason=str(qemu_available())),
    pytest.mark.skipif(shutil.which("mtype") is None, reason="needs mtools"),
    pytest.mark.skipif(shutil.which("mkfs.vfat") is None, reason="needs dosfstools"),
    pytest.mark.skipif(shutil.which("apt-get") is None, reason="media build needs apt-get"),
]


def node(server: ServerProcess, mac: str) -> dict | None:
    found = [n for n in server.get_json("/api/nodes")["nodes"] if n["mac"] == mac]
    return found[0] if found else None


def wait_for(what: str, check, vm: VM, timeout: float):  # type: ignore[no-untyped-def]
    """Poll ``check`` until it answers something true; fail with the guest's serial log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (value := check()) is not None and value is not False:
            return value
        time.sleep(1)
    vm.kill()
    raise AssertionError(f"{what} not within {timeout:.0f}s\n{vm.text()[-3000:]}")


@pytest.mark.timeout(900)
def test_a_discovered_machine_is_adopted_and_imaged_with_its_own_answer_files(
    media: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    config = demo_variant(tmp_path / "netdeploy.toml", replace={'"../var"': f'"{state}"'})
    cli = ("--config", str(config), "--state-dir", str(state))
    master = tmp_path / "master.img"
    make_image(master, size_mib=64)
    add_image(state, master)
    http_port = free_port()
    server = start_server(
        state,
        config=config,
        http_port=http_port,
        extra=("--public-url", f"http://10.0.2.2:{http_port}"),
    )
    bootfile = f"http://10.0.2.2:{http_port}/boot.ipxe"
    logs = tmp_path / "serial"
    logs.mkdir()
    vms: list[VM] = []

    def boot(name: str, mac: str, disk: Path, storage: str = "virtio") -> VM:
        vm = VM(name, mac, logs / f"{name}.log", disk=disk, bootfile=bootfile, storage=storage)
        vms.append(vm.start())
        return vm

    def facts_shown(mac: str, pci_id: str) -> str | None:
        shown = run_cli("nodes", "--facts", *cli)
        assert shown.returncode == 0, shown.stderr
        block = shown.stdout.split(mac, 1)[-1].split("\n52:54", 1)[0] if mac in shown.stdout else ""
        return shown.stdout if f"storage {pci_id}" in block else None

    try:
        # 1. two unknown machines boot: discovery only, each reports its storage controller
        ahci_disk = blank_disk(tmp_path / "ahci.img")
        ahci = boot("ahci-box", AHCI_BOX, ahci_disk, storage="ahci")
        listing = wait_for(
            "AHCI facts in `netdeploy nodes --facts`",
            lambda: facts_shown(AHCI_BOX, "8086:2922"),
            ahci,
            240,
        )
        assert "Standard PC (i440FX + PIIX, 1996)" in listing
        assert ": sda" in listing  # the disk behind the AHCI controller
        assert node(server, AHCI_BOX)["state"] == "discovered"
        refused = run_cli(
            "adopt", AHCI_BOX, "--hostname", "sql-n5", "--cluster", "sqlclu",
            "--hardware", "auto", *cli,
        )  # fmt: skip
        assert refused.returncode == 1
        assert "8086:2922" in refused.stderr and "qemu-virtio" in refused.stderr, refused.stderr
        assert not (tmp_path / "nodes.d" / "sql-n5.toml").exists()
        ahci.kill()

        disk = blank_disk(tmp_path / "virtio.img")
        guest = boot("virtio-box", VIRTIO_BOX, disk)
        wait_for(
            "virtio facts in `netdeploy nodes --facts`",
            lambda: facts_shown(VIRTIO_BOX, "1af4:1001"),
            guest,
            240,
        )
        assert node(server, VIRTIO_BOX)["state"] == "discovered"  # never imaged meanwhile

        # 2. adopt through the running server: no restart
        adopted = run_cli(
            "adopt", VIRTIO_BOX, "--hostname", "sql-n4", "--cluster", "sqlclu",
            "--hardware", "auto", *cli,
        )  # fmt: skip
        assert adopted.returncode == 0, adopted.stderr
        assert (tmp_path / "nodes.d" / "sql-n4.toml").exists()
        assert node(server, VIRTIO_BOX)["state"] == "registered"
        # its discovery agent polls the plan, sees "image" and reboots (QEMU: -no-reboot)
        assert guest.wait(120) == 0, guest.text()[-3000:]
        assert guest.saw("plan is now image")

        # 3. the next boot images it with its own answer files, then it waits at the gate
        imaging = boot("virtio-box-2nd", VIRTIO_BOX, disk)
        wait_for(
            "sql-n4 imaged and held",
            lambda: (n := node(server, VIRTIO_BOX)) and n["state"] in ("held", "imaged"),
            imaging,
            300,
        )
        assert node(server, VIRTIO_BOX)["hostname"] == "sql-n4"
        imaging.kill()
        sysprep = read_file(disk, "sysprep/sysprep.inf")
        assert sysprep is not None, "no sysprep.inf injected"
        text = sysprep.decode("cp1252")
        assert "SQL-N4" in text  # its own computer name
        assert "VEN_1AF4&DEV_1001" in text  # the driver of the profile "auto" matched
    finally:
        for vm in vms:
            vm.kill()
        server.stop()
        keep_serial_logs(vms, "e2e-adopt-")
