"""What every command shares: its one error type, the config options and where the config is
found. A leaf: it imports the config and nothing of the commands, so each command module can
import it.

Which config a command reads, first match wins: ``--config PATH``; ``$NETDEPLOY_CONFIG``;
``/etc/netdeploy/netdeploy.toml`` (an installed host). The state dir: ``--state-dir``;
``$NETDEPLOY_STATE_DIR``; ``[server] state_dir`` of the config. The repository's demo lab is
never a silent default: ``./dev serve`` passes it explicitly."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from netdeploy.config import DEMO_CONFIG, SYSTEM_CONFIG, Config, ConfigError, Problem, load_config

CONFIG_ENV = "NETDEPLOY_CONFIG"
STATE_DIR_ENV = "NETDEPLOY_STATE_DIR"


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
        help=f"config file (default: ${CONFIG_ENV}, else {SYSTEM_CONFIG})",
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
        help=f"where the database, admin token and images live (default: ${STATE_DIR_ENV}, "
        "else [server] state_dir)",
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


def config_path(explicit: Path | None) -> Path:
    """The config file a command reads (see the module docstring); a one-line error if none."""
    if explicit is not None:
        return explicit
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    if SYSTEM_CONFIG.exists():
        return SYSTEM_CONFIG
    raise ConfigError(
        [
            Problem(
                str(SYSTEM_CONFIG),
                None,
                "",
                f"no such file; pass --config PATH or set {CONFIG_ENV} "
                f"(the demo lab of a source tree: {DEMO_CONFIG})",
            )
        ]
    )


def config_from_args(args: argparse.Namespace) -> Config:
    state_dir = getattr(args, "state_dir", None)
    if state_dir is None and os.environ.get(STATE_DIR_ENV):
        state_dir = Path(os.environ[STATE_DIR_ENV])
    overrides = {
        "database": getattr(args, "db", None),
        "state_dir": state_dir.resolve() if state_dir else None,
        "bind": getattr(args, "bind", None),
        "http_port": getattr(args, "http_port", None),
        "tftp_port": getattr(args, "tftp_port", None),
        "public_url": getattr(args, "public_url", None),
    }
    return load_config(config_path(getattr(args, "config", None)), **overrides)
