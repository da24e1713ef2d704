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

import errno
import os
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
        self.fed = 0

    def feed(self, data: bytes) -> None:
        if self.ended and data:
            raise SparseError("bytes after the end record")
        self.fed += len(data)
        # every byte is header, a record of at most one block, or the end: never more than
        # the segment's length plus a record head per 512 bytes (the smallest block)
        if self.fed > self.max_length + self.max_length // 512 * RECORD.size + 2 * HEADER.size:
            raise SparseError("more bytes than a segment can hold")
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


def _next_data(fh: BinaryIO, pos: int, end: int, block: int, base: int) -> int:
    """Where data may start at or after ``pos`` (block-aligned from ``base``): holes of a sparse
    file are skipped without reading them (SEEK_DATA, lseek(2)); ``end`` when only holes remain."""
    try:
        found = os.lseek(fh.fileno(), pos, os.SEEK_DATA)
    except OSError as exc:  # ENXIO: only holes from here; anything else: read everything
        return end if exc.errno == errno.ENXIO else pos
    except (AttributeError, ValueError):  # not a real file (tests hand in BytesIO)
        return pos
    return min(end, max(pos, base + (found - base) // block * block))


def encode(fh: BinaryIO, offset: int, length: int, block: int = BLOCK) -> Iterator[bytes]:
    """The uncompressed segment of ``fh`` (a raw disk or image) for ``[offset, offset+length)``."""
    yield HEADER.pack(MAGIC, offset, length, block, 0)
    pos, end = offset, offset + length
    zero = bytes(block)
    while pos < end:
        pos = _next_data(fh, pos, end, block, offset)
        if pos >= end:
            break
        fh.seek(pos)
        data = fh.read(min(block, end - pos))
        if not data:
            break
        if data != zero[: len(data)]:
            yield RECORD.pack(pos, len(data)) + data
        pos += len(data)
    yield RECORD.pack(END, 0)


def encode_frame(fh: BinaryIO, offset: int, length: int, level: int = 3) -> bytes:
    """One segment as the zstd frame ndcap makes (content checksum on)."""
    import zstandard

    params = zstandard.ZstdCompressionParameters.from_level(level, write_checksum=True)
    return zstandard.ZstdCompressor(compression_params=params).compress(
        b"".join(encode(fh, offset, length))
    )


def write_segment(fd: int, segment: Segment) -> None:
    """Put a segment's data at its offsets in ``fd`` (a sparse file pre-sized to the disk);
    the zero ranges are left as they are (holes in a new file)."""
    for at, data in segment.blocks:
        os.pwrite(fd, data, at)
