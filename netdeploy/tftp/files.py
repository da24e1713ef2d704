"""What a transfer sends: rooted file lookup, a cache of hot boot files, netascii.

Serving is rooted in two steps. :func:`clean_name` refuses names that could point outside
the root before the disk is touched (``..``, absolute paths, backslashes, NUL, control
characters). :func:`open_rooted` then opens the file and checks where the opened
descriptor really lives (``/proc/self/fd``), so a symlink inside the root that points out of
it is refused without a window between check and open.

During a boot storm hundreds of machines fetch the same few files; :class:`FileCache` keeps
small files in memory (keyed by device, inode, size and mtime, so a replaced file is reread)
and, per file, the finished DATA packets at the block sizes clients ask for
(:class:`PacketTable`, up to ``TABLES_PER_FILE`` of them, counted in the cache's bytes): every
transfer of a storm sends the same packet objects, built once, with no copy per block.
Large files are read per block with ``os.pread``.
"""

from __future__ import annotations

import os
import stat
import struct
from collections import OrderedDict
from pathlib import Path

from netdeploy.tftp.packets import BadPacket, ErrorCode

_DATA = struct.Struct("!HH")  # opcode 3, block number mod 2**16 (rolls over like tftp-hpa)
TABLES_PER_FILE = 3  # block sizes kept per cached file (PXE ROMs ask 1432, 1468 or 512)
MIN_TABLE_BLKSIZE = 512  # below this the per-packet overhead outweighs the copy it saves
PACKET_OVERHEAD = 64  # bytes a kept packet costs beyond its payload (object header, list slot)


def clean_name(name: str) -> str:
    """The request's file name as a relative path under the root, or BadPacket."""
    if "\0" in name:
        raise BadPacket(ErrorCode.ACCESS_VIOLATION, "file name contains NUL")
    if "\\" in name:
        raise BadPacket(ErrorCode.ACCESS_VIOLATION, "backslashes are refused; use '/'")
    if any(ord(c) < 0x20 or c == "\x7f" for c in name):
        raise BadPacket(ErrorCode.ACCESS_VIOLATION, "file name contains control characters")
    if name.startswith("/"):
        raise BadPacket(
            ErrorCode.ACCESS_VIOLATION, "absolute paths are refused; ask relative to the root"
        )
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise BadPacket(ErrorCode.ACCESS_VIOLATION, "'..' is refused; files come from the root")
    if not parts:
        raise BadPacket(ErrorCode.NOT_FOUND, f"{name!r} names no file")
    return "/".join(parts)


def open_rooted(root: Path, name: str) -> int:
    """Open ``root/name`` (a :func:`clean_name` result) read-only; the caller closes the fd."""
    real_root = os.path.realpath(root)
    path = os.path.join(real_root, name)
    try:
        # O_NONBLOCK: a FIFO planted in the root must not block the event loop.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        raise BadPacket(ErrorCode.NOT_FOUND, f"{name} not found") from None
    except (PermissionError, IsADirectoryError):
        raise BadPacket(ErrorCode.ACCESS_VIOLATION, f"{name} is not readable") from None
    except OSError as exc:
        raise BadPacket(ErrorCode.NOT_FOUND, f"{name}: {exc.strerror}") from None
    try:
        where = _opened_path(fd, path)
        if not where.startswith(real_root.rstrip("/") + "/"):
            raise BadPacket(ErrorCode.ACCESS_VIOLATION, f"{name} leads outside the root")
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BadPacket(ErrorCode.NOT_FOUND, f"{name} is not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _opened_path(fd: int, path: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # no /proc: fall back to resolving the name (racy, but still rooted)
        return os.path.realpath(path)


def to_netascii(data: bytes) -> bytes:
    """RFC 764 NVT-ASCII as RFC 1350 asks: LF becomes CR LF and a bare CR becomes CR NUL."""
    return data.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")


class PacketTable:
    """The DATA packets of ``data`` at one blksize; ``packets[block - 1]`` is block's packet
    once it has been built (``None`` before). ``keep=False`` builds each packet per send."""

    __slots__ = ("blksize", "data", "keep", "packets")

    def __init__(self, data: bytes, blksize: int, *, keep: bool = True):
        self.data, self.blksize, self.keep = data, blksize, keep
        self.packets: list[bytes | None] = [None] * (len(data) // blksize + 1) if keep else []

    def packet(self, block: int) -> bytes:
        """DATA packet of absolute ``block`` (1-based; the last one is short, maybe empty)."""
        offset = (block - 1) * self.blksize
        packet = _DATA.pack(3, block & 0xFFFF) + self.data[offset : offset + self.blksize]
        if self.keep:
            self.packets[block - 1] = packet
        return packet


class BlockPackets:
    """DATA packets read per block from a source (a file descriptor, netascii conversion)."""

    __slots__ = ("blksize", "content", "keep", "packets")

    def __init__(self, content: Content, blksize: int):
        self.content, self.blksize = content, blksize
        self.keep, self.packets = False, []

    def packet(self, block: int) -> bytes:
        header = _DATA.pack(3, block & 0xFFFF)
        return header + self.content.block((block - 1) * self.blksize, self.blksize)


Packets = PacketTable | BlockPackets


class Content:
    """The bytes of one transfer: in memory (virtual, cached, netascii) or read per block."""

    def __init__(self, size: int, data: bytes | None = None, fd: int | None = None):
        self.size = size
        self.data = data
        self.fd = fd
        self.cached: tuple[FileCache, tuple[int, int, int, int]] | None = None

    @classmethod
    def of(cls, data: bytes) -> Content:
        return cls(len(data), data=data)

    def block(self, offset: int, length: int) -> bytes:
        if self.data is not None:
            return self.data[offset : offset + length]
        assert self.fd is not None
        return os.pread(self.fd, length, offset)

    def packets(self, blksize: int) -> Packets:
        """Where a transfer at ``blksize`` takes its DATA packets from."""
        if self.data is None:
            return BlockPackets(self, blksize)
        if self.cached is not None:
            cache, key = self.cached
            table = cache.table(key, blksize)
            if table is not None:
                return table
        # not shared: built per send, so a transfer never holds a copy of what it sent
        return PacketTable(self.data, blksize, keep=False)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class NetasciiContent(Content):
    """A file in netascii, converted while it is sent: memory per transfer stays a few blocks
    however large the file (the whole-file copy it replaces cost its size per transfer).

    The conversion is byte-local (CR → CR NUL, LF → CR LF), so chunks convert alone. The size
    on the wire (for tsize and the last block) is counted once up front, chunk by chunk.
    Blocks are asked in order; what a window may resend (``keep`` bytes before the newest
    request) stays buffered, and anything older restarts the conversion from the start.
    """

    CHUNK = 64 * 1024

    def __init__(self, raw_size: int, *, data: bytes | None = None, fd: int | None = None):
        self._raw = data
        self._raw_size = raw_size
        self._raw_fd = fd
        size = raw_size
        for offset in range(0, raw_size, self.CHUNK):
            chunk = self._read(offset)
            size += chunk.count(b"\r") + chunk.count(b"\n")
        super().__init__(size, fd=fd)
        self.keep = 2 * 512  # the engine sets blksize * (windowsize + 1)
        self._next = 0  # next source offset to convert
        self._base = 0  # wire offset of _buffer[0]
        self._buffer = bytearray()

    def _read(self, offset: int) -> bytes:
        if self._raw is not None:
            return self._raw[offset : offset + self.CHUNK]
        assert self._raw_fd is not None
        return os.pread(self._raw_fd, self.CHUNK, offset)

    def block(self, offset: int, length: int) -> bytes:
        if offset < self._base:  # older than the window kept: convert again from the start
            self._next, self._base, self._buffer = 0, 0, bytearray()
        while self._base + len(self._buffer) < offset + length and self._next < self._raw_size:
            chunk = self._read(self._next)
            if not chunk:  # the file shrank under us: the transfer ends short
                break
            self._next += len(chunk)
            self._buffer += to_netascii(chunk)
        drop = offset - self._base - self.keep
        if drop > 0:
            del self._buffer[:drop]
            self._base += drop
        start = offset - self._base
        return bytes(self._buffer[start : start + length])

    def packets(self, blksize: int) -> Packets:
        return BlockPackets(self, blksize)


class FileCache:
    """Least-recently-used cache of whole small files, bounded in bytes."""

    def __init__(self, max_bytes: int, max_file: int):
        self.max_bytes = max_bytes
        self.max_file = max_file
        # key -> (contents, packet tables by blksize, bytes charged for both)
        self._entries: OrderedDict[
            tuple[int, int, int, int], tuple[bytes, dict[int, PacketTable], list[int]]
        ] = OrderedDict()
        self._bytes = 0

    def get(self, fd: int) -> bytes | None:
        """Whole contents of ``fd`` when it is small enough to keep, else None."""
        found = self.lookup(fd)
        return None if found is None else found[0]

    def lookup(self, fd: int) -> tuple[bytes, tuple[int, int, int, int] | None] | None:
        """(contents, cache key or None when not kept) of ``fd``, or None when too large."""
        st = os.fstat(fd)
        if st.st_size > self.max_file:
            return None
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            return entry[0], key
        data = _read_all(fd, st.st_size)
        if len(data) != st.st_size:  # changed while we read it: serve, do not keep
            return data, None
        self._entries[key] = (data, {}, [len(data)])
        self._bytes += len(data)
        self._shrink()
        return data, (key if key in self._entries else None)

    def table(self, key: tuple[int, int, int, int], blksize: int) -> PacketTable | None:
        """The shared packet table of a kept file at ``blksize``; None when it is not worth
        keeping (tiny blocks, too many block sizes already, more than the cache may hold)."""
        entry = self._entries.get(key)
        if entry is None or blksize < MIN_TABLE_BLKSIZE:
            return None
        data, tables, charged = entry
        table = tables.get(blksize)
        if table is not None:
            return table
        cost = len(data) + PACKET_OVERHEAD * (len(data) // blksize + 1)
        if len(tables) >= TABLES_PER_FILE or charged[0] + cost > self.max_bytes:
            return None
        tables[blksize] = table = PacketTable(data, blksize)
        charged[0] += cost
        self._bytes += cost
        self._entries.move_to_end(key)
        self._shrink()
        return table

    def _shrink(self) -> None:
        while self._bytes > self.max_bytes and self._entries:
            _, (_, _, charged) = self._entries.popitem(last=False)
            self._bytes -= charged[0]


def _read_all(fd: int, size: int) -> bytes:
    chunks, offset = [], 0
    while offset < size:
        chunk = os.pread(fd, min(size - offset, 1 << 20), offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def load(root: Path, name: str, mode: str, cache: FileCache) -> Content:
    """Content for ``name`` under ``root`` in ``mode`` (octet or netascii)."""
    fd = open_rooted(root, name)
    try:
        found = cache.lookup(fd)
    except BaseException:
        os.close(fd)
        raise
    if found is None:  # large: read per block, fd kept open
        size = os.fstat(fd).st_size
        return Content(size, fd=fd) if mode == "octet" else NetasciiContent(size, fd=fd)
    os.close(fd)
    data, key = found
    if mode == "netascii":  # the cached bytes are shared; only a few blocks per transfer
        return NetasciiContent(len(data), data=data)
    content = Content.of(data)
    if key is not None:
        content.cached = (cache, key)
    return content
