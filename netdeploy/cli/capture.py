"""`netdeploy image capture NAME --node MAC` and `image captures`: the running server's admin
API from a shell (the CLI never writes the store behind the server; netdeploy.cli.admin
finds the server and its token)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from netdeploy.cli.admin import actor, call, client_options
from netdeploy.cli.common import CommandError
from netdeploy.inventory import BadMac, normalize_mac


def add_capture_options(sub: Any) -> None:
    cap = sub.add_parser(
        "capture",
        help="capture a machine's disk over the network into image NAME on its next PXE boot",
        description="Mark the machine with MAC for capture: on its next PXE boot the agent "
        "streams its disk (zstd, only non-zero blocks, resumable) into image NAME, which is "
        "then hashed on both sides and added with the same preflight as `image add`. The "
        "machine then boots its own disk again.",
    )
    cap.add_argument("name", metavar="NAME", nargs="?", help="an image declared as [images.NAME]")
    cap.add_argument("--node", required=True, metavar="MAC", help="the machine to capture")
    cap.add_argument(
        "--force",
        metavar="REASON",
        help="add the captured image even if preflight refuses it (recorded with who and why)",
    )
    cap.add_argument("--cancel", action="store_true", help="forget the capture mark of MAC")
    cap.add_argument(
        "--wait", action="store_true", help="follow the capture's progress until it ends"
    )
    client_options(cap)
    captures = sub.add_parser("captures", help="list machines marked for capture and progress")
    captures.add_argument("--json", action="store_true", help="print JSON")
    client_options(captures)


def _line(c: dict[str, Any]) -> str:
    size = c["disk_size"]
    progress = (
        f"{c['received'] / 2**20:,.0f} of {size / 2**20:,.0f} MiB ({c['percent']:.0f}%), "
        f"{c['wire_bytes'] / 2**20:,.1f} MiB over the wire"
        if size
        else "waiting for its PXE boot"
    )
    return f"{c['mac']} -> {c['image']}: {c['state']}: {progress}; {c['detail']}"


def run_capture(args: argparse.Namespace) -> int:
    if args.image_command == "captures":
        data = call(args, "GET", "/api/admin/captures")
        if args.json:
            print(json.dumps(data, indent=2))
        for c in [] if args.json else data["captures"]:
            print(_line(c))
        return 0
    try:
        mac = normalize_mac(args.node)
    except BadMac as exc:
        raise CommandError(str(exc)) from None
    if args.cancel:
        from urllib.parse import quote

        c = call(args, "DELETE", f"/api/admin/captures/{mac}?actor={quote(actor())}")
        print(f"{mac}: capture into {c['image']} cancelled (was {c['state']})")
        return 0
    if not args.name:
        raise CommandError("which image? netdeploy image capture NAME --node MAC")
    body = {"image": args.name, "node": mac, "actor": actor()}
    if args.force:
        body["force"] = args.force
    c = call(args, "POST", "/api/admin/captures", body)
    print(f"{mac} marked for capture into image {c['image']}: PXE-boot it now")
    if not args.wait:
        return 0
    last = ""
    while c["state"] in ("requested", "capturing"):
        time.sleep(2)
        c = call(args, "GET", f"/api/admin/captures/{mac}")
        line = _line(c)
        if line != last:
            print(line, file=sys.stderr)
            last = line
    print(_line(c))
    return 0 if c["state"] == "done" else 1
