"""``netdeploy receive``: the command-line face of the Python receiver.

It imports nothing of the server or the config: ``python -m netdeploy receive`` starts here
(netdeploy/__main__.py) without the rest of the command line, whose imports cost a receiver
0.7 s of CPU before it could join (bench/multicast.py, 4 receivers sharing two cores)."""

from __future__ import annotations

import argparse
import json
import sys

from netdeploy.multicast.progress import Progress
from netdeploy.multicast.receiver import receive
from netdeploy.multicast.unicast import ReceiveError


def add_receive_options(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "The imaging agent receives with the startup media's C receiver (ndmc-recv); this one "
        "speaks the same protocol for an admin's machine, tests and benches "
        "(docs/multicast.md)."
    )
    parser.add_argument("--server", required=True, metavar="URL", help="netdeploy base URL")
    parser.add_argument("--image", required=True, metavar="NAME", help="image name")
    parser.add_argument(
        "--out", required=True, metavar="PATH", help="file or block device to write"
    )
    parser.add_argument("--mac", default=None, help="this node's MAC (joins its cluster's session)")
    parser.add_argument("--name", default=None, help="receiver name shown on the dashboard")
    parser.add_argument(
        "--token",
        default=None,
        help="the agent's claim secret for --mac (a receiver that is not a node: the admin token)",
    )
    parser.add_argument(
        "--interface", default=None, metavar="IF", help="interface name or address to join on"
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="re-join when the session is silent this long (default 10)",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    parser.add_argument("--json", action="store_true", help="print a JSON summary at the end")


DESCRIPTION = "receive an image from a multicast session into a file or block device"


def cmd_receive(args: argparse.Namespace) -> int:
    """The `netdeploy receive` command of the whole command line (netdeploy/cli/main.py)."""
    try:
        return receive_command(args)
    except ReceiveError as exc:
        # only the full command line needs its error type: this module stays light
        from netdeploy.cli.common import CommandError

        raise CommandError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    """`python -m netdeploy receive ...` on its own: the same options, errors and exit codes
    (one line on stderr, 1), without importing the server."""
    parser = argparse.ArgumentParser(prog="netdeploy receive", description=DESCRIPTION)
    add_receive_options(parser)
    args = parser.parse_args(argv)
    try:
        return receive_command(args)
    except ReceiveError as exc:
        print(f"netdeploy: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def receive_command(args: argparse.Namespace) -> int:
    progress = Progress(0, enabled=not args.quiet)
    summary = receive(
        args.server,
        args.image,
        args.out,
        mac=args.mac,
        name=args.name,
        token=args.token,
        interface=args.interface,
        idle_timeout=args.idle_timeout,
        progress=progress,
    )
    if args.json:
        print(json.dumps(summary))
    else:
        mib = summary["size"] / 2**20
        print(
            f"verified {args.out}: {mib:.1f} MiB, sha256 {summary['sha256']}, "
            f"{summary['seconds']} s, {summary['unicast_bytes']} bytes by unicast",
            file=sys.stderr,
        )
    return 0
