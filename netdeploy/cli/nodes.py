"""`netdeploy nodes`: the nodes and their rollout states, read without writing anything.

The running server owns the store (DESIGN "Seams that must hold"): when one answers, this asks
its API. Without one it reads the store as it is — no schema upgrade, no config import — and
shows the config's nodes that the store does not hold yet as such; only `netdeploy serve`
imports the config. So an edited config and a `netdeploy nodes` never change what a running
server hands out (before, this command imported the config behind the server's back).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from netdeploy.addresses import ADMIN_URL_FILE
from netdeploy.cli.admin import call
from netdeploy.cli.common import CommandError
from netdeploy.config import Config
from netdeploy.http.api import node_json
from netdeploy.store import Node, StoreError, create_engine

NOT_IMPORTED = "in the config, not in the store yet: `netdeploy serve` imports it"


def server_given(args: argparse.Namespace, cfg: Config) -> bool:
    """Is a running server named (--url, $NETDEPLOY_URL) or announced (its admin-url file)?"""
    announced = (cfg.server.state_dir / ADMIN_URL_FILE).exists()
    return bool(args.url or os.environ.get("NETDEPLOY_URL") or announced)


def from_server(args: argparse.Namespace) -> list[dict[str, Any]] | None:
    """The running server's view, or None when no server answers at the address found."""
    try:
        body = call(args, "GET", "/api/nodes")
    except CommandError as exc:
        if "cannot reach netdeploy" in str(exc) and not args.url:
            return None  # a stale admin-url file: the server is gone; read the store instead
        raise
    return list(body["nodes"])


async def _stored(cfg: Config) -> list[Node]:
    url = cfg.database_url
    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite") and parsed.database:
        path = Path(parsed.database)
        if not path.exists():
            if path.parent.exists() and not path.parent.is_dir():
                raise StoreError(f"cannot open database {url!r}: {path.parent} is not a directory")
            return []  # no server ever ran here: nothing stored, nothing to create
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(Node).order_by(Node.cluster, Node.hostname))).all()
    except SQLAlchemyError as exc:
        raise StoreError(
            f"cannot read the nodes from {url!r} ({exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0]}); is this netdeploy's database? start `netdeploy serve` "
            "once to create or upgrade it"
        ) from None
    finally:
        await engine.dispose()
    return [Node(**row._mapping) for row in rows]


def from_store(cfg: Config) -> list[dict[str, Any]]:
    """The store as it is, plus the config's nodes it does not hold yet; writes nothing."""
    stored = {n.mac: node_json(n) for n in asyncio.run(_stored(cfg))}
    for node in cfg.nodes:
        if node.mac not in stored:
            stored[node.mac] = {
                "mac": node.mac,
                "hostname": node.hostname,
                "cluster": node.cluster,
                "hardware": node.hardware,
                "image": cfg.image_for(node),
                "state": "registered",
                "state_since": None,
                "progress": None,
                "message": NOT_IMPORTED,
                "last_seen": None,
                "last_ip": None,
            }
    return sorted(stored.values(), key=lambda n: (n["cluster"] or "", n["hostname"] or n["mac"]))


def nodes(args: argparse.Namespace, cfg: Config) -> list[dict[str, Any]]:
    found = from_server(args) if server_given(args, cfg) else None
    return found if found is not None else from_store(cfg)


def print_json(rows: list[dict[str, Any]]) -> None:
    print(json.dumps(rows, indent=2))
