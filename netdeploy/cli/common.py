"""What every command shares: its one error type and the config options. A leaf: it imports
the config and nothing of the commands, so each command module can import it."""

from __future__ import annotations

import argparse
from pathlib import Path

from netdeploy.config import DEFAULT_CONFIG, Config, load_config


class CommandError(Exception):
    """A command failed in a way the user can fix; the message says how. Exit status 1.
    ``problems`` (the server's, e.g. a config that does not validate) are printed first,
    one line each."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or []


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
