"""ntfs-3g in the startup media, so answer files reach NTFS system partitions (decision 0007).

Debian's kernel has no NTFS driver (``CONFIG_NTFS3_FS`` is not set), so the agent mounts NTFS with
ntfs-3g, a FUSE program. Debian builds it dynamically linked: the media gets the binary, every
shared library its ``DT_NEEDED`` entries ask for (transitively), and the dynamic loader at the path
its ``PT_INTERP`` names. Libraries come from the packages the program's package depends on,
found by Debian's library-package naming (Policy §8.1: ``libntfs-3g.so.89`` is in
``libntfs-3g89``); the C library and loader come from the build host, whose apt sources the
packages were downloaded from, so they are the glibc the packages were built against.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from netdeploy.media.elf import NotElf, linkage

MULTIARCH = "x86_64-linux-gnu"  # the media's kernel is amd64
# where a soname is looked for inside a package tree or on the host
LIBRARY_DIRS = (f"lib/{MULTIARCH}", f"usr/lib/{MULTIARCH}", "lib", "usr/lib")
# where libraries go in the media: a directory Debian's ld.so searches without an ld.so.cache
MEDIA_LIBDIR = f"lib/{MULTIARCH}"
PROGRAM = "ntfs-3g"
HOST_PACKAGES = {"libc6"}  # glibc: taken from the host (see above), never downloaded


class BundleError(Exception):
    """A program's libraries cannot all be found; the message names the missing one."""


@dataclass(frozen=True)
class Piece:
    path: str  # inside the media, no leading slash
    data: bytes
    origin: str  # the .deb it came from, or host:<real path>

    def describe(self) -> dict[str, object]:
        return {
            "from": self.origin,
            "size": len(self.data),
            "sha256": hashlib.sha256(self.data).hexdigest(),
        }


@dataclass(frozen=True)
class Tree:
    """An extracted package (or the host's ``/``) and what to call it in the manifest."""

    root: Path
    origin: str
    depends: tuple[str, ...] = ()


def parse_depends(field: str) -> tuple[str, ...]:
    """``libc6 (>= 2.34), libfoo1 | libbar1, fuse3`` → the first package of each alternative."""
    names = []
    for clause in field.split(","):
        first = clause.split("|")[0].strip()
        match = re.match(r"[a-z0-9][a-z0-9+.-]*", first)
        if match:
            names.append(match.group(0))
    return tuple(names)


def library_package(soname: str) -> str | None:
    """The package Debian Policy §8.1 names for a soname.

    ``libntfs-3g.so.89`` → ``libntfs-3g89``; a stem ending in a digit gets a dash:
    ``libfoo2.so.1`` → ``libfoo2-1``.
    """
    match = re.fullmatch(r"(.+)\.so\.([0-9][0-9.]*)", soname)
    if not match:
        return None
    stem, version = match.groups()
    return f"{stem}{'-' if stem[-1].isdigit() else ''}{version}".lower()


def _file_in(tree: Tree, relative: str) -> Path | None:
    """``relative`` inside the tree, following symlinks (absolute ones re-rooted in the tree)."""
    path = tree.root / relative.lstrip("/")
    for _hop in range(16):
        if not path.is_symlink():
            return path if path.is_file() else None
        target = os.readlink(path)
        if target.startswith("/"):
            path = tree.root / target.lstrip("/")
        else:
            path = Path(os.path.normpath(path.parent / target))
    return None


def _origin(tree: Tree, found: Path) -> str:
    return f"host:{found.resolve()}" if tree.origin == "host" else tree.origin


def _library(trees: list[Tree], soname: str) -> tuple[Tree, Path] | None:
    for tree in trees:
        for directory in LIBRARY_DIRS:
            found = _file_in(tree, f"{directory}/{soname}")
            if found is not None:
                return tree, found
    return None


def bundle(
    program: str,
    package: Tree,
    fetch: Callable[[str], Tree],
    host: Tree,
) -> list[Piece]:
    """The program (``bin/NAME`` in the media), its libraries and its loader, in a stable order."""
    binary = _file_in(package, f"bin/{program}") or _file_in(package, f"usr/bin/{program}")
    if binary is None:
        raise BundleError(f"{package.origin} holds no bin/{program}")
    trees = [package]
    pieces = {f"bin/{program}": Piece(f"bin/{program}", binary.read_bytes(), package.origin)}
    try:
        first = linkage(pieces[f"bin/{program}"].data)
    except NotElf as exc:
        raise BundleError(f"{package.origin}: bin/{program}: {exc}") from None
    if first.interpreter is None:
        return list(pieces.values())  # static: nothing else to copy
    loader = _file_in(host, first.interpreter) or _file_in(package, first.interpreter)
    if loader is None:
        raise BundleError(
            f"{program} needs the loader {first.interpreter}, which this host lacks; "
            "build the media on an amd64 Debian/Ubuntu host"
        )
    media_loader = first.interpreter.lstrip("/")
    pieces[media_loader] = Piece(media_loader, loader.read_bytes(), _origin(host, loader))
    loader_soname = os.path.basename(first.interpreter)  # libc asks for the loader by this name
    queue = list(first.needed)
    while queue:
        soname = queue.pop(0)
        media_path = f"{MEDIA_LIBDIR}/{soname}"
        if soname == loader_soname or media_path in pieces:
            continue
        hit = _library(trees, soname)
        wanted = library_package(soname)
        depends = {name for tree in trees for name in tree.depends}
        if hit is None and wanted in depends and wanted not in HOST_PACKAGES:
            trees.append(fetch(wanted))
            hit = _library(trees, soname)
        if hit is None:
            hit = _library([host], soname)
        if hit is None:
            raise BundleError(
                f"{program} needs {soname}, found in no package it depends on nor on this host; "
                f"install {wanted or 'the package that has it'} and build again"
            )
        tree, found = hit
        data = found.read_bytes()
        pieces[media_path] = Piece(media_path, data, _origin(tree, found))
        try:
            queue += linkage(data).needed
        except NotElf as exc:
            raise BundleError(f"{found}: {exc}") from None
    return [pieces[path] for path in sorted(pieces)]
