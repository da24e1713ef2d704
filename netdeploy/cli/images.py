"""`netdeploy image add|list|verify|rm`: thin argparse handlers over :mod:`.actions`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from netdeploy.cli.capture import add_capture_options, run_capture
from netdeploy.cli.common import CommandError, add_config_options, config_from_args
from netdeploy.config import Config
from netdeploy.events import EventBus
from netdeploy.images import actions, catalog, show_text
from netdeploy.images.actions import AddRequest, CatalogError, ProgressFactory
from netdeploy.rollout.inventory import import_config
from netdeploy.store import open_store
from netdeploy.store.models import Image

T = TypeVar("T")


def add_options(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="image_command", metavar="ACTION", required=True)
    add = sub.add_parser(
        "add",
        help="hash an image file and register it under a name declared in the config",
        description="Place PATH at [images.NAME].file (hard link, copy, or zstd), hash it with "
        "a progress bar and record it; the image is served from then on.",
    )
    add.add_argument("name", metavar="NAME", help="an image declared as [images.NAME]")
    add.add_argument("path", metavar="PATH", type=Path, help="the captured disk image")
    add.add_argument(
        "--hardware",
        action="append",
        default=[],
        metavar="PROFILE",
        help="hardware profile the capture was verified on (repeatable)",
    )
    add.add_argument("--compress", choices=["zstd"], help="store and serve it zstd-compressed")
    add.add_argument(
        "--sysprep",
        choices=actions.SYSPREP_MODES,
        help="how sysprep was run on the master before capture",
    )
    add.add_argument(
        "--without-cluster-service",
        action="store_true",
        help="confirm the master was captured before the cluster service was installed",
    )
    add.add_argument(
        "--no-shared-storage",
        action="store_true",
        help="confirm the master was not attached to the shared storage when captured",
    )
    add.add_argument(
        "--force",
        nargs="?",
        const="",
        default=None,
        metavar="REASON",
        help="replace the image even while nodes are being imaged with it; with a REASON, "
        "also add it although preflight refuses it (recorded with who and why)",
    )
    add.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    listing = sub.add_parser("list", help="list images and their catalog status")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    verify = sub.add_parser("verify", help="re-hash images; exit 1 if any does not match")
    verify.add_argument("names", nargs="*", metavar="NAME", help="default: every added image")
    verify.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    show = sub.add_parser("show", help="print an image's catalog entry and preflight facts")
    show.add_argument("name", metavar="NAME")
    show.add_argument("--json", action="store_true", help="print JSON instead of text")
    rm = sub.add_parser("rm", help="stop serving an image (refused while nodes are imaged)")
    rm.add_argument("name", metavar="NAME")
    rm.add_argument(
        "--delete-file", action="store_true", help="also delete its file from the images dir"
    )
    for p in (add, listing, verify, show, rm):
        add_config_options(p)
    add_capture_options(sub)


@contextlib.contextmanager
def progress_bars(quiet: bool) -> Iterator[ProgressFactory]:
    """Rich progress bars on stderr (size, rate, ETA), one per phase of the work."""
    if quiet:
        yield actions.no_progress
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    ) as bars:

        def factory(description: str, total: int) -> Callable[[int], None]:
            task = bars.add_task(description, total=total)
            return lambda n: bars.advance(task, n)  # thread-safe: rich locks its tasks

        yield factory


async def _with_store(cfg: Config, work: Callable[[async_sessionmaker], Awaitable[T]]) -> T:

    engine, sessions = await open_store(cfg.database_url)
    try:
        await import_config(sessions, cfg)  # rows for every declared image exist
        return await work(sessions)
    finally:
        await engine.dispose()


def _mib(n: int | None) -> str:
    return "" if n is None else f"{n / 2**20:,.1f} MiB"


def cmd_add(cfg: Config, args: argparse.Namespace) -> int:
    req = AddRequest(
        name=args.name,
        source=args.path,
        hardware=args.hardware,
        compress=args.compress,
        sysprep=args.sysprep,
        without_cluster_service=args.without_cluster_service,
        no_shared_storage=args.no_shared_storage,
        force=args.force is not None,
        force_reason=args.force or None,
        actor=_actor(),
    )
    actions.declared(cfg, req.name)  # fail fast, before the store is opened
    actions.check_source(req.source)
    with progress_bars(args.quiet) as bars:
        row, _event = asyncio.run(_with_store(cfg, lambda s: actions.add_image(cfg, s, req, bars)))
    facts = row.facts or {}
    configured = cfg.images[row.name].hardware
    print(
        f"added image {row.name!r}: {_mib(row.size)} {row.format}, sha256 {row.sha256}, "
        f"{facts.get('placed')} at {row.path}; served as /images/{row.name}"
    )
    for line in show_text.preflight_lines(facts.get("preflight") or {}):
        print(line)
    if req.hardware and configured and set(req.hardware) != set(configured):
        print(
            f"note: [images.{row.name}].hardware is {', '.join(configured)} but the capture was "
            f"verified on {', '.join(req.hardware)}"
        )
    return 0


async def _list(cfg: Config, sessions: async_sessionmaker) -> list[dict[str, Any]]:
    async with sessions() as session:
        rows = [r for r in (await session.scalars(select(Image))).all() if r.name in cfg.images]
    bus = EventBus()  # nobody listens in the CLI; the event rows are the record
    for row in rows:
        if row.status != catalog.OK:
            continue
        try:
            (await asyncio.to_thread(catalog.open_checked, row)).close()
        except catalog.NotServable as problem:  # same rule as serving: a changed file is bad
            await catalog.mark_not_servable(sessions, bus, problem, row)
            row.status, row.status_detail = problem.status, problem.reason
    return [catalog.image_json(r) for r in sorted(rows, key=lambda r: r.name)]


def cmd_list(cfg: Config, args: argparse.Namespace) -> int:
    images = asyncio.run(_with_store(cfg, lambda s: _list(cfg, s)))
    if args.json:
        print(json.dumps(images, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in ("name", "format", "size", "status", "sha256", "hardware", "added"):
        table.add_column(column, no_wrap=True)
    table.add_column("detail")
    for i in images:
        table.add_row(
            i["name"],
            i["format"],
            _mib(i["size"]),
            i["status"],
            (i["sha256"] or "")[:16],
            ", ".join(i["hardware"]),
            (i["added_at"] or "")[:19],
            i["status_detail"],
        )
    Console(width=max(Console().width, 140)).print(table)
    return 0


async def _verify(
    cfg: Config, sessions: async_sessionmaker, names: list[str], bars: ProgressFactory
) -> list[actions.Verdict]:
    if not names:
        async with sessions() as session:
            rows = (await session.scalars(select(Image).where(Image.sha256.is_not(None)))).all()
        names = sorted(r.name for r in rows if r.name in cfg.images)
        if not names:
            raise CatalogError("no image has been added yet; netdeploy image add NAME PATH")
    return [await actions.verify_image(cfg, sessions, n, bars) for n in names]


def cmd_verify(cfg: Config, args: argparse.Namespace) -> int:
    with progress_bars(args.quiet) as bars:
        verdicts = asyncio.run(_with_store(cfg, lambda s: _verify(cfg, s, args.names, bars)))
    for v in verdicts:
        out = sys.stdout if v.status == catalog.OK else sys.stderr
        print(f"{v.name}: {v.status}: {v.message}", file=out)
    return 0 if all(v.status == catalog.OK for v in verdicts) else 1


def cmd_rm(cfg: Config, args: argparse.Namespace) -> int:
    message = asyncio.run(
        _with_store(
            cfg,
            lambda s: actions.remove_image(cfg, s, args.name, delete_file=args.delete_file),
        )
    )
    print(message)
    return 0


def _actor() -> str:
    try:
        return f"{getpass.getuser()}@cli"
    except (KeyError, OSError):
        return "cli"


async def _show(cfg: Config, sessions: async_sessionmaker, name: str) -> dict[str, Any]:
    actions.declared(cfg, name)
    listed = {i["name"]: i for i in await _list(cfg, sessions)}
    if name not in listed:
        raise CatalogError(f"image {name!r} is not in the store; run netdeploy check")
    return listed[name]


def cmd_show(cfg: Config, args: argparse.Namespace) -> int:
    image = asyncio.run(_with_store(cfg, lambda s: _show(cfg, s, args.name)))
    if args.json:
        print(json.dumps(image, indent=2))
        return 0
    for line in show_text.image_lines(image):
        print(line)
    return 0


HANDLERS = {
    "add": cmd_add,
    "list": cmd_list,
    "verify": cmd_verify,
    "show": cmd_show,
    "rm": cmd_rm,
}


def run(args: argparse.Namespace) -> int:
    if args.image_command in ("capture", "captures"):  # through the running server's API
        return run_capture(args)
    cfg = config_from_args(args)
    try:
        return HANDLERS[args.image_command](cfg, args)
    except CatalogError as exc:
        raise CommandError(str(exc)) from None
