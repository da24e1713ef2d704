"""The initramfs writer produces archives the kernel's format readers accept (busybox cpio)."""

from __future__ import annotations

import io
import shutil
import stat
import subprocess

import pytest

from netdeploy.media.build import module_depends
from netdeploy.media.cpio import Entry, write_newc


def archive(entries, mtime=0) -> bytes:
    out = io.BytesIO()
    write_newc(out, entries, mtime)
    return out.getvalue()


ENTRIES = [
    Entry.directory("bin"),
    Entry.file("bin/tool", b"#!/bin/sh\necho hi\n", executable=True),
    Entry.symlink("bin/sh", "tool"),
    Entry.file("etc/odd-length", b"x" * 5),
    Entry.chardev("dev/console", 5, 1),
]


def test_same_entries_give_the_same_bytes_and_headers_are_aligned():
    data = archive(ENTRIES)
    assert data == archive(ENTRIES)
    assert data.startswith(b"070701")
    assert len(data) % 4 == 0
    assert data.rstrip(b"\0").endswith(b"TRAILER!!!")


@pytest.mark.skipif(shutil.which("busybox") is None, reason="needs busybox (busybox-static)")
def test_busybox_cpio_extracts_what_we_wrote(tmp_path):
    listing = (
        subprocess.run(
            ["busybox", "cpio", "-t"], input=archive(ENTRIES), capture_output=True, check=True
        )
        .stdout.decode()
        .split()
    )
    assert listing == ["bin", "bin/tool", "bin/sh", "etc/odd-length", "dev/console"]
    subprocess.run(
        ["busybox", "cpio", "-i", "-d"],
        input=archive(ENTRIES[:4]),
        cwd=tmp_path,
        capture_output=True,
        check=True,
    )
    tool = tmp_path / "bin" / "tool"
    assert tool.read_bytes() == b"#!/bin/sh\necho hi\n"
    assert tool.stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "bin" / "sh").is_symlink()
    assert (tmp_path / "bin" / "sh").readlink().name == "tool"
    assert (tmp_path / "etc" / "odd-length").read_bytes() == b"xxxxx"
    assert stat.S_ISDIR((tmp_path / "bin").stat().st_mode)


def test_module_depends_reads_modinfo():
    ko = b"\x7fELF...\0license=GPL\0depends=virtio,virtio_ring\0vermagic=6.1\0"
    assert module_depends(ko) == ["virtio", "virtio_ring"]
    assert module_depends(b"\0depends=\0name=x\0") == []
