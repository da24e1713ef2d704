"""sysprep.inf into an NTFS system partition, on a real QEMU guest (decision 0007).

The master image's system partition is NTFS (type 0x07), as a sysprep'd Windows Server's is. The
guest PXE-boots the startup media, writes and verifies the image, then the agent mounts the
partition with ntfs-3g (FUSE: the kernel has no NTFS driver) and injects two answer files. The
first goes to ``Sysprep/``, the second is configured as ``sysprep/sysprep.inf``. Windows ignores
case, so the agent must write into the existing ``Sysprep`` rather than create a sibling. The host
then reads the disk back with ``ntfscat`` and compares it with what the server renders for the node
and the report token it bound to the guest's claim.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import sqlite3
import time

import pytest

from netdeploy.answers.render import render_answer
from netdeploy.config import load_config
from tests.conftest import DEMO_CONFIG, REPO, add_image, free_port, start_server
from tests.e2e.diskimage import blank_disk
from tests.e2e.ntfsimage import (
    BOOT_INI,
    NTFS_TOOLS,
    make_ntfs_image,
    ntfs_names,
    ntfs_read,
    system_partition,
)
from tests.e2e.test_cluster_rollout import NODES, wait_exit
from tests.e2e.test_cluster_rollout import pytestmark as rollout_marks
from tests.e2e.vm import VM, keep_serial_logs

pytestmark = [
    *rollout_marks,
    *(
        pytest.mark.skipif(shutil.which(tool) is None, reason=f"needs {tool} (Debian: ntfs-3g)")
        for tool in NTFS_TOOLS
    ),
]

DEMO_INJECT = re.compile(r"^inject = \[\n.*?^\]\n", re.M | re.S)
NTFS_INJECT = """\
inject = [
  { file = "diskpartparams.txt", partition = 1, fs = "ntfs", path = "Sysprep/diskpartparams.txt" },
  { file = "sysprep.inf", partition = 1, fs = "ntfs", path = "sysprep/sysprep.inf" },
]
"""


def ntfs_config(tmp_path, port: int):
    """The demo lab, with the cluster's answer files going to an NTFS system partition."""
    text = DEMO_CONFIG.read_text().replace(
        "[server]\n", f'[server]\npublic_url = "http://10.0.2.2:{port}"\n', 1
    )
    assert len(DEMO_INJECT.findall(text)) == 1, "the demo config's inject array changed shape"
    text = DEMO_INJECT.sub(NTFS_INJECT, text)
    text = text.replace('bootfiles_dir = "../bootfiles"', f'bootfiles_dir = "{REPO / "bootfiles"}"')
    text = text.replace(
        'templates_dir = "templates"', f'templates_dir = "{DEMO_CONFIG.parent}/templates"'
    )
    path = tmp_path / "netdeploy.toml"
    path.write_text(text)
    return path


def served(config, mac: str, name: str, token: str) -> bytes:
    """The bytes the server serves ``mac`` as ``name`` with the phase's report token.

    Secret files are served once per token, so the test cannot fetch them again: it renders
    them with the function the server's route uses.
    """
    cfg = load_config(config)
    node = cfg.node_by_mac(mac)
    assert node is not None
    return render_answer(cfg, node, name, server_url=cfg.server.public_url, token=token).body


@pytest.mark.timeout(300)
def test_sysprep_inf_is_injected_into_an_ntfs_system_partition(media, tmp_path):
    manifest = (media / "manifest.json").read_text()
    assert '"bin/ntfs-3g"' in manifest, "the startup media was built without ntfs-3g"
    state_dir = tmp_path / "state"
    master = tmp_path / "master.img"
    built = make_ntfs_image(master, size_mib=32)
    add_image(state_dir, master)
    port = free_port()
    config = ntfs_config(tmp_path, port)
    server = start_server(state_dir, config=config, http_port=port)
    host, mac = "sql-n1", NODES["sql-n1"]  # the first node: released at once, the agent reboots
    disk = blank_disk(tmp_path / f"{host}.img", size_mib=40)
    vm = VM(
        host, mac, tmp_path / f"{host}.log", disk=disk, bootfile=f"http://10.0.2.2:{port}/boot.ipxe"
    )
    try:
        vm.start()
        wait_exit(server, vm, host, 180)
        seconds = time.monotonic() - vm.started
        node = next(n for n in server.get_json("/api/nodes")["nodes"] if n["mac"] == mac)
        assert node["state"] == "starting", node  # imaged (sha256 verified), released, rebooted
    finally:
        vm.kill()
        server.stop()
        keep_serial_logs([vm], "e2e-ntfs-inject-")
    print(f"\nNTFS inject guest: {seconds:.1f} s from QEMU start to its reboot")
    boot = re.search(r"Kernel command line: .* nd\.token=(\S+)", vm.text())
    assert boot, "no nd.token= on the guest's kernel command line"
    part = system_partition(disk, size_mib=32)
    # the report token in the written file: the phase's own (docs/security.md), not the boot
    # token, and the one whose digest the server bound to the node when it served the file
    written = ntfs_read(part, "Sysprep/sysprep.inf").decode("cp1252")
    report = re.search(r"report\.vbs \S+ (\S+) health", written)
    assert report and report.group(1) != boot.group(1), written
    with sqlite3.connect(state_dir / "netdeploy.db") as db:
        (digest,) = db.execute("SELECT report_token FROM nodes WHERE mac = ?", (mac,)).fetchone()
    assert digest == hashlib.sha256(report.group(1).encode()).hexdigest()
    expected = {
        name: served(config, mac, name, report.group(1))
        for name in ("sysprep.inf", "diskpartparams.txt")
    }

    # the agent resolved "sysprep/" to the "Sysprep/" it had just created: no sibling
    assert vm.saw("injected diskpartparams.txt into /dev/vda1:/Sysprep/diskpartparams.txt")
    assert vm.saw("injected sysprep.inf into /dev/vda1:/Sysprep/sysprep.inf")
    assert sorted(ntfs_names(part)) == ["BOOT.INI", "Sysprep"]
    assert sorted(ntfs_names(part, "/Sysprep")) == ["diskpartparams.txt", "sysprep.inf"]
    # exactly what the server renders for this node, and it names this node
    assert ntfs_read(part, "Sysprep/sysprep.inf") == expected["sysprep.inf"]
    assert ntfs_read(part, "Sysprep/diskpartparams.txt") == expected["diskpartparams.txt"]
    sysprep = expected["sysprep.inf"].decode("cp1252")
    assert re.search(r"^ComputerName=SQL-N1\r?$", sysprep, re.M), sysprep
    assert "SQL-N2" not in sysprep and "SQL-N3" not in sysprep
    # the master's own files are untouched
    assert ntfs_read(part, "BOOT.INI") == BOOT_INI == built["files"]["BOOT.INI"]
