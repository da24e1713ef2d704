"""A master image whose system partition is NTFS, as a sysprep'd Windows Server's is.

Built on the host without mounting anything: ``mkntfs`` formats a partition-sized file, ``ntfscp``
puts a file in it, and the file is spliced into a disk image after an MBR whose one partition
has type 0x07 (NTFS). Reading back uses ``ntfscat``/``ntfsls`` on the partition cut out of the
disk, so the test needs neither FUSE nor a loop device on the host.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import sha256_of
from tests.e2e.diskimage import PARTITION_OFFSET, mbr

NTFS_TOOLS = ("mkntfs", "ntfscp", "ntfscat", "ntfsls")  # Debian: ntfs-3g
BOOT_INI = b"[boot loader]\r\ntimeout=0\r\ndefault=multi(0)disk(0)rdisk(0)partition(1)\\WINDOWS\r\n"


def make_ntfs_image(path: Path, size_mib: int = 32) -> dict:
    """Write the image; return its sha256, size and the files the master holds."""
    total = size_mib * 1024 * 1024
    part = path.with_suffix(".part")
    with open(part, "wb") as fh:
        fh.truncate(total - PARTITION_OFFSET)
    # -p: the partition's first sector, recorded as "hidden sectors" so Windows' boot code finds it
    geometry = ["-s", "512", "-p", str(PARTITION_OFFSET // 512), "-H", "255", "-S", "63"]
    subprocess.run(
        ["mkntfs", "-F", "-Q", "-q", *geometry, "-L", "SYSTEM", str(part)],
        check=True,
        capture_output=True,
    )
    local = path.parent / ".boot.ini"
    local.write_bytes(BOOT_INI)
    subprocess.run(["ntfscp", "-q", str(part), str(local), "BOOT.INI"], check=True)
    local.unlink()
    with open(path, "wb") as out:
        out.write(mbr(total, partition_type=0x07))  # NTFS
        out.seek(PARTITION_OFFSET)
        out.write(part.read_bytes())
    part.unlink()
    digest = sha256_of(path)
    return {"sha256": digest, "size": total, "files": {"BOOT.INI": BOOT_INI}}


def system_partition(disk: Path, size_mib: int = 32) -> Path:
    """The NTFS partition of a written disk, cut out into a file of its own for the ntfs tools."""
    part = disk.with_suffix(".ntfs")
    with open(disk, "rb") as src:
        src.seek(PARTITION_OFFSET)
        part.write_bytes(src.read(size_mib * 1024 * 1024 - PARTITION_OFFSET))
    return part


def ntfs_read(part: Path, name: str) -> bytes | None:
    """A file by its exact name (ntfscat does not fold case), or None when absent."""
    done = subprocess.run(["ntfscat", str(part), name], capture_output=True)
    return done.stdout if done.returncode == 0 else None


def ntfs_names(part: Path, directory: str = "/") -> list[str]:
    """The names in a directory, as stored (case kept), without ``.`` and ``..``."""
    done = subprocess.run(
        ["ntfsls", "-p", directory, str(part)], capture_output=True, text=True, check=True
    )
    return [name for name in done.stdout.split() if name not in (".", "..")]
