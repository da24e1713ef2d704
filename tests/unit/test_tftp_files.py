"""Rooted names, netascii and the hot-file cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netdeploy.tftp.files import FileCache, clean_name, load, open_rooted, to_netascii
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
    with pytest.raises(BadPacket, match="too large for netascii"):
        load(tmp_path, "big", "netascii", cache)
