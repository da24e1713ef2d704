"""`netdeploy image add|list|verify|rm`: thin argparse handlers over :mod:`.actions`.

The running server owns the store (DESIGN): while one runs, `list` asks its API and `add`,
`verify` and `rm` ask it to do the work (``/api/admin/images/...``). Without a server, `list`
reads the store as it is (no config import, nothing written) and the writing commands work on
the store themselves, holding its lock, so they refuse while another process holds it.
"""

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

from netdeploy.cli.admin import ask_server, client_options
from netdeploy.cli.capture import add_capture_options, run_capture
from netdeploy.cli.common import CommandError, config_from_args
from netdeploy.cli.nodes import read_stored
from netdeploy.config import Config
from netdeploy.images import actions, catalog, show_text
from netdeploy.images.actions import AddRequest, CatalogError, ProgressFactory
from netdeploy.rollout.inventory import import_config
from netdeploy.store import hold_store, open_store
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
        client_options(p)
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


async def _open_and(cfg: Config, work: Callable[[async_sessionmaker], Awaitable[T]]) -> T:
    engine, sessions = await open_store(cfg.database_url)
    try:
        await import_config(sessions, cfg)  # rows for every declared image exist
        return await work(sessions)
    finally:
        await engine.dispose()


def _with_store(cfg: Config, work: Callable[[async_sessionmaker], Awaitable[T]]) -> T:
    """Run ``work`` on the store without a server: only while no other process holds it."""
    with hold_store(cfg.server.state_dir, exclusive=True):
        return asyncio.run(_open_and(cfg, work))


def _long(args: argparse.Namespace) -> argparse.Namespace:
    """Hashing a large image on the server takes a while: wait for it (a day at most)."""
    return argparse.Namespace(**{**vars(args), "timeout": max(args.timeout, 86400.0)})


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
    body = {
        "path": str(req.source.resolve()),
        "hardware": req.hardware,
        "compress": req.compress,
        "sysprep": req.sysprep,
        "without_cluster_service": req.without_cluster_service,
        "no_shared_storage": req.no_shared_storage,
        "force": req.force,
        "force_reason": req.force_reason,
        "actor": req.actor,
    }
    image = ask_server(_long(args), "POST", f"/api/admin/images/{req.name}/add", body)
    if image is None:
        with progress_bars(args.quiet) as bars:
            row, _event = _with_store(cfg, lambda s: actions.add_image(cfg, s, req, bars))
        image = catalog.image_json(row)
    facts = image["facts"] or {}
    configured = cfg.images[image["name"]].hardware
    print(
        f"added image {image['name']!r}: {_mib(image['size'])} {image['format']}, sha256 "
        f"{image['sha256']}, {facts.get('placed')} at {image['path']}; served as "
        f"/images/{image['name']}"
    )
    for line in show_text.preflight_lines(facts.get("preflight") or {}):
        print(line)
    if req.hardware and configured and set(req.hardware) != set(configured):
        print(
            f"note: [images.{image['name']}].hardware is {', '.join(configured)} but the "
            f"capture was verified on {', '.join(req.hardware)}"
        )
    return 0


async def _list(cfg: Config) -> list[dict[str, Any]]:
    """The catalog as the store holds it, read only: the declared images, each file checked
    by the same rule as serving (a problem is shown, not recorded: only the server writes)."""
    stored = {r.name: Image(**r._mapping) for r in await read_stored(cfg, select(Image))}
    rows = []
    for name, image in cfg.images.items():
        row = stored.get(name) or Image(
            name=name,
            path=str(cfg.image_path(name)),
            format=image.format,
            description=image.description,
            hardware=list(image.hardware),
            status="unhashed",
            status_detail="not in the store yet: `netdeploy serve` imports the config",
            facts={},
        )
        if row.status == catalog.OK:
            try:
                (await asyncio.to_thread(catalog.open_checked, row)).close()
            except catalog.NotServable as problem:  # same rule as serving: a changed file
                row.status, row.status_detail = problem.status, problem.reason
        rows.append(row)
    return [catalog.image_json(r) for r in sorted(rows, key=lambda r: r.name)]


def cmd_list(cfg: Config, args: argparse.Namespace) -> int:
    answer = ask_server(args, "GET", "/api/images")
    images = answer["images"] if answer is not None else asyncio.run(_list(cfg))
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


def _verify_on_server(args: argparse.Namespace) -> list[actions.Verdict] | None:
    names = args.names
    if not names:
        listed = ask_server(args, "GET", "/api/images")
        if listed is None:
            return None
        names = sorted(i["name"] for i in listed["images"] if i["sha256"])
        if not names:
            raise CommandError("no image has been added yet; netdeploy image add NAME PATH")
    verdicts = []
    for name in names:
        answer = ask_server(_long(args), "POST", f"/api/admin/images/{name}/verify", {})
        if answer is None:
            return None
        verdicts.append(actions.Verdict(answer["name"], answer["status"], answer["message"]))
    return verdicts


def cmd_verify(cfg: Config, args: argparse.Namespace) -> int:
    verdicts = _verify_on_server(args)
    if verdicts is None:
        with progress_bars(args.quiet) as bars:
            verdicts = _with_store(cfg, lambda s: _verify(cfg, s, args.names, bars))
    for v in verdicts:
        out = sys.stdout if v.status == catalog.OK else sys.stderr
        print(f"{v.name}: {v.status}: {v.message}", file=out)
    return 0 if all(v.status == catalog.OK for v in verdicts) else 1


def cmd_rm(cfg: Config, args: argparse.Namespace) -> int:
    path = f"/api/admin/images/{args.name}/rm"
    answer = ask_server(args, "POST", path, {"delete_file": args.delete_file})
    if answer is not None:
        print(answer["message"])
        return 0
    message = _with_store(
        cfg, lambda s: actions.remove_image(cfg, s, args.name, delete_file=args.delete_file)
    )
    print(message)
    return 0


def _actor() -> str:
    try:
        return f"{getpass.getuser()}@cli"
    except (KeyError, OSError):
        return "cli"


def cmd_show(cfg: Config, args: argparse.Namespace) -> int:
    actions.declared(cfg, args.name)
    answer = ask_server(args, "GET", "/api/images")  # read only, as `image list`
    images = answer["images"] if answer is not None else asyncio.run(_list(cfg))
    image = next((i for i in images if i["name"] == args.name), None)
    if image is None:
        raise CatalogError(f"image {args.name!r} is not in the catalog; run netdeploy check")
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
