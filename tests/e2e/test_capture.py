"""Network capture on real QEMU guests (issue 17): a master's disk is captured by
`netdeploy image capture` over slirp through a proxy that cuts the first large upload in the
middle, resumes, and yields the master disk's sha256; the master then boots its own disk; a
second guest is imaged with the captured image and boots it."""

from __future__ import annotations

import json
import os
import sqlite3
import time

import pytest

from tests.conftest import free_port, run_cli, sha256_of, start_server
from tests.e2e.cutproxy import CuttingProxy
from tests.e2e.diskimage import LOCAL_BOOT_MARKER, blank_disk, make_image, read_file
from tests.e2e.test_cluster_rollout import pytestmark, wait_exit  # noqa: F401
from tests.e2e.vm import VM, keep_serial_logs

MASTER_MAC = "52:54:00:00:30:01"  # not in the demo config: the master on the bench
WEB = ("web-1", "52:54:00:00:20:01")  # the demo's standalone node, image debian-12
IMAGE = "debian-12"
CUT_AFTER = 1024 * 1024  # body bytes of the first upload larger than this


def master_disk(path, size_mib: int = 64) -> str:  # type: ignore[no-untyped-def]
    """The test master (MBR printing the local-boot marker, FAT files) plus 4 MiB of random
    bytes in its free space, as a used disk has: incompressible, so one upload is large."""
    make_image(path, size_mib=size_mib)
    with open(path, "r+b") as fh:
        fh.seek(40 * 1024 * 1024)
        fh.write(os.urandom(4 * 1024 * 1024))
    return sha256_of(path)


def capture_state(server) -> dict:  # type: ignore[no-untyped-def]
    done = run_cli("image", "captures", "--json", "--state-dir", str(server.state_dir))
    assert done.returncode == 0, done.stderr
    return next(c for c in json.loads(done.stdout)["captures"] if c["mac"] == MASTER_MAC)


@pytest.mark.timeout(600)
def test_capture_a_guest_resume_after_a_cut_and_deploy_it(media, tmp_path):
    manifest = (media / "manifest.json").read_text()
    assert '"capture_streamer": "bin/ndcap"' in manifest, "the media was built without ndcap"
    state_dir = tmp_path / "state"
    master = tmp_path / "master.img"
    want = master_disk(master)
    port = free_port()
    proxy = CuttingProxy(port, CUT_AFTER, upload=b"POST /api/nodes/")
    vms: list[VM] = []
    with proxy:
        public = f"http://10.0.2.2:{proxy.port}"
        server = start_server(state_dir, http_port=port, extra=("--public-url", public))
        try:
            marked = run_cli(
                "image", "capture", IMAGE, "--node", MASTER_MAC, "--state-dir", str(state_dir)
            )
            assert marked.returncode == 0, marked.stderr
            assert "marked for capture into image debian-12" in marked.stdout

            # 1. the master PXE-boots, is captured, and reboots (QEMU -no-reboot: exits)
            vm = VM("master", MASTER_MAC, tmp_path / "master.log", disk=master,
                    bootfile=f"{public}/boot.ipxe")  # fmt: skip
            vms.append(vm.start())
            started = time.monotonic()
            vm.wait(300)
            seconds = time.monotonic() - started
            log = vm.text()
            assert "capture finished: rebooting into this machine's own disk" in log, log[-3000:]
            assert proxy.cuts == 1, "the proxy never cut an upload"
            assert "broke" in log and "capture resumes at byte" in log, log[-3000:]
            capture = capture_state(server)
            assert capture["state"] == "done", capture
            assert capture["sha256"] == want  # both sides: the agent's disk, the server's copy
            image = server.get_json(f"/api/images/{IMAGE}")
            assert image["status"] == "ok" and image["sha256"] == want
            assert sha256_of(image["path"]) == want
            assert sha256_of(master) == want  # capture never writes the disk
            assert capture["wire_bytes"] < 12 * 2**20, capture  # 64 MiB disk, ~18 MiB data
            print(
                f"\ncapture: {seconds:.1f} s guest, {capture['wire_bytes'] / 2**20:.1f} MiB over "
                f"the wire for a {capture['disk_size'] / 2**20:.0f} MiB disk "
                f"({capture['data_bytes'] / 2**20:.1f} MiB non-zero), one cut resumed"
            )

            # 2. its next boot is its own disk, not another capture
            again = VM("master-again", MASTER_MAC, tmp_path / "master-again.log", disk=master,
                       bootfile=f"{public}/boot.ipxe")  # fmt: skip
            vms.append(again.start())
            again.wait(120)
            assert again.saw(LOCAL_BOOT_MARKER), again.text()[-2000:]
            assert not again.saw("nd-agent"), "the master ran the agent again"

            # 3. another machine is imaged with the captured image and boots it
            host, mac = WEB
            disk = blank_disk(tmp_path / "web-1.img", size_mib=80)
            web = VM(host, mac, tmp_path / "web-1.log", disk=disk, bootfile=f"{public}/boot.ipxe")
            vms.append(web.start())
            wait_exit(server, web, host, 240)
            node = next(n for n in server.get_json("/api/nodes")["nodes"] if n["mac"] == mac)
            assert node["state"] == "starting", node  # written, sha256 verified, released
            assert web.saw("sparse image written"), web.text()[-3000:]  # the same layout back
            db = sqlite3.connect(state_dir / "netdeploy.db")
            rows = db.execute("SELECT detail FROM events WHERE kind = 'http' AND mac = ?", (mac,))
            sent = [d for (raw,) in rows if (d := json.loads(raw)).get("what") == "image-sparse"]
            db.close()
            assert sent and sent[0]["complete"], sent
            print(f"deploy: {sent[0]['bytes_sent'] / 2**20:.1f} MiB over the wire (sparse)")
            boot = VM("web-1-boot", mac, tmp_path / "web-1-boot.log", disk=disk,
                      bootfile=f"{public}/boot.ipxe")  # fmt: skip
            vms.append(boot.start())
            boot.wait(120)
            assert boot.saw(LOCAL_BOOT_MARKER), boot.text()[-2000:]
            assert read_file(disk, "BOOT.INI") == read_file(master, "BOOT.INI")
        finally:
            for v in vms:
                v.kill()
            server.stop()
            keep_serial_logs(vms, "e2e-capture-")
