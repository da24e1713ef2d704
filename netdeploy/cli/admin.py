"""``netdeploy clusters | release | retry | fail | reset``: the admin API from a shell.

These commands talk to the *running* server (its rollout writer makes every decision; the CLI
never writes the store behind its back). They find it the way an admin would expect:

- URL: ``--url``, else ``$NETDEPLOY_URL``, else the ``admin-url`` file the server writes into
  its state dir at start, else ``http://127.0.0.1:<http_port or 8080/80>``.
- token: ``--token``, else ``$NETDEPLOY_ADMIN_TOKEN``, else ``server.admin_token`` from the
  config, else the ``admin-token`` file in the state dir (generated at first start).
"""

from __future__ import annotations

import argparse
import getpass
import http.client
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from netdeploy.addresses import ADMIN_URL_FILE, choose_ports, local_url
from netdeploy.cli.common import CommandError, add_config_options, config_from_args
from netdeploy.config import Config

# ---------------------------------------------------------------- finding the server


def server_url(args: argparse.Namespace, cfg: Config) -> str:
    if args.url:
        return args.url.rstrip("/")
    if os.environ.get("NETDEPLOY_URL"):
        return os.environ["NETDEPLOY_URL"].rstrip("/")
    path = cfg.server.state_dir / ADMIN_URL_FILE
    if path.exists():
        return path.read_text().strip().rstrip("/")
    return local_url(cfg.server.bind, choose_ports(cfg).http)


def admin_token(args: argparse.Namespace, cfg: Config) -> str:
    if args.token:
        return str(args.token)
    if os.environ.get("NETDEPLOY_ADMIN_TOKEN"):
        return os.environ["NETDEPLOY_ADMIN_TOKEN"]
    if cfg.server.admin_token:
        return cfg.server.admin_token
    path: Path = cfg.server.state_dir / "admin-token"
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise CommandError(
            f"no admin token: cannot read {path} ({exc.strerror}); pass --token or set "
            "NETDEPLOY_ADMIN_TOKEN"
        ) from None


def call(args: argparse.Namespace, method: str, path: str, body: dict | None = None) -> Any:
    """One admin API call; any refusal becomes a one-line :class:`CommandError`."""
    cfg = config_from_args(args)
    url = server_url(args, cfg)
    data = json.dumps(body).encode() if body is not None else None
    headers = {
        "Authorization": f"Bearer {admin_token(args, cfg)}",
        "Content-Type": "application/json",
    }
    try:
        request = urllib.request.Request(url + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(request, timeout=args.timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        problems: list[str] = []
        try:
            answer = json.load(exc)
            message = answer.get("error", exc.reason)
            problems = [str(p) for p in answer.get("problems") or []]
        except ValueError:
            message = exc.reason
        raise CommandError(f"{message} (HTTP {exc.code} from {url})", problems) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise CommandError(
            f"cannot reach netdeploy at {url} ({reason}); is `netdeploy serve` running? pass --url"
        ) from None
    except ValueError as exc:  # "unknown url type", a port that is not a number, bad JSON
        raise CommandError(f"cannot use {url}: {exc}; pass --url http://HOST:PORT") from None


def server_given(args: argparse.Namespace, cfg: Config) -> bool:
    """Is a running server named (--url, $NETDEPLOY_URL) or announced (its admin-url file)?"""
    announced = (cfg.server.state_dir / ADMIN_URL_FILE).exists()
    return bool(args.url or os.environ.get("NETDEPLOY_URL") or announced)


def ask_server(
    args: argparse.Namespace, method: str, path: str, body: dict | None = None
) -> Any | None:
    """The running server's answer, or None when no server runs: none is named or announced,
    or the announced one is gone (a stale admin-url file). A named server that does not
    answer, and every refusal, is a :class:`CommandError`."""
    cfg = config_from_args(args)
    if not server_given(args, cfg):
        return None
    try:
        return call(args, method, path, body)
    except CommandError as exc:
        named = args.url or os.environ.get("NETDEPLOY_URL")
        if "cannot reach netdeploy" in str(exc) and not named:
            return None
        raise


def actor() -> str:
    try:
        return f"{getpass.getuser()}@cli"
    except (KeyError, OSError):
        return "cli"


# ---------------------------------------------------------------- commands


def _print_node(node: dict[str, Any], verb: str) -> None:
    print(f"{node['hostname'] or node['mac']} ({node['mac']}): {verb}, now {node['state']}")


def cmd_release(args: argparse.Namespace) -> int:
    node = call(
        args,
        "POST",
        f"/api/admin/nodes/{args.node}/release",
        {"force": args.force, "actor": actor()},
    )
    _print_node(node, "released")
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    node = call(args, "POST", f"/api/admin/nodes/{args.node}/retry", {"actor": actor()})
    _print_node(node, "will be re-imaged on its next PXE boot")
    return 0


def cmd_fail(args: argparse.Namespace) -> int:
    body = {"actor": actor(), "reason": args.reason}
    node = call(args, "POST", f"/api/admin/nodes/{args.node}/fail", body)
    _print_node(node, "given up")
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    if not args.yes:
        raise CommandError(
            f"reset puts every node of {args.cluster} back to registered: each is re-imaged on "
            "its next PXE boot. Add --yes to confirm"
        )
    cluster = call(args, "POST", f"/api/admin/clusters/{args.cluster}/reset", {"actor": actor()})
    print(f"cluster {cluster['name']}: rollout {cluster['rollout']}, gate {cluster['gate']}")
    if cluster.get("alarm"):
        print(f"ALARM: {cluster['alarm']}")
    return 0


def cmd_clusters(args: argparse.Namespace) -> int:
    data = call(args, "GET", "/api/admin/clusters")
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 120))
    for cluster in data["clusters"]:
        console.print(
            f"[bold]{cluster['name']}[/bold]  gate [bold]{cluster['gate']}[/bold]  "
            f"policy {cluster['release_policy']}  rollout {cluster['rollout']}  "
            f"first node {cluster['first_node']}"
        )
        console.print(f"  {cluster['gate_detail']}", highlight=False)
        if cluster.get("alarm"):
            console.print(f"  [bold red]ALARM[/bold red] {cluster['alarm']}", highlight=False)
        table = Table(box=None, header_style="bold", pad_edge=False)
        seen = cluster["membership"]
        if seen["verified"]:
            members = ", ".join(f"{m['name']} {m['state']}" for m in seen["members"]) or "none"
            by = f" (reported by {seen['reported_by']})" if seen["reported_by"] else ""
            console.print(f"  the cluster lists: {members}{by}", highlight=False)
        columns = ["", "hostname", "MAC", "state", "in cluster", "progress", "seq", "since"]
        for column in [*columns, "message"]:
            table.add_column(column, no_wrap=column != "message")
        for n in cluster["nodes"]:
            mark = "*" if n["hostname"] == cluster["first_node"] else ""
            if n["stops_rollout"]:
                mark = "!"
            table.add_row(
                mark,
                n["hostname"] or "",
                n["mac"],
                n["state"],
                seen["nodes"].get(n["hostname"] or n["mac"], ""),
                f"{n['progress']:.0f}%" if n["progress"] is not None else "",
                "" if n["release_seq"] is None else str(n["release_seq"]),
                (n["state_since"] or "")[:19],
                n["message"],
            )
        console.print(table)
        console.print()
    if data["clusters"]:
        console.print("* first node   ! failure stopping the rollout until you decide")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    """The boot path of one machine, from the running server's record (docs/boot.md)."""
    x = call(args, "GET", f"/api/nodes/{urllib.parse.quote(args.node, safe='')}/explain")
    if args.json:
        print(json.dumps(x, indent=2))
        return 0
    name = x["hostname"] or "unknown machine"
    state = x["state"] or "never heard from"
    print(f"{name} ({x['mac']}): {state}" + (f", cluster {x['cluster']}" if x["cluster"] else ""))
    if x["stale"]:
        print(f"  stale: nothing heard for {x['quiet_for']:.0f} s (limit {x['stale_limit']:.0f} s)")
    if x["gate"]:
        print(f"  gate {x['gate']}: {x['gate_detail']}")
    print()
    if not x["steps"]:
        print("  nothing recorded for this MAC: no DHCP, TFTP or HTTP request, no report")
    marks = {"error": "!!", "warning": "! ", "info": "  "}
    for step in x["steps"]:
        when = (step["at"] or "")[:19].replace("T", " ")
        print(f"{marks.get(step['severity'], '  ')}{when}  {step['phase']:<15} {step['text']}")
    print()
    print(f"next network boot: {x['next_boot']}")
    print(f"the machine should: {x['machine_next']}")
    for cause in x["causes"]:
        print(f"likely cause: {cause}")
    for advice in x["admin"]:
        command = f": {advice['command']}" if advice["command"] else ""
        print(f"you can: {advice['label']}{command}")
    return 0


# ---------------------------------------------------------------- options


def client_options(parser: argparse.ArgumentParser) -> None:
    add_config_options(parser)
    parser.add_argument("--url", help="the server's base URL (default: found from the state dir)")
    parser.add_argument("--token", help="admin token (default: from config or the state dir)")
    parser.add_argument("--timeout", type=float, default=30, help=argparse.SUPPRESS)


def _with(*extra: tuple[tuple[str, ...], dict[str, Any]]) -> Any:
    def add(parser: argparse.ArgumentParser) -> None:
        client_options(parser)
        for names, options in extra:
            parser.add_argument(*names, **options)

    return add


NODE = (("node",), {"metavar": "NODE", "help": "MAC address or host name"})

COMMANDS = [
    (
        "explain",
        "why did a machine (not) boot: its boot path as a timeline, what it does next, likely "
        "causes (from the running server)",
        cmd_explain,
        _with(
            (("node",), {"metavar": "NODE", "help": "MAC address (any notation) or host name"}),
            (("--json",), {"action": "store_true", "help": "print JSON"}),
        ),
    ),
    (
        "clusters",
        "show each cluster's gate and its nodes' rollout states (from the running server)",
        cmd_clusters,
        _with((("--json",), {"action": "store_true", "help": "print JSON"})),
    ),
    (
        "release",
        "release a held node now (manual policy, or after a failure stopped the rollout)",
        cmd_release,
        _with(
            NODE,
            (
                ("--force",),
                {
                    "action": "store_true",
                    "help": "release even though the cluster is not formed (unsafe)",
                },
            ),
        ),
    ),
    (
        "retry",
        "re-image a failed node on its next PXE boot and resume the rollout",
        cmd_retry,
        _with(NODE),
    ),
    (
        "fail",
        "give a node up: mark it failed and let the rest of its cluster go on",
        cmd_fail,
        _with(NODE, (("--reason",), {"default": "given up by the admin", "help": "why"})),
    ),
    (
        "reset",
        "start a new rollout of a cluster: every node re-imaged on its next PXE boot",
        cmd_reset,
        _with(
            (("cluster",), {"metavar": "CLUSTER"}),
            (("--yes",), {"action": "store_true", "help": "confirm"}),
        ),
    ),
]
