"""Reading an ELF's loader and DT_NEEDED, and gathering a program's libraries (decision 0007)."""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

import pytest

from netdeploy.media.elf import NotElf, linkage
from netdeploy.media.ntfs import BundleError, Tree, bundle, library_package, parse_depends

LOADER = "/lib64/ld-linux-x86-64.so.2"


def elf(
    interpreter: str | None = None, needed: tuple[str, ...] = (), base: int = 0x400000
) -> bytes:
    """A minimal ELF64 file: header, program headers, interpreter, string table, dynamic section.

    The string table is found through its *address* (DT_STRTAB), which differs from its file
    offset by ``base``, as in real executables.
    """
    strtab = b"\0"
    name_at = []
    for name in needed:
        name_at.append(len(strtab))
        strtab += name.encode() + b"\0"
    interp = interpreter.encode() + b"\0" if interpreter else b""
    phnum = 2 + bool(interp)
    interp_at = 64 + 56 * phnum
    strtab_at = interp_at + len(interp)
    dynamic_at = (strtab_at + len(strtab) + 7) // 8 * 8
    entries = [(1, at) for at in name_at] + [(5, base + strtab_at), (0, 0)]
    dynamic = b"".join(struct.pack("<qQ", tag, value) for tag, value in entries)
    total = dynamic_at + len(dynamic)
    header = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    header += struct.pack("<HHIQQQIHHHHHH", 3, 62, 1, 0, 64, 0, 0, 64, 56, phnum, 64, 0, 0)
    phdrs = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, total, total, 0x1000)  # PT_LOAD
    if interp:
        phdrs += struct.pack(
            "<IIQQQQQQ", 3, 4, interp_at, base + interp_at, 0, len(interp), len(interp), 1
        )
    phdrs += struct.pack(
        "<IIQQQQQQ", 2, 6, dynamic_at, base + dynamic_at, 0, len(dynamic), len(dynamic), 8
    )
    body = header + phdrs + interp + strtab
    return body + bytes(dynamic_at - len(body)) + dynamic


def test_linkage_reads_loader_and_needed_in_order():
    data = elf(LOADER, ("libntfs-3g.so.89", "libc.so.6"))
    assert linkage(data).interpreter == LOADER
    assert linkage(data).needed == ("libntfs-3g.so.89", "libc.so.6")


def test_a_library_has_needed_but_no_loader():
    assert linkage(elf(None, ("libc.so.6",))) == linkage(elf(None, ("libc.so.6",), base=0))
    assert linkage(elf(None, ("libc.so.6",))).interpreter is None


def test_a_real_dynamic_executable_needs_libc():
    found = linkage(Path(os.path.realpath(sys.executable)).read_bytes())
    assert found.interpreter and found.interpreter.endswith("ld-linux-x86-64.so.2")
    assert "libc.so.6" in found.needed


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"#!/bin/sh\necho hello\n" * 4, "not an ELF file"),
        (b"\x7fELF" + bytes([1, 1, 1]) + bytes(57), "not a 64-bit little-endian ELF file"),
        (b"\x7fELF" + bytes([2, 2, 1]) + bytes(57), "not a 64-bit little-endian ELF file"),
    ],
)
def test_what_is_not_a_64_bit_elf_is_refused(data, why):
    with pytest.raises(NotElf, match=why):
        linkage(data)


@pytest.mark.parametrize("cut", [80, 150, 200])
def test_a_truncated_elf_is_refused_not_a_traceback(cut):
    data = elf(LOADER, ("libntfs-3g.so.89", "libc.so.6"))
    assert cut < len(data)
    with pytest.raises(NotElf, match="truncated or damaged"):
        linkage(data[:cut])


def test_parse_depends_keeps_the_first_of_each_alternative():
    field = "libc6 (>= 2.34), libgcrypt20 (>= 1.10.0), libntfs-3g89 (= 1:2022.10.3-1), a | b, fuse3"
    assert parse_depends(field) == ("libc6", "libgcrypt20", "libntfs-3g89", "a", "fuse3")
    assert parse_depends("") == ()


@pytest.mark.parametrize(
    ("soname", "package"),
    [
        ("libntfs-3g.so.89", "libntfs-3g89"),
        ("libc.so.6", "libc6"),
        ("libgcrypt.so.20", "libgcrypt20"),
        ("libfuse3.so.3", "libfuse3-3"),  # stem ends in a digit: a dash (Policy §8.1)
        ("ld-linux-x86-64.so.2", "ld-linux-x86-64-2"),
        ("libfoo.so", None),
    ],
)
def test_library_package_follows_debian_policy(soname, package):
    assert library_package(soname) == package


def put(root: Path, relative: str, data: bytes | None = None, link: str | None = None) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    if link is not None:
        path.symlink_to(link)
    else:
        path.write_bytes(data or b"")


@pytest.fixture
def trees(tmp_path):
    """A program package, one library package it depends on, and a host with glibc."""
    program = tmp_path / "prog"
    put(program, "bin/prog", elf(LOADER, ("libfoo.so.1", "libc.so.6")))
    library = tmp_path / "libfoo1"
    put(library, "lib/x86_64-linux-gnu/libfoo.so.1.2.3", elf(None, ("libc.so.6", "libbar.so.2")))
    put(library, "lib/x86_64-linux-gnu/libfoo.so.1", link="libfoo.so.1.2.3")
    host = tmp_path / "host"
    put(host, "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", b"\x7fELF loader")
    put(host, "lib64/ld-linux-x86-64.so.2", link="/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    put(host, "usr/lib/x86_64-linux-gnu/libc.so.6", elf(LOADER, ("ld-linux-x86-64.so.2",)))
    put(host, "usr/lib/x86_64-linux-gnu/libbar.so.2", elf(None, ("libc.so.6",)))
    fetched: list[str] = []

    def fetch(name: str) -> Tree:
        fetched.append(name)
        assert name == "libfoo1", f"fetched {name}, which the program does not need"
        return Tree(library, "libfoo1_1.0_amd64.deb", ("libc6",))

    package = Tree(program, "prog_1.0_amd64.deb", ("libc6", "libfoo1", "libgcrypt20"))
    return package, fetch, Tree(host, "host"), fetched


def test_bundle_gathers_program_libraries_and_loader(trees):
    package, fetch, host, fetched = trees
    pieces = bundle("prog", package, fetch, host)
    where = {piece.path: piece.origin for piece in pieces}
    assert list(where) == sorted(where)  # a stable order: the cpio is reproducible
    hostlib = f"host:{host.root.resolve()}/usr/lib/x86_64-linux-gnu"
    assert where == {
        "bin/prog": "prog_1.0_amd64.deb",
        "lib/x86_64-linux-gnu/libbar.so.2": f"{hostlib}/libbar.so.2",  # no package names it
        "lib/x86_64-linux-gnu/libc.so.6": f"{hostlib}/libc.so.6",  # glibc: always the host's
        "lib/x86_64-linux-gnu/libfoo.so.1": "libfoo1_1.0_amd64.deb",  # through its symlink
        "lib64/ld-linux-x86-64.so.2": f"{hostlib}/ld-linux-x86-64.so.2",  # at PT_INTERP's path
    }
    assert fetched == ["libfoo1"]  # only what DT_NEEDED asks for, once; libgcrypt20 never
    loader = next(p for p in pieces if p.path.startswith("lib64/"))
    assert loader.data == b"\x7fELF loader"
    assert loader.describe()["size"] == len(b"\x7fELF loader")


def test_a_static_program_is_copied_alone(tmp_path, trees):
    _, fetch, host, fetched = trees
    put(tmp_path / "static", "bin/prog", elf(None, ()))
    pieces = bundle("prog", Tree(tmp_path / "static", "static.deb"), fetch, host)
    assert [p.path for p in pieces] == ["bin/prog"] and fetched == []


def test_a_missing_library_is_named_with_its_package(trees):
    package, fetch, host, _ = trees
    (host.root / "usr/lib/x86_64-linux-gnu/libbar.so.2").unlink()
    with pytest.raises(BundleError) as caught:
        bundle("prog", package, fetch, host)
    assert str(caught.value) == (
        "prog needs libbar.so.2, found in no package it depends on nor on this host; "
        "install libbar2 and build again"
    )


def test_a_package_without_the_program_says_so(tmp_path, trees):
    _, fetch, host, _ = trees
    with pytest.raises(BundleError, match=r"^empty.deb holds no bin/prog$"):
        bundle("prog", Tree(tmp_path, "empty.deb"), fetch, host)
