"""The agent's NTFS shell functions, run by busybox sh on the host against real ntfs-3g volumes.

The QEMU test (tests/e2e/test_ntfs_inject.py) covers the path that works. These cover what one
guest cannot: case folding against names already on the volume, and a master whose Windows was
hibernated, which ntfs-3g mounts read-only instead of refusing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.agent_shell import BUSYBOX, agent_function

pytestmark = pytest.mark.skipif(BUSYBOX is None, reason="needs busybox (Debian: busybox-static)")


def run_agent(functions: list[str], call: str) -> subprocess.CompletedProcess[str]:
    """``call`` after the given agent functions; fail() prints and stops, as in the agent."""
    script = 'fail() { echo "FAILED: $*"; exit 1; }\n'
    script += "".join(agent_function(name) for name in functions) + call + "\n"
    return subprocess.run([BUSYBOX, "sh", "-c", script], capture_output=True, text=True, timeout=60)


def ci_path(root: Path, relative: str) -> str:
    done = run_agent(["ci_path"], f'ci_path "{root}" "{relative}"')
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_ci_path_follows_existing_names_whatever_their_case(tmp_path):
    (tmp_path / "Sysprep" / "I386").mkdir(parents=True)
    (tmp_path / "Sysprep" / "SYSPREP.INF").write_text("old")
    assert ci_path(tmp_path, "sysprep/sysprep.inf") == "Sysprep/SYSPREP.INF"
    assert ci_path(tmp_path, "SYSPREP/i386/oem/cmdlines.txt") == "Sysprep/I386/oem/cmdlines.txt"
    assert ci_path(tmp_path, "netdeploy/report.vbs") == "netdeploy/report.vbs"  # new: as given


def test_ci_path_prefers_an_exact_match(tmp_path):
    (tmp_path / "Sysprep").mkdir()
    (tmp_path / "sysprep").mkdir()  # a case-sensitive filesystem can hold both
    assert ci_path(tmp_path, "sysprep/a.inf") == "sysprep/a.inf"
    assert ci_path(tmp_path, "Sysprep/a.inf") == "Sysprep/a.inf"
    assert ci_path(tmp_path, "SYSPREP/a.inf") in {"Sysprep/a.inf", "sysprep/a.inf"}


def test_ci_path_matches_whole_names_only(tmp_path):
    (tmp_path / "sysprep.old").mkdir()
    (tmp_path / "xsysprep").mkdir()
    assert ci_path(tmp_path, "SYSPREP/sysprep.inf") == "SYSPREP/sysprep.inf"
    assert ci_path(tmp_path, "Sysprep.Old/x") == "sysprep.old/x"


# mounting needs root, FUSE and ntfs-3g on the host; the guest test covers the media's own copy
CAN_MOUNT = (
    os.geteuid() == 0
    and Path("/dev/fuse").exists()
    and all(shutil.which(t) for t in ("ntfs-3g", "mkntfs", "ntfscp", "mkfs.vfat"))
)
needs_fuse = pytest.mark.skipif(
    not CAN_MOUNT, reason="mounting NTFS on the host needs root, /dev/fuse, ntfs-3g, dosfstools"
)


def ntfs_volume(path: Path, hibernated: bool = False) -> Path:
    with open(path, "wb") as fh:
        fh.truncate(16 * 1024 * 1024)
    subprocess.run(["mkntfs", "-F", "-Q", "-q", str(path)], check=True, capture_output=True)
    if hibernated:  # what Windows leaves when it hibernates or "fast starts": hiberfil.sys "hibr"
        hiberfil = path.parent / "hiberfil.sys"
        hiberfil.write_bytes(b"hibr" + bytes(8188))
        subprocess.run(["ntfscp", "-q", str(path), str(hiberfil), "hiberfil.sys"], check=True)
    return path


def mount_ntfs(device: Path, target: Path) -> subprocess.CompletedProcess[str]:
    target.mkdir(exist_ok=True)
    done = run_agent(
        ["mount_ntfs"], f'mount_ntfs "{device}" "{target}" sysprep.inf && echo MOUNTED'
    )
    if os.path.ismount(target):  # leave nothing mounted, whatever the outcome
        subprocess.run(["umount", str(target)], check=True)
    return done


@needs_fuse
def test_mount_ntfs_mounts_a_clean_volume_read_write(tmp_path):
    done = mount_ntfs(ntfs_volume(tmp_path / "clean.img"), tmp_path / "mnt")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "MOUNTED"


@needs_fuse
def test_mount_ntfs_refuses_a_hibernated_windows_and_says_what_to_do(tmp_path):
    image = ntfs_volume(tmp_path / "hibernated.img", hibernated=True)
    done = mount_ntfs(image, tmp_path / "mnt")
    assert done.returncode == 1
    assert done.stdout.startswith(
        f"FAILED: {image} (ntfs) mounts only read-only, so sysprep.inf cannot be injected: "
    )
    assert "Windows is hibernated" in done.stdout  # ntfs-3g's own words
    assert "turn hibernation and fast startup off (powercfg /h off)" in done.stdout
    assert not os.path.ismount(tmp_path / "mnt")  # the agent unmounted it before failing


@needs_fuse
def test_mount_ntfs_on_a_fat_partition_points_at_the_inject_entry(tmp_path):
    image = tmp_path / "fat.img"
    with open(image, "wb") as fh:
        fh.truncate(16 * 1024 * 1024)
    subprocess.run(["mkfs.vfat", str(image)], check=True, capture_output=True)
    done = mount_ntfs(image, tmp_path / "mnt")
    assert done.returncode == 1
    assert done.stdout.startswith(f"FAILED: cannot mount {image} (ntfs) with ntfs-3g to inject ")
    assert "check partition and fs of this file's inject entry in the config" in done.stdout


def test_mount_ntfs_without_ntfs3g_in_the_media_says_to_rebuild_it(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    call = f'PATH="{empty}"; mount_ntfs /dev/vda1 /mnt/target sysprep.inf && echo MOUNTED'
    done = run_agent(["mount_ntfs"], call)
    assert done.returncode == 1
    assert done.stdout.strip() == (
        "FAILED: this startup media has no ntfs-3g, so sysprep.inf cannot be injected into "
        "/dev/vda1 (ntfs); rebuild it with `netdeploy media build` (without --ntfs-3g none)"
    )
