"""`netdeploy adopt` and `netdeploy reload`: inventory changes, made by the running server.

The config is the source of truth and the running server owns the store (DESIGN). `adopt`
asks the server to write a validated ``[[nodes]]`` file into the inventory directory the
config includes and to reload; `reload` asks it to re-read the config after a hand edit (like
SIGHUP). Both are validated as `netdeploy check` validates, and change nothing on a problem:
each problem is printed on its own line, with its file and line.
"""

from __future__ import annotations

import argparse
from typing import Any

from netdeploy.cli.admin import actor, call, client_options
from netdeploy.cli.common import CommandError


def _print_changes(result: dict[str, Any], what: str) -> None:
    changes = [
        f"  {verb} {item}"
        for verb in ("added", "updated", "removed")
        for item in result.get(verb, [])
    ]
    print(f"{what}: {len(changes)} change(s)" + (":" if changes else ""))
    for line in changes:
        print(line)


def cmd_adopt(args: argparse.Namespace) -> int:
    if (args.cluster is None) == (args.image is None):
        raise CommandError("give --cluster C or --image I (one of them)")
    body: dict[str, Any] = {"hostname": args.hostname, "actor": actor()}
    for key in ("cluster", "image", "hardware"):
        if getattr(args, key) is not None:
            body[key] = getattr(args, key)
    result = call(args, "POST", f"/api/admin/nodes/{args.mac}/adopt", body)
    _print_changes(result, f"adopted {args.mac} as {args.hostname} ({result['file']})")
    print("its next PXE boot images it (a machine in discovery reboots within 30 s)")
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    result = call(args, "POST", "/api/admin/reload", {"actor": actor()})
    _print_changes(result, f"reloaded {result['source']}")
    return 0


def _adopt_options(parser: argparse.ArgumentParser) -> None:
    client_options(parser)
    parser.add_argument("mac", metavar="MAC", help="the discovered machine's MAC")
    parser.add_argument("--hostname", required=True, help="its host name in the inventory")
    parser.add_argument("--cluster", help="the cluster it joins (its image and answer files)")
    parser.add_argument("--image", help="the image of a standalone node")
    parser.add_argument(
        "--hardware", help='hardware profile, or "auto" to match its reported facts'
    )


COMMANDS = [
    (
        "adopt",
        "make a discovered machine an inventory node (the running server writes and reloads)",
        cmd_adopt,
        _adopt_options,
    ),
    (
        "reload",
        "make the running server re-read its config (validated; all or nothing), like SIGHUP",
        cmd_reload,
        client_options,
    ),
]
