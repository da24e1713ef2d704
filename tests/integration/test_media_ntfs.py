"""The startup media carries ntfs-3g, every library it loads, its loader and fuse.ko (0007).

Built from Debian's real packages with ``netdeploy media build``; the check of "every library"
walks the ELF files inside the built initramfs, independently of the builder's own list, and
then runs the media's ntfs-3g against nothing but the media's own files.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from netdeploy.media.elf import linkage
from tests.conftest import REPO, run_cli, sha256_of

pytestmark = pytest.mark.skipif(
    shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None,
    reason="media build uses Debian's apt-get and dpkg-deb",
)
CACHE = REPO / "var"  # the package cache the e2e tests' media build uses too


def build(out: Path, *extra: str) -> tuple[dict, Path]:
    """Build the media into ``out``; return its manifest and the initramfs unpacked beside it."""
    result = run_cli("media", "build", "--state-dir", str(CACHE), "--out", str(out), *extra)
    assert result.returncode == 0, result.stderr
    root = out / "root"
    root.mkdir()
    subprocess.run(
        ["busybox", "cpio", "-i", "-d"],
        input=gzip.decompress((out / "initrd.gz").read_bytes()),
        cwd=root,
        capture_output=True,
        check=True,
    )
    return json.loads((out / "manifest.json").read_text()), root


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> tuple[dict, Path]:
    return build(tmp_path_factory.mktemp("media"))


def test_every_library_ntfs3g_loads_is_in_the_media(media):
    manifest, root = media
    first = linkage((root / "bin" / "ntfs-3g").read_bytes())
    assert first.interpreter == "/lib64/ld-linux-x86-64.so.2"
    loader = root / first.interpreter.lstrip("/")
    assert loader.is_file() and not loader.is_symlink()
    # walk DT_NEEDED through the media's own files, as ld.so will without an ld.so.cache
    seen, queue = {"bin/ntfs-3g", "lib64/ld-linux-x86-64.so.2"}, list(first.needed)
    while queue:
        soname = queue.pop()
        if soname == loader.name or f"lib/x86_64-linux-gnu/{soname}" in seen:
            continue  # libc asks for the loader, which is already there
        library = root / "lib" / "x86_64-linux-gnu" / soname
        assert library.is_file(), f"ntfs-3g needs {soname}, missing from the media"
        seen.add(f"lib/x86_64-linux-gnu/{soname}")
        queue += linkage(library.read_bytes()).needed
    assert {"lib/x86_64-linux-gnu/libntfs-3g.so.89", "lib/x86_64-linux-gnu/libc.so.6"} <= seen
    # the manifest lists exactly these files, where each came from, and their bytes
    listed = manifest["ntfs-3g"]
    assert set(listed) == seen
    for path, facts in listed.items():
        assert sha256_of(root / path) == facts["sha256"], path
    assert listed["bin/ntfs-3g"]["from"].startswith("ntfs-3g_")
    assert listed["lib/x86_64-linux-gnu/libntfs-3g.so.89"]["from"].startswith("libntfs-3g89_")
    assert listed["lib/x86_64-linux-gnu/libc.so.6"]["from"].startswith("host:/")


def test_fuse_module_is_loaded_by_the_agent(media):
    manifest, root = media
    assert "fuse" in manifest["modules"]
    assert (root / "lib" / "modules" / "fuse.ko").read_bytes()[:4] == b"\x7fELF"
    assert "fuse" in (root / "etc" / "modules.order").read_text().split()


def test_ntfs3g_runs_on_the_media_files_alone(media):
    _, root = media
    if os.geteuid() == 0:  # the real layout: default library paths, no ld.so.cache
        cmd = ["chroot", str(root), "/bin/ntfs-3g", "--version"]
    else:  # without root: the media's loader, told to look only in the media's library dir
        cmd = [
            str(root / "lib64" / "ld-linux-x86-64.so.2"),
            "--library-path",
            str(root / "lib" / "x86_64-linux-gnu"),
            str(root / "bin" / "ntfs-3g"),
            "--version",
        ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "integrated FUSE" in done.stdout + done.stderr


def test_ntfs3g_can_be_left_out_and_what_it_costs(media, tmp_path):
    manifest, _ = media
    without, root = build(tmp_path / "plain", "--ntfs-3g", "none")
    assert without["ntfs-3g"] is None
    assert "fuse" not in without["modules"]
    assert not (root / "bin" / "ntfs-3g").exists()
    grown = manifest["initrd.gz"]["size"] - without["initrd.gz"]["size"]
    raw = sum(facts["size"] for facts in manifest["ntfs-3g"].values())
    print(
        f"\ninitrd.gz: {without['initrd.gz']['size']} bytes without ntfs-3g, "
        f"{manifest['initrd.gz']['size']} with (+{grown}: {raw} bytes of ntfs-3g files "
        "uncompressed, and fuse.ko)"
    )
    assert grown > 0
