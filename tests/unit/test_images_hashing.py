"""Hashing, copying and compressing an image in one pass, with progress."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import zstandard

from netdeploy.images import hashing

SIZE = 3 * hashing.BLOCK + 17  # several blocks and a ragged tail


@pytest.fixture
def image(tmp_path: Path) -> tuple[Path, bytes]:
    data = os.urandom(SIZE)
    path = tmp_path / "src.img"
    path.write_bytes(data)
    return path, data


def counter() -> tuple[list[int], hashing.Progress]:
    seen: list[int] = []
    return seen, seen.append


def test_hash_file_reports_progress_summing_to_size(image) -> None:  # type: ignore[no-untyped-def]
    path, data = image
    seen, progress = counter()
    digest = hashing.hash_file(path, progress)
    assert digest == hashing.Digest(SIZE, hashlib.sha256(data).hexdigest())
    assert sum(seen) == SIZE and len(seen) == 4


def test_hash_file_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(hashing.HashError, match=r"cannot read .*missing.img: No such file"):
        hashing.hash_file(tmp_path / "missing.img")


def test_copy_and_hash(image, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path, data = image
    dst = tmp_path / "copy.img"
    digest = hashing.copy_and_hash(path, dst)
    assert dst.read_bytes() == data and digest.sha256 == hashlib.sha256(data).hexdigest()
    with pytest.raises(hashing.HashError):  # never overwrites
        hashing.copy_and_hash(path, dst)


def test_compress_roundtrip_and_raw_digest(tmp_path: Path) -> None:
    data = os.urandom(SIZE // 2) + b"\0" * (SIZE // 2)  # half compressible
    src, dst = tmp_path / "raw.img", tmp_path / "raw.img.zst"
    src.write_bytes(data)
    seen, progress = counter()
    both = hashing.compress_and_hash(src, dst, progress)
    packed = dst.read_bytes()
    assert sum(seen) == len(data)
    assert both.raw == hashing.Digest(len(data), hashlib.sha256(data).hexdigest())
    assert both.served == hashing.Digest(len(packed), hashlib.sha256(packed).hexdigest())
    assert len(packed) < len(data) * 3 // 4
    assert (
        zstandard.ZstdDecompressor().stream_reader(packed, read_across_frames=True).read() == data
    )
    assert hashing.sniff_format(dst) == "raw+zstd" and hashing.sniff_format(src) == "raw"
    assert hashing.raw_digest_of_zstd(dst) == both.raw


def test_corrupt_zstd_is_refused(tmp_path: Path) -> None:
    src, dst = tmp_path / "raw.img", tmp_path / "raw.img.zst"
    src.write_bytes(b"\0" * 100_000)
    hashing.compress_and_hash(src, dst)
    broken = bytearray(dst.read_bytes())
    broken[len(broken) // 2] ^= 0xFF
    dst.write_bytes(bytes(broken[: len(broken) - 3]))
    with pytest.raises(hashing.HashError, match="not a valid zstd stream"):
        hashing.raw_digest_of_zstd(dst)


def test_truncated_zstd_is_refused(tmp_path: Path) -> None:
    src, dst = tmp_path / "raw.img", tmp_path / "raw.img.zst"
    src.write_bytes(os.urandom(200_000))
    hashing.compress_and_hash(src, dst)
    dst.write_bytes(dst.read_bytes()[:-1000])
    with pytest.raises(hashing.HashError, match="ends inside a frame"):
        hashing.raw_digest_of_zstd(dst)


def test_several_zstd_frames_are_one_image(tmp_path: Path) -> None:
    parts = [os.urandom(50_000), b"\0" * 70_000]
    dst = tmp_path / "multi.zst"
    dst.write_bytes(b"".join(zstandard.ZstdCompressor().compress(p) for p in parts))
    whole = b"".join(parts)
    assert hashing.raw_digest_of_zstd(dst) == hashing.Digest(
        len(whole), hashlib.sha256(whole).hexdigest()
    )
