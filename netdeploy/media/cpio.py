"""A deterministic ``newc`` cpio writer (the initramfs format), so media builds are reproducible.

Every entry gets uid/gid 0 and the same mtime; entries are written in the order given. The host
needs no GNU cpio (Debian's busybox cpio cannot set ownership on create).
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from typing import BinaryIO


@dataclass(frozen=True)
class Entry:
    name: str  # path inside the archive, no leading slash
    mode: int  # full st_mode: type bits | permissions
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)  # (major, minor) for device nodes

    @staticmethod
    def directory(name: str) -> Entry:
        return Entry(name, stat.S_IFDIR | 0o755)

    @staticmethod
    def file(name: str, data: bytes, executable: bool = False) -> Entry:
        return Entry(name, stat.S_IFREG | (0o755 if executable else 0o644), data)

    @staticmethod
    def symlink(name: str, target: str) -> Entry:
        return Entry(name, stat.S_IFLNK | 0o777, target.encode())

    @staticmethod
    def chardev(name: str, major: int, minor: int, perm: int = 0o600) -> Entry:
        return Entry(name, stat.S_IFCHR | perm, b"", (major, minor))


def _pad(out: BinaryIO, length: int) -> None:
    out.write(b"\0" * (-length % 4))


def write_newc(out: BinaryIO, entries: list[Entry], mtime: int = 0) -> None:
    """Write ``entries`` and the trailer as a ``newc`` (070701) archive."""
    for ino, entry in enumerate([*entries, Entry("TRAILER!!!", 0)], start=1):
        name = entry.name.encode() + b"\0"
        is_trailer = entry.name == "TRAILER!!!"
        fields = (
            0 if is_trailer else ino,
            entry.mode,
            0,
            0,
            2 if stat.S_ISDIR(entry.mode) else 1,
            0 if is_trailer else mtime,
            len(entry.data),
            0,
            0,
            entry.rdev[0],
            entry.rdev[1],
            len(name),
            0,
        )
        header = b"070701" + b"".join(b"%08X" % value for value in fields)
        out.write(header + name)
        _pad(out, len(header) + len(name))
        out.write(entry.data)
        _pad(out, len(entry.data))
