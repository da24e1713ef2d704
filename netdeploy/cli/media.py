"""``netdeploy media build``."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from netdeploy.cli.common import CommandError, add_config_options, config_from_args
from netdeploy.media.build import DEFAULT_KERNEL_PACKAGE, MediaError, build_media


def add_options(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="media_command", metavar="ACTION", required=True)
    build = sub.add_parser(
        "build",
        help="build kernel + initramfs from Debian packages",
        description="Build the startup media (kernel + busybox initramfs "
        "with the imaging agent) into <bootfiles>/media.",
    )
    add_config_options(build)
    build.add_argument(
        "--kernel",
        default=DEFAULT_KERNEL_PACKAGE,
        metavar="PKG|PATH.deb",
        help=f"kernel package name or .deb (default {DEFAULT_KERNEL_PACKAGE})",
    )
    build.add_argument(
        "--busybox",
        default="busybox-static",
        metavar="PKG|PATH.deb",
        help="busybox package name or .deb (default busybox-static)",
    )
    build.add_argument(
        "--ipxe",
        default="ipxe",
        metavar="PKG|PATH.deb",
        help="package with undionly.kpxe, snponly.efi and ipxe.efi for firmware that is not "
        "iPXE (default ipxe)",
    )
    build.add_argument(
        "--ntfs-3g",
        dest="ntfs3g",
        default="ntfs-3g",
        metavar="PKG|PATH.deb|none",
        help="package with the ntfs-3g program, for answer files on NTFS partitions; its "
        "libraries come from the packages it depends on and the host's libc (default ntfs-3g)",
    )
    build.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="output directory (default <bootfiles_dir>/media)",
    )


def cmd_media(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    out = args.out or cfg.server.bootfiles_dir / "media"
    console = Console(stderr=True)
    try:
        with console.status("building startup media") as status:
            built = build_media(
                out,
                cfg.server.state_dir / "media-cache",
                kernel=args.kernel,
                busybox=args.busybox,
                ipxe=args.ipxe,
                ntfs3g=None if args.ntfs3g == "none" else args.ntfs3g,
                progress=lambda msg: (status.update(msg), console.log(msg)),
            )
    except MediaError as exc:
        raise CommandError(str(exc)) from None
    m = built.manifest
    print(
        f"built {built.kernel} ({m['vmlinuz']['size']} bytes) and {built.initrd} "
        f"({m['initrd.gz']['size']} bytes, {len(m['modules'])} modules, "
        f"{'ntfs-3g' if m['ntfs-3g'] else 'no ntfs-3g'}, kernel {m['kernel_version']}); "
        f"initrd sha256 {m['initrd.gz']['sha256']}"
    )
    return 0
