"""`netdeploy media build` from Debian's packages: complete, ordered and reproducible."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import subprocess

import pytest

from tests.conftest import DEMO_CONFIG, REPO, run_cli

pytestmark = pytest.mark.skipif(
    shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None,
    reason="media build uses Debian's apt-get and dpkg-deb",
)


@pytest.fixture(scope="session")
def media_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("media-state")


def build(state, out):
    result = run_cli("media", "build", "--state-dir", str(state), "--out", str(out))
    assert result.returncode == 0, result.stderr
    return json.loads((out / "manifest.json").read_text())


def test_media_build_is_reproducible_and_complete(media_cache, tmp_path):
    first = build(media_cache, tmp_path / "a")
    second = build(media_cache, tmp_path / "b")
    assert first == second
    initrd = (tmp_path / "a" / "initrd.gz").read_bytes()
    assert hashlib.sha256(initrd).hexdigest() == first["initrd.gz"]["sha256"]
    assert (tmp_path / "a" / "vmlinuz").read_bytes()[0x202:0x206] == b"HdrS"  # bzImage magic
    names = (
        subprocess.run(
            ["busybox", "cpio", "-t"],
            input=gzip.decompress(initrd),
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split()
    )
    assert {
        "init",
        "bin/busybox",
        "bin/sh",
        "etc/udhcpc.script",
        "etc/modules.order",
        "dev/console",
        "lib/netdeploy/hold-mbr.bin",  # the hold on the disk (decision 0011)
        "lib/netdeploy/hold-x64.efi",
    } <= set(names)
    # iPXE for firmware that is not iPXE: BIOS PXE ROMs chainload undionly.kpxe, UEFI ipxe.efi
    for name in ("undionly.kpxe", "snponly.efi", "ipxe.efi"):
        data = (tmp_path / "a" / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == first["ipxe"][name]["sha256"]
    assert (tmp_path / "a" / "ipxe.efi").read_bytes()[:2] == b"MZ"  # a PE/EFI program
    if shutil.which("gcc"):  # the multicast receiver is compiled in (decision 0005)
        assert first["multicast_receiver"] and "bin/ndmc-recv" in names
    modules = first["modules"]
    for needed in ("virtio_net", "virtio_blk", "e1000", "vfat", "nls_cp437"):
        assert f"lib/modules/{needed}.ko" in names
    # dependencies load first
    assert modules.index("virtio_ring") < modules.index("virtio_net")
    assert modules.index("fat") < modules.index("vfat")


def test_missing_deb_is_one_clear_line(tmp_path):
    result = run_cli(
        "media",
        "build",
        "--state-dir",
        str(tmp_path),
        "--out",
        str(tmp_path / "o"),
        "--kernel",
        str(tmp_path / "nope.deb"),
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"netdeploy: {tmp_path}/nope.deb: no such .deb file"
    )


def test_check_says_when_media_is_missing_and_how_to_build_it(tmp_path):
    empty = tmp_path / "bootfiles"  # the boot script templates, but no built media
    shutil.copytree(REPO / "bootfiles" / "templates", empty / "templates")
    text = DEMO_CONFIG.read_text().replace(
        'bootfiles_dir = "../bootfiles"', f'bootfiles_dir = "{empty}"'
    )
    text = text.replace(
        'templates_dir = "templates"', f'templates_dir = "{DEMO_CONFIG.parent / "templates"}"'
    )
    config = tmp_path / "netdeploy.toml"
    config.write_text(text)
    result = run_cli("check", "--config", str(config), "--state-dir", str(tmp_path / "state"))
    assert result.returncode == 0, result.stderr
    assert (
        f"note: startup media missing (vmlinuz, initrd.gz in {empty}/media); machines "
        "cannot be imaged until you run `netdeploy media build`"
    ) in result.stdout
