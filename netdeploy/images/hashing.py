"""Read an image once: hash it, and copy or compress it into the images directory on the way.

Every function here reads the source exactly once in large blocks and reports progress through a
callback taking the number of bytes just processed, so the CLI can draw a bar (size, rate, ETA)
and tests can count. No function here knows about the store or the CLI.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BLOCK = 4 * 1024 * 1024  # large reads: hashing runs at disk speed, not syscall speed
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # RFC 8878 §3.1.1: every zstd frame starts with these 4 bytes

Progress = Callable[[int], None]


def _ignore(_n: int) -> None:
    pass


class HashError(Exception):
    """The file cannot be read (or changed while being read); the message says which and why."""


@dataclass(frozen=True)
class Digest:
    size: int
    sha256: str


def sniff_format(path: Path) -> str:
    """``raw+zstd`` when the file starts with a zstd frame, otherwise ``raw``."""
    with open(path, "rb") as fh:
        return "raw+zstd" if fh.read(4) == ZSTD_MAGIC else "raw"


def _read_blocks(fh, progress: Progress):  # type: ignore[no-untyped-def]
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    while True:
        n = fh.readinto(buf)
        if not n:
            return
        progress(n)
        yield view[:n]


def hash_file(path: Path, progress: Progress = _ignore) -> Digest:
    """sha256 and size of ``path``; :class:`HashError` if it cannot be read or changes meanwhile."""
    try:
        with open(path, "rb") as fh:
            before = os.fstat(fh.fileno())
            h = hashlib.sha256()
            size = 0
            for block in _read_blocks(fh, progress):
                h.update(block)  # hashlib releases the GIL for large buffers
                size += len(block)
            after = os.fstat(fh.fileno())
    except OSError as exc:
        raise HashError(f"cannot read {path}: {exc.strerror or exc}") from None
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
        raise HashError(f"{path} changed while it was being hashed; capture it again, then retry")
    return Digest(size, h.hexdigest())


def copy_and_hash(src: Path, dst: Path, progress: Progress = _ignore) -> Digest:
    """Copy ``src`` to the new file ``dst`` (fsynced) and hash what was written, in one pass."""
    h = hashlib.sha256()
    size = 0
    try:
        with open(src, "rb") as fin, open(dst, "xb") as fout:
            for block in _read_blocks(fin, progress):
                h.update(block)
                fout.write(block)
                size += len(block)
            fout.flush()
            os.fsync(fout.fileno())
    except OSError as exc:
        raise HashError(f"cannot copy {src} to {dst}: {exc.strerror or exc}") from None
    return Digest(size, h.hexdigest())


@dataclass(frozen=True)
class CompressedDigest:
    served: Digest  # the zstd file netdeploy serves
    raw: Digest  # what the agent writes to disk after decompressing


def compress_and_hash(
    src: Path, dst: Path, progress: Progress = _ignore, level: int = 3
) -> CompressedDigest:
    """zstd-compress raw ``src`` into the new file ``dst``; hash both sides in the same pass."""
    import zstandard

    raw_h, out_h = hashlib.sha256(), hashlib.sha256()
    raw_size = 0

    class _Tee:  # hashes the compressed bytes on their way to disk
        def __init__(self, fh):  # type: ignore[no-untyped-def]
            self.fh, self.size = fh, 0

        def write(self, data: bytes) -> int:
            out_h.update(data)
            self.size += len(data)
            return self.fh.write(data)

    try:
        with open(src, "rb") as fin, open(dst, "xb") as fout:
            tee = _Tee(fout)
            # threads=-1: one worker per core; the frame records the content size for the agent
            cctx = zstandard.ZstdCompressor(level=level, threads=-1, write_checksum=True)
            with cctx.stream_writer(tee, closefd=False) as writer:  # type: ignore[arg-type]
                for block in _read_blocks(fin, progress):
                    raw_h.update(block)
                    raw_size += len(block)
                    writer.write(block)
            fout.flush()
            os.fsync(fout.fileno())
    except OSError as exc:
        raise HashError(f"cannot compress {src} to {dst}: {exc.strerror or exc}") from None
    served = Digest(tee.size, out_h.hexdigest())
    return CompressedDigest(served, Digest(raw_size, raw_h.hexdigest()))


def raw_digest_of_zstd(path: Path, progress: Progress = _ignore) -> Digest:
    """Decompress ``path`` (one or more zstd frames) and hash the result.

    Proves the file is whole: the last frame must end (a truncated frame is an error, not a
    short image), and frame checksums, when present, are verified by the decoder.
    """
    import zstandard

    h = hashlib.sha256()
    size = 0
    dctx = zstandard.ZstdDecompressor()
    dobj, inside_frame = dctx.decompressobj(), False
    try:
        with open(path, "rb") as fh:
            for block in _read_blocks(fh, progress):
                data = bytes(block)
                while data:
                    out = dobj.decompress(data)
                    h.update(out)
                    size += len(out)
                    inside_frame, data = True, b""
                    if dobj.eof:  # RFC 8878 §3.1: frames may follow one another
                        data, dobj, inside_frame = dobj.unused_data, dctx.decompressobj(), False
    except OSError as exc:
        raise HashError(f"cannot read {path}: {exc.strerror or exc}") from None
    except zstandard.ZstdError as exc:
        raise HashError(f"{path} is not a valid zstd stream: {exc}") from None
    if inside_frame or size == 0:
        raise HashError(f"{path} is not a valid zstd stream: it ends inside a frame")
    return Digest(size, h.hexdigest())
