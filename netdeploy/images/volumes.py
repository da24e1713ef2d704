"""One read-only view over the file systems preflight opens (dissect.ntfs, dissect.fat,
dissect.extfs), shared by the Linux and Windows halves of preflight."""

from __future__ import annotations

from typing import Any, BinaryIO

MAX_LISTED = 64  # drivers, host keys, ...: enough to act on, bounded in the store


def line_of(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


# ---------------------------------------------------------------- file systems


class Volume:
    """One file-system interface over dissect.ntfs, dissect.fat and dissect.extfs."""

    def __init__(self, kind: str, fs: Any):
        self.kind, self.fs = kind, fs

    def _get(self, path: str) -> Any:
        path = path.strip("/")
        if self.kind == "ntfs":
            return self.fs.mft.get(path)  # "" is the root directory
        return self.fs.get("/" + path)

    def exists(self, path: str) -> bool:
        try:
            self._get(path)
            return True
        except Exception:  # each reader has its own FileNotFoundError
            return False

    def read(self, path: str, limit: int = 64 << 20) -> bytes | None:
        try:
            node = self._get(path)
            return bytes(node.open().read(limit))
        except Exception:
            return None

    def listdir(self, path: str) -> list[str] | None:
        try:
            node = self._get(path)
        except Exception:
            return None
        try:
            if self.kind == "ntfs":
                names = list(node.listdir())
            elif self.kind == "fat":
                names = [e.name for e in node.iterdir()]
            else:
                names = list(node.listdir())
        except Exception:
            return None
        return [n for n in names if n not in (".", "..")]

    def find(self, path: str) -> str | None:
        """``path`` spelled as on the volume, ignoring case (FAT and NTFS readers may not)."""
        spelled = ""
        for part in path.strip("/").split("/"):
            names = self.listdir(spelled)
            if names is None:
                return None
            hit = next((n for n in names if n.lower() == part.lower()), None)
            if hit is None:
                return None
            spelled = f"{spelled}/{hit}" if spelled else hit
        return spelled


def open_fs(stream: BinaryIO) -> tuple[str, Volume | None]:
    stream.seek(0)
    boot = stream.read(4096)
    stream.seek(0)
    try:
        if boot[3:11] == b"NTFS    ":
            from dissect.ntfs import NTFS

            return "ntfs", Volume("ntfs", NTFS(stream))
        if len(boot) >= 1082 and boot[1080:1082] == b"\x53\xef":  # ext2/3/4 magic
            from dissect.extfs import ExtFS

            return "ext", Volume("ext", ExtFS(stream))
        if boot[510:512] == b"\x55\xaa" and (b"FAT" in boot[54:62] or b"FAT32" in boot[82:90]):
            from dissect.fat import FATFS

            return "fat", Volume("fat", FATFS(stream))
    except Exception as exc:
        return f"unreadable ({line_of(exc)})", None
    return "unknown", None
