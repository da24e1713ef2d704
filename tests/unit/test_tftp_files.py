"""Rooted names, netascii and the hot-file cache."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netdeploy.tftp.files import (
    FileCache,
    NetasciiContent,
    PacketTable,
    clean_name,
    load,
    open_rooted,
    to_netascii,
)
from netdeploy.tftp.packets import BadPacket, ErrorCode


@pytest.mark.parametrize(
    ("name", "clean"),
    [
        ("pxelinux.0", "pxelinux.0"),
        ("a//b/./c", "a/b/c"),
        ("pxelinux.cfg/01-aa", "pxelinux.cfg/01-aa"),
    ],
)
def test_clean_names(name: str, clean: str) -> None:
    assert clean_name(name) == clean


@pytest.mark.parametrize(
    "name", ["../x", "a/../../x", "a/..", "/etc/passwd", "a\\b", "a\0b", "a\nb", "", "./"]
)
def test_refused_names(name: str) -> None:
    with pytest.raises(BadPacket):
        clean_name(name)


@given(st.text())
def test_a_clean_name_never_climbs(name: str) -> None:
    try:
        clean = clean_name(name)
    except BadPacket:
        return
    assert not clean.startswith("/") and ".." not in clean.split("/") and "\\" not in clean


def test_netascii_is_rfc_1350() -> None:
    assert to_netascii(b"a\nb\r\nc\rd") == b"a\r\nb\r\0\r\nc\r\0d"


def test_symlink_out_of_root_is_refused_in_root_allowed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "outside").write_bytes(b"secret")
    (root / "file").write_bytes(b"ok")
    (root / "out").symlink_to(tmp_path / "outside")
    (root / "in").symlink_to("file")
    with pytest.raises(BadPacket) as caught:
        open_rooted(root, "out")
    assert caught.value.code == ErrorCode.ACCESS_VIOLATION
    fd = open_rooted(root, "in")
    assert os.read(fd, 10) == b"ok"
    os.close(fd)


def test_cache_rereads_a_replaced_file_and_stays_bounded(tmp_path: Path) -> None:
    cache = FileCache(max_bytes=100, max_file=60)
    (tmp_path / "a").write_bytes(b"1" * 50)
    (tmp_path / "b").write_bytes(b"2" * 50)
    (tmp_path / "big").write_bytes(b"3" * 61)
    assert load(tmp_path, "a", "octet", cache).data == b"1" * 50
    (tmp_path / "new").write_bytes(b"4" * 50)
    os.replace(tmp_path / "new", tmp_path / "a")
    assert load(tmp_path, "a", "octet", cache).data == b"4" * 50
    assert load(tmp_path, "b", "octet", cache).data == b"2" * 50
    assert cache._bytes <= 100
    big = load(tmp_path, "big", "octet", cache)
    assert big.data is None and big.block(60, 10) == b"3"  # read per block, not cached
    big.close()
    streamed = load(tmp_path, "big", "netascii", cache)  # too large to cache: converted per block
    assert streamed.size == 61 and streamed.block(0, 100) == b"3" * 61
    streamed.close()


@pytest.mark.parametrize("cached", [True, False])
def test_netascii_is_converted_while_streaming(tmp_path: Path, cached: bool) -> None:
    """Every block equals the same slice of the whole converted file, in order, after a
    window's resend and after a resend from further back (a restart), from memory or a file."""
    rng = random.Random(7)
    raw = bytes(rng.choice(b"ab\r\n\0") for _ in range(3 * NetasciiContent.CHUNK + 123))
    (tmp_path / "t.txt").write_bytes(raw)
    cache = FileCache(max_bytes=1 << 30, max_file=(1 << 30) if cached else 10)
    content = load(tmp_path, "t.txt", "netascii", cache)
    assert isinstance(content, NetasciiContent) and content.data is None
    wire = to_netascii(raw)
    assert content.size == len(wire)
    blksize, window = 512, 4
    content.keep = blksize * (window + 1)
    order = list(range(0, len(wire) + 1, blksize))
    order[40:40] = [order[37], order[38]]  # a window resent
    order[200:200] = [order[3]]  # far back: the conversion restarts
    for offset in order:
        assert content.block(offset, blksize) == wire[offset : offset + blksize]
        assert len(content._buffer) <= content.keep + 2 * NetasciiContent.CHUNK + blksize
    content.close()


def test_a_storm_shares_one_packet_table_per_block_size_and_the_cache_stays_bounded(
    tmp_path: Path,
) -> None:
    data = os.urandom(10_000)
    (tmp_path / "boot.0").write_bytes(data)
    cache = FileCache(max_bytes=1 << 20, max_file=1 << 20)
    first = load(tmp_path, "boot.0", "octet", cache).packets(1468)
    second = load(tmp_path, "boot.0", "octet", cache).packets(1468)
    assert first is second  # built once, sent by every transfer
    for block in range(1, 10_000 // 1468 + 2):
        packet = first.packet(block)
        payload = data[(block - 1) * 1468 : block * 1468]
        assert packet == b"\0\x03" + block.to_bytes(2, "big") + payload
        assert first.packets[block - 1] is packet
    # a few block sizes per file are kept; more, or tiny blocks, are built per send
    for blksize in (512, 1432):
        assert load(tmp_path, "boot.0", "octet", cache).packets(blksize).keep
    for blksize in (1024, 8):
        odd = load(tmp_path, "boot.0", "octet", cache).packets(blksize)
        assert odd is not load(tmp_path, "boot.0", "octet", cache).packets(blksize)
    assert cache._bytes <= cache.max_bytes
    # packet numbers roll over with the block number, like tftp-hpa
    assert PacketTable(bytes(70_000), 1, keep=False).packet(65_537)[:4] == b"\0\x03\0\x01"


def test_tables_never_push_the_cache_past_its_budget(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(os.urandom(40_000))
    cache = FileCache(max_bytes=60_000, max_file=50_000)
    content = load(tmp_path, "a", "octet", cache)
    table = content.packets(1468)  # 40,000 more would not fit: built per send instead
    assert not table.keep and cache._bytes <= 60_000
    assert table.packet(2)[4:] == content.data[1468:2936]  # type: ignore[index]
