"""pxelinux's ``LOCALBOOT 0`` reaches a released node's disk (issue 16).

The LAN's dnsmasq gives this MAC ``pxelinux.0`` (Debian's pxelinux) instead of ``boot.ipxe``;
pxelinux loads ``ldlinux.c32`` and asks netdeploy's TFTP for ``pxelinux.cfg/01-<mac>``, which the
boot plan answers with ``LOCALBOOT 0``; the image's own MBR code must then run, twice (SeaBIOS;
pxelinux is BIOS only).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO, demo_variant, run_cli
from tests.e2e.diskimage import LOCAL_BOOT_MARKER, make_image
from tests.e2e.lan import SERVER_IP, lan, lan_unavailable
from tests.e2e.test_local_boot import boot_twice, release_in_store
from tests.e2e.vm import VM, qemu_available

SQL_N3 = "52:54:00:00:10:03"
PXELINUX = Path("/usr/lib/PXELINUX/pxelinux.0")
LDLINUX = Path("/usr/lib/syslinux/modules/bios/ldlinux.c32")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(qemu_available() is not None, reason=str(qemu_available())),
    pytest.mark.skipif(lan_unavailable() is not None, reason=str(lan_unavailable())),
    pytest.mark.skipif(
        not (PXELINUX.exists() and LDLINUX.exists()),
        reason="needs pxelinux and syslinux-common (Debian)",
    ),
    pytest.mark.skipif(shutil.which("mcopy") is None, reason="needs mtools"),
]


def test_pxelinux_localboot_boots_the_released_disk_twice(tmp_path: Path) -> None:
    built = run_cli("media", "build", "--state-dir", str(REPO / "var"))
    assert built.returncode == 0, built.stderr
    bootfiles = tmp_path / "bootfiles"  # the repo's templates and media, plus pxelinux
    bootfiles.mkdir()
    (bootfiles / "templates").symlink_to(REPO / "bootfiles" / "templates")
    (bootfiles / "media").symlink_to(REPO / "bootfiles" / "media")
    shutil.copy(PXELINUX, bootfiles / "pxelinux.0")
    shutil.copy(LDLINUX, bootfiles / "ldlinux.c32")
    config = demo_variant(
        tmp_path / "netdeploy.toml",
        replace={'bootfiles_dir = "../bootfiles"': f'bootfiles_dir = "{bootfiles}"'},
    )
    release_in_store(config, tmp_path / "state", (SQL_N3,))
    disk = tmp_path / "released.img"
    make_image(disk, size_mib=16)
    tag = (f"dhcp-host={SQL_N3},set:pxelinux", f"dhcp-boot=tag:pxelinux,pxelinux.0,,{SERVER_IP}")
    with lan(tmp_path, taps=1, boot_first=tag) as net:
        net.serve(config, tmp_path / "state", tftp_port=69)
        texts = boot_twice(
            lambda n: VM(f"pxelinux-{n}", SQL_N3, tmp_path / f"pxelinux-{n}.log", disk=disk,
                         tap="tap0", netns=net.netns),
            LOCAL_BOOT_MARKER,
        )  # fmt: skip
    # pxelinux, not an iPXE script, decided: its config from our TFTP said LOCALBOOT 0
    assert all("PXELINUX" in t and "Booting from local disk" in t for t in texts)
