"""``netdeploy media build``: kernel + busybox initramfs from Debian packages, reproducibly.

Inputs are Debian packages (the kernel of ``linux-image-amd64``, ``busybox-static`` and
``ntfs-3g``), downloaded once with ``apt-get download`` into a cache, or given as ``.deb`` paths.
The initramfs holds the imaging agent (``bootfiles/agent/``), busybox, ntfs-3g with its libraries
(``ntfs.py``), and the NIC/disk/filesystem modules in dependency order; it is written with fixed
ownership and timestamps, so the same inputs give the same bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from netdeploy.media.cpio import Entry, write_newc
from netdeploy.media.holdstub import STUB_FILES
from netdeploy.media.ntfs import PROGRAM as NTFS_PROGRAM
from netdeploy.media.ntfs import BundleError, Piece, Tree, bundle, parse_depends

AGENT_DIR = Path(__file__).resolve().parent.parent.parent / "bootfiles" / "agent"

# Drivers the agent may need: virtio and e1000 (QEMU), common server NICs and disks, and the
# filesystems answer files are injected into. Their dependencies are added automatically.
WANTED_MODULES = [
    "virtio_pci",
    "virtio_net",
    "virtio_blk",
    "virtio_scsi",
    "e1000",
    "e1000e",
    "igb",
    "ixgbe",
    "tg3",
    "bnx2",
    "ahci",
    "sd_mod",
    "nvme",
    "vfat",
    "nls_cp437",
    "nls_iso8859-1",
    "nls_utf8",
    "nls_ascii",  # the kernel's default FAT iocharset: without it vfat refuses to mount
    "ext4",
]
NTFS_MODULES = ["fuse"]  # ntfs-3g is a FUSE program; CONFIG_FUSE_FS=m in Debian's kernel
DEFAULT_KERNEL_PACKAGE = "linux-image-amd64"  # a metapackage: resolved to its versioned kernel


class MediaError(Exception):
    """The media cannot be built; the message says which input failed and what to do."""


@dataclass
class Built:
    kernel: Path
    initrd: Path
    manifest: dict = field(default_factory=dict)


Progress = Callable[[str], None]


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=True)
    except FileNotFoundError:
        raise MediaError(
            f"{cmd[0]} not found; build media on a Debian/Ubuntu host or pass .deb files"
        ) from None
    except subprocess.CalledProcessError as exc:
        raise MediaError(f"{' '.join(cmd)} failed: {exc.stderr.strip()[-300:]}") from None
    return done.stdout


def resolve_kernel_package(name: str) -> str:
    """``linux-image-amd64`` → ``linux-image-6.1.0-56-amd64`` (what it depends on)."""
    if re.search(r"-\d+\.\d+", name):
        return name
    for line in _run(["apt-cache", "depends", name]).splitlines():
        match = re.match(r"\s*Depends:\s*(linux-image-\d\S*)", line)
        if match:
            return match.group(1)
    raise MediaError(
        f"cannot resolve {name!r} to a kernel package; run `apt-get update` "
        "or pass --kernel PATH.deb"
    )


def fetch_deb(spec: str, cache: Path) -> Path:
    """A ``.deb`` path as given, or the named package downloaded into ``cache`` (once)."""
    path = Path(spec)
    if spec.endswith(".deb"):
        if not path.is_file():
            raise MediaError(f"{spec}: no such .deb file")
        return path
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob(f"{spec}_*.deb"))
    if found:
        return found[-1]
    _run(["apt-get", "download", spec], cwd=cache)
    found = sorted(cache.glob(f"{spec}_*.deb"))
    if not found:
        raise MediaError(f"apt-get download {spec} produced no .deb in {cache}")
    return found[-1]


def extract_deb(deb: Path, into: Path) -> None:
    _run(["dpkg-deb", "-x", str(deb), str(into)])


def module_depends(ko: bytes) -> list[str]:
    """The ``depends=`` list from a module's .modinfo section."""
    match = re.search(rb"(?:^|\0)depends=([^\0]*)\0", ko)
    if not match or not match.group(1):
        return []
    return [name.decode() for name in match.group(1).split(b",")]


def _canonical(name: str) -> str:
    return name.replace("-", "_")


def resolve_modules(root: Path, wanted: list[str]) -> list[tuple[str, Path]]:
    """Modules in load order (dependencies first); names not built as modules are skipped."""
    index = {_canonical(p.name.removesuffix(".ko")): p for p in root.rglob("*.ko")}
    ordered: list[tuple[str, Path]] = []
    seen: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        name = _canonical(name)
        if name in seen or name not in index:
            return
        if name in chain:
            raise MediaError(f"module dependency cycle: {' -> '.join((*chain, name))}")
        for dep in module_depends(index[name].read_bytes()):
            visit(dep, (*chain, name))
        seen.add(name)
        ordered.append((name, index[name]))

    for name in wanted:
        visit(name, ())
    return ordered


def _agent_entries(extra: dict[str, bytes], known_dirs: set[str]) -> list[Entry]:
    files = {"init": AGENT_DIR / "init", "etc/udhcpc.script": AGENT_DIR / "udhcpc.script"}
    entries = []
    for name, path in files.items():
        if not path.is_file():
            raise MediaError(f"agent file missing: {path}")
        entries.append(Entry.file(name, path.read_bytes(), executable=True))
    for name, data in sorted(extra.items()):
        # the kernel's initramfs unpacker creates no parent directories: list them first
        parents = [str(p) for p in reversed(Path(name).parents) if str(p) != "."]
        for parent in parents:
            if parent not in known_dirs:
                known_dirs.add(parent)
                entries.append(Entry.directory(parent))
        entries.append(Entry.file(name, data, executable=True))
    return entries


def build_initramfs(
    busybox: bytes, modules: list[tuple[str, Path]], extra_files: dict[str, bytes] | None = None
) -> bytes:
    entries = [
        Entry.directory(d)
        for d in (
            "bin",
            "dev",
            "etc",
            "lib",
            "lib/modules",
            "mnt",
            "proc",
            "run",
            "sbin",
            "sys",
            "tmp",
            "usr",
            "usr/bin",
            "usr/sbin",
        )
    ]
    known_dirs = {entry.name for entry in entries}
    entries += [Entry.chardev("dev/console", 5, 1), Entry.chardev("dev/null", 1, 3, 0o666)]
    entries.append(Entry.file("bin/busybox", busybox, executable=True))
    entries.append(Entry.symlink("bin/sh", "busybox"))
    entries += _agent_entries(extra_files or {}, known_dirs)
    for name, path in modules:
        entries.append(Entry.file(f"lib/modules/{name}.ko", path.read_bytes()))
    order = "".join(f"{name}\n" for name, _ in modules).encode()
    entries.append(Entry.file("etc/modules.order", order))
    raw = io.BytesIO()
    write_newc(raw, entries)
    packed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=packed, mtime=0, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return packed.getvalue()


MULTICAST_RECEIVER_SOURCE = AGENT_DIR / "ndmc-recv.c"

# Network boot programs from Debian's ipxe package, for machines whose firmware is not iPXE:
# a BIOS PXE ROM chainloads undionly.kpxe over TFTP, UEFI firmware ipxe.efi or snponly.efi
# (over TFTP, or ipxe.efi by UEFI HTTP boot); each then runs /boot.ipxe.
IPXE_PROGRAMS = {
    "undionly.kpxe": "usr/lib/ipxe/undionly.kpxe",
    "snponly.efi": "usr/lib/ipxe/snponly.efi",
    "ipxe.efi": "boot/ipxe.efi",
}


def compile_multicast_receiver(into: Path) -> bytes | None:
    """The static C multicast receiver (docs/decisions/0005), or None without a C compiler."""
    if shutil.which("gcc") is None or not MULTICAST_RECEIVER_SOURCE.is_file():
        return None
    binary = into / "ndmc-recv"
    _run(["gcc", "-static", "-O2", "-s", "-o", str(binary), str(MULTICAST_RECEIVER_SOURCE)])
    return binary.read_bytes()


CAPTURE_STREAMER_SOURCE = AGENT_DIR / "ndcap.c"


def compile_capture_streamer(into: Path) -> bytes | None:
    """The static sparse disk streamer of network capture (docs/images.md), or None without
    gcc or libzstd's static library (Debian: libzstd-dev)."""
    if shutil.which("gcc") is None or not CAPTURE_STREAMER_SOURCE.is_file():
        return None
    binary = into / "ndcap"
    try:
        source = str(CAPTURE_STREAMER_SOURCE)
        _run(["gcc", "-static", "-O2", "-s", "-o", str(binary), source, "-lzstd"])
    except MediaError:
        return None
    return binary.read_bytes()


def bundle_ntfs3g(spec: str, cache: Path, tmp: Path, progress: Progress) -> list[Piece]:
    """ntfs-3g, its shared libraries and the loader, as files for the initramfs."""

    def fetch(name: str) -> Tree:
        progress(f"fetching {name}")
        deb = fetch_deb(name, cache)
        root = tmp / "ntfs" / deb.name.removesuffix(".deb")
        root.mkdir(parents=True)
        extract_deb(deb, root)
        depends = parse_depends(_run(["dpkg-deb", "-f", str(deb), "Depends"]))
        return Tree(root, deb.name, depends)

    try:
        return bundle(NTFS_PROGRAM, fetch(spec), fetch, Tree(Path("/"), "host"))
    except BundleError as exc:
        raise MediaError(f"{exc} (or pass --ntfs-3g none to build without NTFS support)") from None


def build_media(
    out: Path,
    cache: Path,
    kernel: str = DEFAULT_KERNEL_PACKAGE,
    busybox: str = "busybox-static",
    progress: Progress = lambda _msg: None,
    extra_files: dict[str, bytes] | None = None,
    ipxe: str | None = "ipxe",
    ntfs3g: str | None = NTFS_PROGRAM,
) -> Built:
    """Build ``out/vmlinuz``, ``out/initrd.gz``, the iPXE programs and ``out/manifest.json``."""
    if not kernel.endswith(".deb"):
        progress(f"resolving {kernel}")
        kernel = resolve_kernel_package(kernel)
    progress(f"fetching {kernel}")
    kernel_deb = fetch_deb(kernel, cache)
    progress(f"fetching {busybox}")
    busybox_deb = fetch_deb(busybox, cache)
    with tempfile.TemporaryDirectory(prefix="netdeploy-media-") as tmp:
        kroot, broot = Path(tmp) / "kernel", Path(tmp) / "busybox"
        progress(f"extracting {kernel_deb.name}")
        extract_deb(kernel_deb, kroot)
        extract_deb(busybox_deb, broot)
        vmlinuz = sorted((kroot / "boot").glob("vmlinuz-*"))
        if not vmlinuz:
            raise MediaError(f"{kernel_deb.name} holds no boot/vmlinuz-*: not a kernel package")
        bb = broot / "bin" / "busybox"
        if not bb.is_file():
            raise MediaError(f"{busybox_deb.name} holds no bin/busybox")
        ntfs = bundle_ntfs3g(ntfs3g, cache, Path(tmp), progress) if ntfs3g else []
        progress("resolving modules")
        wanted = WANTED_MODULES + (NTFS_MODULES if ntfs else [])
        modules = resolve_modules(kroot / "lib" / "modules", wanted)
        extra = dict(extra_files or {})
        extra.update({path: make() for path, make in STUB_FILES.items()})  # the hold on disk
        extra.update({piece.path: piece.data for piece in ntfs})
        receiver = compile_multicast_receiver(Path(tmp))
        if receiver is None:
            progress("multicast receiver left out: install gcc and libc6-dev to include it")
        else:
            extra["bin/ndmc-recv"] = receiver
        streamer = compile_capture_streamer(Path(tmp))
        if streamer is None:
            progress("capture streamer left out: install gcc and libzstd-dev to include it")
        else:
            extra["bin/ndcap"] = streamer
        progress(f"packing initramfs ({len(modules)} modules)")
        initrd = build_initramfs(bb.read_bytes(), modules, extra)
        out.mkdir(parents=True, exist_ok=True)
        kernel_out, initrd_out = out / "vmlinuz", out / "initrd.gz"
        tmp_kernel, tmp_initrd = out / ".vmlinuz.new", out / ".initrd.gz.new"
        shutil.copyfile(vmlinuz[-1], tmp_kernel)
        tmp_initrd.write_bytes(initrd)
        manifest = {
            "kernel_package": kernel_deb.name,
            "busybox_package": busybox_deb.name,
            "kernel_version": vmlinuz[-1].name.removeprefix("vmlinuz-"),
            "modules": [name for name, _ in modules],
            "multicast_receiver": receiver is not None,
            # network capture's sparse streamer (docs/images.md); None: left out
            "capture_streamer": "bin/ndcap" if streamer is not None else None,
            # what was copied for ntfs-3g and from where (decision 0007); None: left out
            "ntfs-3g": {piece.path: piece.describe() for piece in ntfs} or None,
            "vmlinuz": {
                "size": tmp_kernel.stat().st_size,
                "sha256": hashlib.sha256(tmp_kernel.read_bytes()).hexdigest(),
            },
            "initrd.gz": {"size": len(initrd), "sha256": hashlib.sha256(initrd).hexdigest()},
        }
        tmp_kernel.replace(kernel_out)  # atomic: a booting machine never gets half a file
        tmp_initrd.replace(initrd_out)
        programs: dict[str, dict] = {}
        if ipxe:
            progress(f"fetching {ipxe}")
            iroot = Path(tmp) / "ipxe"
            extract_deb(fetch_deb(ipxe, cache), iroot)
            for name, inside in IPXE_PROGRAMS.items():
                data = (iroot / inside).read_bytes()
                (out / f".{name}.new").write_bytes(data)
                (out / f".{name}.new").replace(out / name)
                programs[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        manifest["ipxe"] = programs
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    progress("done")
    return Built(kernel_out, initrd_out, manifest)


def media_status(bootfiles: Path, needs_ntfs: bool = False) -> str | None:
    """None when startup media is present (with ntfs-3g if ``needs_ntfs``), else what to do."""
    media = bootfiles / "media"
    missing = [n for n in ("vmlinuz", "initrd.gz") if not (media / n).is_file()]
    if missing:
        return (
            f"startup media missing ({', '.join(missing)} in {media}); machines cannot be imaged "
            "until you run `netdeploy media build`"
        )
    if needs_ntfs:
        try:
            has_ntfs = bool(json.loads((media / "manifest.json").read_text()).get("ntfs-3g"))
        except (OSError, ValueError, AttributeError):
            has_ntfs = False
        if not has_ntfs:
            return (
                f'inject entries use fs = "ntfs" but the startup media in {media} has no '
                "ntfs-3g; run `netdeploy media build` (without --ntfs-3g none)"
            )
    return None
