"""The `netdeploy` command: parse arguments, call the domain, one clear line per error."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import netdeploy
from netdeploy.config import DEFAULT_CONFIG, Config, ConfigError, load_config
from netdeploy.store import StoreError


class CommandError(Exception):
    """A command failed in a way the user can fix; the message says how. Exit status 1."""


def add_config_options(parser: argparse.ArgumentParser, *, server: bool = False) -> None:
    parser.add_argument(
        "--config",
        "-c",
        type=Path,
        default=None,
        metavar="PATH",
        help=f"config file (default: {DEFAULT_CONFIG})",
    )
    parser.add_argument(
        "--db",
        metavar="URL",
        default=None,
        help="database URL (default: sqlite in the state dir), "
        "e.g. postgresql://user@host/netdeploy",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where the database, admin token and images live",
    )
    if server:
        parser.add_argument(
            "--bind",
            metavar="ADDR",
            default=None,
            help="address to listen on (default 0.0.0.0; '::' for IPv6)",
        )
        parser.add_argument(
            "--http-port",
            type=int,
            metavar="N",
            default=None,
            help="HTTP port (default 80 as root, else 8080)",
        )
        parser.add_argument(
            "--tftp-port",
            type=int,
            metavar="N",
            default=None,
            help="TFTP port (default 69 as root, else 6969)",
        )
        parser.add_argument(
            "--public-url",
            metavar="URL",
            default=None,
            help="base URL booting machines use to reach this server",
        )


def config_from_args(args: argparse.Namespace) -> Config:
    overrides = {
        "database": getattr(args, "db", None),
        "state_dir": args.state_dir.resolve() if getattr(args, "state_dir", None) else None,
        "bind": getattr(args, "bind", None),
        "http_port": getattr(args, "http_port", None),
        "tftp_port": getattr(args, "tftp_port", None),
        "public_url": getattr(args, "public_url", None),
    }
    return load_config(args.config, **overrides)


# ---------------------------------------------------------------- serve


def cmd_serve(args: argparse.Namespace) -> int:
    from netdeploy.server import ServiceError, choose_ports, serve

    cfg = config_from_args(args)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    ports = choose_ports(cfg)
    if ports.note:
        print(f"netdeploy: {ports.note}", file=sys.stderr)
    from netdeploy.media.build import media_status

    if media := media_status(cfg.server.bootfiles_dir, needs_ntfs=cfg.injects_into("ntfs")):
        print(f"netdeploy: {media}", file=sys.stderr)
    try:
        asyncio.run(serve(cfg, ports))
    except ServiceError as exc:
        raise CommandError(str(exc)) from None
    return 0


# ---------------------------------------------------------------- check

# Extra checks run by `netdeploy check`: each takes the config and returns problem lines.
CHECKS: list[Callable[[Config], list[str]]] = []


def _check_paths(cfg: Config) -> list[str]:
    problems = []
    if not cfg.server.bootfiles_dir.is_dir():
        problems.append(f"server.bootfiles_dir: {cfg.server.bootfiles_dir} is not a directory")
    for name in sorted({f for n in cfg.nodes for f in cfg.answer_files_for(n)}):
        if not (cfg.server.templates_dir / name).is_file():
            problems.append(f"answer template {name!r} not found in {cfg.server.templates_dir}")
    return problems


CHECKS.append(_check_paths)


def _check_templates(cfg: Config) -> list[str]:
    from netdeploy.answers.check import check_answer_files, check_boot_templates

    return check_boot_templates(cfg) + check_answer_files(cfg)


CHECKS.append(_check_templates)


def cmd_check(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    problems = [line for check in CHECKS for line in check(cfg)]
    if problems:
        for line in problems:
            print(f"{cfg.source}: {line}", file=sys.stderr)
        return 1
    missing = [n for n in cfg.images if not cfg.image_path(n).exists()]
    print(
        f"OK: {cfg.source}: {len(cfg.nodes)} nodes, {len(cfg.clusters)} clusters, "
        f"{len(cfg.images)} images, {len(cfg.hardware)} hardware profiles"
    )
    from netdeploy.media.build import media_status

    if media := media_status(cfg.server.bootfiles_dir, needs_ntfs=cfg.injects_into("ntfs")):
        print(f"note: {media}")
    for name in missing:
        print(
            f"note: image {name!r} has no file yet at {cfg.image_path(name)}; "
            f"capture it, then `netdeploy image add {name} PATH`"
        )
    return 0


# ---------------------------------------------------------------- nodes


async def _nodes(cfg: Config) -> list[dict]:
    from sqlalchemy import select

    from netdeploy.http.api import node_json
    from netdeploy.store import Node, import_config, open_store

    engine, sessions = await open_store(cfg.database_url)
    try:
        await import_config(sessions, cfg)
        async with sessions() as session:
            rows = (await session.scalars(select(Node).order_by(Node.cluster, Node.hostname))).all()
        return [node_json(n) for n in rows]
    finally:
        await engine.dispose()


def cmd_nodes(args: argparse.Namespace) -> int:
    nodes = asyncio.run(_nodes(config_from_args(args)))
    if args.json:
        print(json.dumps(nodes, indent=2))
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
    from netdeploy.answers.check import find_node, render_checked, server_url
    from netdeploy.answers.render import PLACEHOLDER_TOKEN, TemplateProblem
    from netdeploy.answers.validate import InvalidAnswerFile

    cfg = config_from_args(args)
    node = find_node(cfg, args.node)
    if node is None:
        raise CommandError(f"no node {args.node!r} in {cfg.source}; give a MAC or a host name")
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


# ---------------------------------------------------------------- receive (multicast)


def _receive(args: argparse.Namespace) -> int:
    from netdeploy.multicast.cli import cmd_receive

    return cmd_receive(args)


def _receive_options(parser: argparse.ArgumentParser) -> None:
    from netdeploy.multicast.cli import add_receive_options

    add_receive_options(parser)


# ---------------------------------------------------------------- image


def cmd_image(args: argparse.Namespace) -> int:
    from netdeploy.images.commands import run

    return run(args)


def add_image_options(parser: argparse.ArgumentParser) -> None:
    from netdeploy.images.commands import add_options

    add_options(parser)


# ---------------------------------------------------------------- main

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
        "validate the config and templates; exit 1 with one line per problem",
        cmd_check,
        add_config_options,
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
        "list nodes and their rollout states",
        cmd_nodes,
        lambda p: (
            add_config_options(p),
            p.add_argument("--json", action="store_true", help="print JSON instead of a table"),
        ),
    ),
    (
        "receive",
        "receive an image from a multicast session into a file or block device",
        _receive,
        _receive_options,
    ),
    (
        "image",
        "add, list, verify or remove disk images (image add NAME PATH ...)",
        cmd_image,
        add_image_options,
    ),
]


def _media_options(parser: argparse.ArgumentParser) -> None:
    from netdeploy.media.cli import add_options

    add_options(parser)


def _media(args: argparse.Namespace) -> int:
    from netdeploy.media.cli import cmd_media

    return cmd_media(args)


COMMANDS.append(
    (
        "media",
        "build the startup media (kernel + initramfs with the imaging agent)",
        _media,
        _media_options,
    )
)
# rollout admin commands (clusters, release, retry, fail, reset) call the running server's
# admin API; they live beside the routes they call
from netdeploy.http import admin_cli  # noqa: E402

COMMANDS.extend(admin_cli.COMMANDS)


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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    except (CommandError, StoreError) as exc:
        print(f"netdeploy: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
