"""The `netdeploy` command: parse arguments, call the domain, one clear line per error.

Each command group has its module beside this one (admin, images, media, receive); this one
holds serve, check, nodes and render and assembles the parser."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import netdeploy
from netdeploy.addresses import choose_ports
from netdeploy.answers.check import find_node, render_checked, server_url
from netdeploy.answers.render import PLACEHOLDER_TOKEN, TemplateProblem
from netdeploy.answers.validate import InvalidAnswerFile
from netdeploy.boot.check import check_config
from netdeploy.boot.hardware import verdict
from netdeploy.cli import admin, images, inventory, media, receive
from netdeploy.cli import nodes as node_list
from netdeploy.cli.common import CommandError, add_config_options, config_from_args
from netdeploy.config import AUTO_HARDWARE, Config, ConfigError
from netdeploy.context import ServiceError
from netdeploy.media.build import media_status
from netdeploy.store import StoreError
from netdeploy.tftp import native

# ---------------------------------------------------------------- serve


def cmd_serve(args: argparse.Namespace) -> int:
    from netdeploy.server import serve  # the composition root: only `serve` needs it

    cfg = config_from_args(args)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    ports = choose_ports(cfg)
    if ports.note:
        print(f"netdeploy: {ports.note}", file=sys.stderr)
    if status := media_status(cfg.server.bootfiles_dir, needs_ntfs=cfg.injects_into("ntfs")):
        print(f"netdeploy: {status}", file=sys.stderr)
    try:
        asyncio.run(serve(cfg, ports))
    except ServiceError as exc:
        raise CommandError(str(exc)) from None
    return 0


# ---------------------------------------------------------------- check


def reported_facts(args: argparse.Namespace, cfg: Config) -> dict[str, dict]:
    """The hardware facts machines reported: from the running server, else read from the
    store as it is (nothing written); {} when neither has any."""
    rows = node_list.from_server(args, facts=True)
    if rows is not None:
        return {n["mac"]: n["facts"] for n in rows if n.get("facts")}
    found = asyncio.run(node_list.stored_facts(cfg))
    return {mac: dict(row.facts) for mac, row in found.items()}


def _check(args: argparse.Namespace) -> dict[str, Any]:
    """Every problem of the config in one pass: fields and references (``load_config``), then
    paths, boot templates and every answer file of every node; and what is merely missing."""
    try:
        cfg = config_from_args(args)
    except ConfigError as exc:
        return {
            "ok": False,
            "config": exc.problems[0].file if exc.problems else None,
            "problems": [str(p) for p in exc.problems],
            "notes": [],
        }
    problems = [f"{cfg.source}: {line}" for line in check_config(cfg, reported_facts(args, cfg))]
    notes = []
    if status := media_status(cfg.server.bootfiles_dir, needs_ntfs=cfg.injects_into("ntfs")):
        notes.append(status)
    if plane := native.missing_note(cfg.tftp.enabled and cfg.tftp.native):
        notes.append(plane)
    for name in (n for n in cfg.images if not cfg.image_path(n).exists()):
        notes.append(
            f"image {name!r} has no file yet at {cfg.image_path(name)}; "
            f"capture it, then `netdeploy image add {name} PATH`"
        )
    return {
        "ok": not problems,
        "config": str(cfg.source),
        "problems": problems,
        "notes": notes,
        "nodes": len(cfg.nodes),
        "clusters": len(cfg.clusters),
        "images": len(cfg.images),
        "hardware_profiles": len(cfg.hardware),
    }


def cmd_check(args: argparse.Namespace) -> int:
    result = _check(args)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0 if result["ok"] else 1
    for line in result["problems"]:
        print(line, file=sys.stderr)
    if not result["ok"]:
        return 1
    print(
        f"OK: {result['config']}: {result['nodes']} nodes, {result['clusters']} clusters, "
        f"{result['images']} images, {result['hardware_profiles']} hardware profiles"
    )
    for note in result["notes"]:
        print(f"note: {note}")
    return 0


# ---------------------------------------------------------------- nodes


def cmd_nodes(args: argparse.Namespace) -> int:
    nodes = node_list.nodes(args, config_from_args(args), facts=args.facts)
    if args.json:
        node_list.print_json(nodes)
        return 0
    if args.facts:
        for n in nodes:
            print(f"{n['mac']}  {n['hostname'] or '-'}  {n['state']}")
            for line in node_list.facts_rows(n):
                print(f"    {line}")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in ("MAC", "hostname", "cluster", "state", "progress", "since"):
        table.add_column(column, no_wrap=True)
    table.add_column("message")
    for n in nodes:
        progress = f"{n['progress']:.0f}%" if n["progress"] is not None else ""
        table.add_row(
            n["mac"],
            n["hostname"] or "",
            n["cluster"] or "",
            n["state"],
            progress,
            (n["state_since"] or "")[:19],
            n["message"],
        )
    Console(width=max(Console().width, 120)).print(table)
    return 0


# ---------------------------------------------------------------- render


def cmd_render(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    node = find_node(cfg, args.node)
    if node is None:
        raise CommandError(f"no node {args.node!r} in {cfg.source}; give a MAC or a host name")
    if node.hardware == AUTO_HARDWARE:  # as served: with the profile its facts matched
        stored = asyncio.run(node_list.stored_facts(cfg)).get(node.mac)
        profile = verdict(cfg, node, dict(stored.facts) if stored else None).profile
        node = node.model_copy(update={"hardware": profile})
    files = cfg.answer_files_for(node)
    if args.file not in files:
        listed = ", ".join(files) or "none"
        raise CommandError(f"{args.file!r} is not a file of {node.hostname}; its files: {listed}")
    try:
        rendered = render_checked(
            cfg, node, args.file, token=args.token or PLACEHOLDER_TOKEN, url=server_url(cfg)
        )
    except TemplateProblem as exc:
        raise CommandError(str(exc)) from None
    except InvalidAnswerFile as exc:
        raise CommandError(f"{node.hostname}: refused: {exc}") from None
    sys.stdout.write(rendered.text)
    return 0


# ---------------------------------------------------------------- main


def _json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


# Each entry: (name, help, handler, function that adds the command's own options).
Command = tuple[
    str, str, Callable[[argparse.Namespace], int], Callable[[argparse.ArgumentParser], None]
]
COMMANDS: list[Command] = [
    (
        "serve",
        "run the TFTP and HTTP boot server",
        cmd_serve,
        lambda p: (
            add_config_options(p, server=True),
            p.add_argument("-v", "--verbose", action="store_true"),
        ),
    ),
    (
        "check",
        "validate the config, templates and reported hardware; exit 1 with one line per problem",
        cmd_check,
        lambda p: (admin.client_options(p), _json_option(p)),
    ),
    (
        "render",
        "print a node's answer file exactly as it is served (validated)",
        cmd_render,
        lambda p: (
            add_config_options(p),
            p.add_argument(
                "node", metavar="MAC", help="the node: MAC in any notation, or host name"
            ),
            p.add_argument("file", metavar="FILE", help="answer file name, e.g. sysprep.inf"),
            p.add_argument(
                "--token", default=None, help="token to render in place of the one issued at boot"
            ),
        ),
    ),
    (
        "nodes",
        "list nodes and their rollout states (asks the running server; never writes the store)",
        cmd_nodes,
        lambda p: (
            admin.client_options(p),
            _json_option(p),
            p.add_argument(
                "--facts",
                action="store_true",
                help="show each machine's reported hardware (SMBIOS, storage PCI IDs, disks, NICs)",
            ),
        ),
    ),
    (
        "receive",
        "receive an image from a multicast session into a file or block device",
        receive.cmd_receive,
        receive.add_receive_options,
    ),
    (
        "image",
        "add, list, verify or remove disk images (image add NAME PATH ...)",
        images.run,
        images.add_options,
    ),
    (
        "media",
        "build the startup media (kernel + initramfs with the imaging agent)",
        media.cmd_media,
        media.add_options,
    ),
    # rollout admin commands (clusters, release, retry, fail, reset) call the running
    # server's admin API
    *admin.COMMANDS,
    # inventory changes (adopt, reload) are made by the running server
    *inventory.COMMANDS,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netdeploy",
        description="Network boot and image distribution for staged cluster rollouts.",
    )
    parser.add_argument("--version", action="version", version=f"netdeploy {netdeploy.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text, handler, add_options in COMMANDS:
        command = sub.add_parser(name, help=help_text, description=help_text)
        add_options(command)
        command.set_defaults(handler=handler)
    return parser


def _say(line: str) -> None:
    """One line on stderr, even when stderr is the pipe that just closed."""
    with contextlib.suppress(OSError):
        print(line, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run one command. The one place errors become exit codes: every failure is one line on
    stderr, never a traceback (``NETDEPLOY_DEBUG=1`` shows the traceback of an unexpected one)."""
    args = build_parser().parse_args(argv)
    try:
        status = args.handler(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return status
    except ConfigError as exc:
        for problem in exc.problems:
            _say(str(problem))
        return 1
    except (CommandError, StoreError) as exc:
        for line in getattr(exc, "problems", []):
            _say(line)
        _say(f"netdeploy: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `netdeploy clusters --json | head -c1`: the reader is gone; stop quietly, and keep
        # Python from failing again when it flushes stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        _say(f"netdeploy {args.command}: output closed early (broken pipe)")
        return 141  # 128 + SIGPIPE, as a shell reports a command killed by it
    except Exception as exc:
        if os.environ.get("NETDEPLOY_DEBUG"):
            raise
        _say(
            f"netdeploy {args.command}: unexpected {type(exc).__name__}: {exc} "
            "(NETDEPLOY_DEBUG=1 shows where; please report it)"
        )
        return 1
