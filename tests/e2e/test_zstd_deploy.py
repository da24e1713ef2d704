"""A ``raw+zstd`` image deployed to a real QEMU guest: the disk must hold the master, not the
zstd stream (docs/images.md "Compressed images").

The demo's standalone node web-1 gets ``debian-12`` added with ``--compress zstd``. Its agent
must decompress the stream onto the disk (``ndcap unzstd``), verify the disk against the image's
``raw_sha256`` over ``raw_size`` bytes, and only then report it verified; the host then hashes
the guest's disk itself, and the guest's next boot runs the master's own boot code.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time

import pytest

from tests.conftest import demo_variant, free_port, run_cli, sha256_of, start_server
from tests.e2e.cutproxy import CuttingProxy
from tests.e2e.diskimage import LOCAL_BOOT_MARKER, blank_disk, make_image, read_file
from tests.e2e.test_cluster_rollout import pytestmark, wait_exit  # noqa: F401
from tests.e2e.vm import VM, keep_serial_logs

WEB = ("web-1", "52:54:00:00:20:01")  # the demo's standalone node, image debian-12
IMAGE = "debian-12"
CUT_AFTER = 2**20  # body bytes of the first image stream
RANDOM_AT, RANDOM_LEN = 24 * 2**20, 2 * 2**20


def differing_blocks(a, b, size: int) -> list[int]:  # type: ignore[no-untyped-def]
    """Indexes of the 4 KiB blocks in which the first ``size`` bytes of a and b differ."""
    changed = []
    with open(a, "rb") as fa, open(b, "rb") as fb:
        for index in range(-(-size // 4096)):
            if fa.read(4096) != fb.read(4096)[: min(4096, size - index * 4096)]:
                changed.append(index)
    return changed


@pytest.mark.timeout(600)
def test_a_zstd_image_is_decompressed_onto_the_disk_and_boots(media, tmp_path):
    manifest = (media / "manifest.json").read_text()
    assert '"capture_streamer": "bin/ndcap"' in manifest, "the media was built without ndcap"
    state_dir = tmp_path / "state"
    master = tmp_path / "master.img"
    built = make_image(master, size_mib=32)
    random_bytes = os.urandom(RANDOM_LEN)
    with open(master, "r+b") as fh:  # incompressible data in free space, as a used disk has:
        fh.seek(RANDOM_AT)  # the zstd stream is then large enough to be cut in the middle
        fh.write(random_bytes)
    built["sha256"] = sha256_of(master)
    port = free_port()
    proxy = CuttingProxy(port, CUT_AFTER)  # the first image stream breaks after 1 MiB
    config = demo_variant(
        tmp_path / "netdeploy.toml",
        {'file = "debian-12.img"\n': 'file = "debian-12.img"\nformat = "raw+zstd"\n'},
    )
    added = run_cli(
        "image", "add", IMAGE, str(master), "--compress", "zstd", "-q",
        "--state-dir", str(state_dir), env={"NETDEPLOY_CONFIG": str(config)},
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    with proxy:
        vms: list[VM] = []
        public = f"http://10.0.2.2:{proxy.port}"
        server = start_server(
            state_dir, config=config, http_port=port, extra=("--public-url", public)
        )
        try:
            image = server.get_json(f"/api/images/{IMAGE}")
            assert image["format"] == "raw+zstd", image
            facts = image["facts"]
            assert facts["raw_sha256"] == built["sha256"] and facts["raw_size"] == built["size"]
            assert image["sha256"] != built["sha256"] and image["size"] < built["size"] // 4
            assert image["size"] > 2 * CUT_AFTER

            host, mac = WEB
            disk = blank_disk(tmp_path / "web-1.img", size_mib=48)
            vm = VM(host, mac, tmp_path / "web-1.log", disk=disk, bootfile=f"{public}/boot.ipxe")
            vms.append(vm.start())
            wait_exit(server, vm, host, 240)
            seconds = time.monotonic() - vm.started
            node = next(n for n in server.get_json("/api/nodes")["nodes"] if n["mac"] == mac)
            assert node["state"] == "starting", node  # written, verified, released, rebooted
            # the cut stream started over from byte 0 (no resume inside a zstd frame), then verified
            assert proxy.cuts == 1, "the proxy never cut the image stream"
            assert vm.saw("stream broke at 0 MiB"), vm.text()[-3000:]
            assert vm.saw(f"zstd image decompressed onto /dev/vda: written={built['size']}")
            db = sqlite3.connect(state_dir / "netdeploy.db")
            rows = db.execute("SELECT detail FROM events WHERE kind = 'report' AND mac = ?", (mac,))
            reports = [json.loads(raw).get("message", "") for (raw,) in rows]
            db.close()
            assert f"verified sha256={built['sha256']} (HTTP)" in reports, reports
            # the host's own reading of the guest's disk (the agent has since held and released
            # it and injected web-1's answer files into the FAT partition, so the disk as a
            # whole no longer hashes to the master): the master's sector 0, every file of the
            # master, and the random bytes in its free space at their offset
            with open(disk, "rb") as written, open(master, "rb") as wanted:
                assert written.read(512) == wanted.read(512)
            for name, data in built["files"].items():
                assert read_file(disk, name) == data, name
            with open(disk, "rb") as fh:
                fh.seek(RANDOM_AT)
                assert fh.read(RANDOM_LEN) == random_bytes
            # and only a few 4 KiB blocks differ at all (FAT metadata, the injected files)
            changed = differing_blocks(master, disk, built["size"])
            assert len(changed) <= 32, [hex(b * 4096) for b in changed]
            print(
                f"\nzstd deploy: {seconds:.1f} s guest, {image['size'] / 2**20:.1f} MiB zstd -> "
                f"{built['size'] / 2**20:.0f} MiB on the disk"
            )

            # its next boot runs the master's own boot code
            boot = VM("web-1-boot", mac, tmp_path / "web-1-boot.log", disk=disk,
                      bootfile=f"{public}/boot.ipxe")  # fmt: skip
            vms.append(boot.start())
            boot.wait(120)
            assert boot.saw(LOCAL_BOOT_MARKER), boot.text()[-2000:]
        finally:
            for v in vms:
                v.kill()
            server.stop()
            keep_serial_logs(vms, "e2e-zstd-")
