"""The sparse segment format of network capture: only the disk's non-zero blocks travel.

The agent's ``ndcap`` (bootfiles/agent/ndcap.c) cuts the disk into segments of raw length
``length`` from ``offset`` and sends each as one zstd frame (with its content checksum) holding::

    header  b"NDSPARS1" | u64 offset | u64 length | u32 block | u32 flags (=0)    32 bytes
    record  u64 at | u32 n | n bytes of data        at in [offset, offset+length), n <= block
    end     u64 0xFFFFFFFFFFFFFFFF | u32 0

all little-endian. Every byte of ``[offset, offset+length)`` that no record covers is zero. A
segment is self-contained, so a cut upload is resumed at the first segment the server has not
committed (docs/images.md, "Network capture"). The same format (concatenated frames) is what
``GET /images/{name}?format=sparse`` serves to a deploying agent.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

MAGIC = b"NDSPARS1"
HEADER = struct.Struct("<8sQQII")
RECORD = struct.Struct("<QI")
END = 0xFFFFFFFFFFFFFFFF
BLOCK = 64 * 1024  # the zero-skipping granularity
MAX_SEGMENT = 256 * 1024 * 1024  # what one request may cover (raw bytes)


class SparseError(ValueError):
    """A segment that is not well formed; the message says where."""


@dataclass
class Segment:
    offset: int
    length: int
    block: int
    blocks: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def data_bytes(self) -> int:
        return sum(len(b) for _, b in self.blocks)


class SegmentParser:
    """Incremental parser: feed decompressed bytes in any pieces, then :meth:`finish`."""

    def __init__(self, max_length: int = MAX_SEGMENT):
        self.buf = bytearray()
        self.segment: Segment | None = None
        self.ended = False
        self.max_length = max_length
        self._next_at = 0

    def feed(self, data: bytes) -> None:
        if self.ended and data:
            raise SparseError("bytes after the end record")
        self.buf += data
        self._parse()

    def _parse(self) -> None:
        if self.segment is None:
            if len(self.buf) < HEADER.size:
                return
            magic, offset, length, block, _flags = HEADER.unpack_from(self.buf)
            if magic != MAGIC:
                raise SparseError("not a sparse segment (bad magic)")
            if not 0 < length <= self.max_length or not 512 <= block <= 16 << 20:
                raise SparseError(f"segment length {length} or block {block} out of range")
            self.segment = Segment(offset, length, block)
            self._next_at = offset
            del self.buf[: HEADER.size]
        seg = self.segment
        while not self.ended and len(self.buf) >= RECORD.size:
            at, n = RECORD.unpack_from(self.buf)
            if at == END:
                if n != 0:
                    raise SparseError("malformed end record")
                self.ended = True
                del self.buf[: RECORD.size]
                if self.buf:
                    raise SparseError("bytes after the end record")
                return
            if at < self._next_at or n == 0 or n > seg.block or at + n > seg.offset + seg.length:
                raise SparseError(f"record at {at} (+{n}) outside segment or out of order")
            if len(self.buf) < RECORD.size + n:
                return
            seg.blocks.append((at, bytes(self.buf[RECORD.size : RECORD.size + n])))
            self._next_at = at + n
            del self.buf[: RECORD.size + n]

    def finish(self) -> Segment:
        if self.segment is None or not self.ended:
            raise SparseError("segment ended early (no end record)")
        return self.segment


def is_zero(block: bytes | memoryview) -> bool:
    return not any(block) if len(block) < 64 else block == bytes(len(block))


def encode(fh: BinaryIO, offset: int, length: int, block: int = BLOCK) -> Iterator[bytes]:
    """The uncompressed segment of ``fh`` (a raw disk or image) for ``[offset, offset+length)``."""
    yield HEADER.pack(MAGIC, offset, length, block, 0)
    fh.seek(offset)
    pos, end = offset, offset + length
    zero = bytes(block)
    while pos < end:
        data = fh.read(min(block, end - pos))
        if not data:
            break
        if data != zero[: len(data)]:
            yield RECORD.pack(pos, len(data)) + data
        pos += len(data)
    yield RECORD.pack(END, 0)


def write_segment(fd: int, segment: Segment) -> None:
    """Put a segment's data at its offsets in ``fd`` (a sparse file pre-sized to the disk);
    the zero ranges are left as they are (holes in a new file)."""
    import os

    for at, data in segment.blocks:
        os.pwrite(fd, data, at)
