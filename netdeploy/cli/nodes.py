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
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from netdeploy.cli.admin import ask_server
from netdeploy.config import Config
from netdeploy.http.api import facts_json, node_json
from netdeploy.store import Node, StoreError, create_engine
from netdeploy.store.models import MachineFacts

NOT_IMPORTED = "in the config, not in the store yet: `netdeploy serve` imports it"


def from_server(args: argparse.Namespace, *, facts: bool = False) -> list[dict[str, Any]] | None:
    """The running server's view, or None when no server runs (netdeploy.cli.admin)."""
    body = ask_server(args, "GET", "/api/nodes" + ("?facts=1" if facts else ""))
    return None if body is None else list(body["nodes"])


async def read_stored(cfg: Config, statement: Any) -> list[Any]:
    """Rows of ``statement`` from the store as it is: no schema upgrade, nothing written;
    [] when no server ever created the database."""
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
            rows = (await conn.execute(statement)).all()
    except SQLAlchemyError as exc:
        raise StoreError(
            f"cannot read the nodes from {url!r} ({exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0]}); is this netdeploy's database? start `netdeploy serve` "
            "once to create or upgrade it"
        ) from None
    finally:
        await engine.dispose()
    return list(rows)


async def _stored(cfg: Config) -> list[Node]:
    rows = await read_stored(cfg, select(Node).order_by(Node.cluster, Node.hostname))
    return [Node(**row._mapping) for row in rows]


async def stored_facts(cfg: Config) -> dict[str, MachineFacts]:
    """The facts the store holds, by MAC; none from a store made before they existed."""
    try:
        rows = await read_stored(cfg, select(MachineFacts))
    except StoreError:
        return {}  # no node_facts table yet: `netdeploy serve` adds it (migration 0008_facts)
    return {row.mac: MachineFacts(**row._mapping) for row in rows}


def from_store(cfg: Config, *, facts: bool = False) -> list[dict[str, Any]]:
    """The store as it is, plus the config's nodes it does not hold yet; writes nothing."""
    stored = {n.mac: node_json(n) for n in asyncio.run(_stored(cfg))}
    if facts:
        found = asyncio.run(stored_facts(cfg))
        for mac, row in stored.items():
            row["facts"] = facts_json(found.get(mac))
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
                **({"facts": None} if facts else {}),
            }
    return sorted(stored.values(), key=lambda n: (n["cluster"] or "", n["hostname"] or n["mac"]))


def nodes(args: argparse.Namespace, cfg: Config, *, facts: bool = False) -> list[dict[str, Any]]:
    found = from_server(args, facts=facts)
    return found if found is not None else from_store(cfg, facts=facts)


def facts_rows(node: dict[str, Any]) -> list[str]:
    """A node's reported hardware as the lines `netdeploy nodes --facts` prints."""
    facts = node.get("facts")
    if not facts:
        return ["no facts reported yet (the agent reports them when the machine PXE-boots)"]
    smbios = facts.get("smbios") or {}
    lines = [
        f"{smbios.get('vendor') or '?'} {smbios.get('product') or '?'}, serial "
        f"{smbios.get('serial') or '-'}, uuid {smbios.get('uuid') or '-'}; "
        f"{(facts.get('firmware') or '?').upper()}, {facts.get('cpus') or '?'} CPU "
        f"({facts.get('cpu_model') or '?'}), {facts.get('memory_mib') or '?'} MiB",
    ]
    for c in facts.get("storage", []):
        disks = ", ".join(c.get("disks", [])) or "no disk"
        lines.append(
            f"storage {c.get('vendor')}:{c.get('device')} (subsys "
            f"{c.get('subsystem_vendor')}:{c.get('subsystem_device')}, class {c.get('class')}, "
            f"{c.get('driver') or 'no driver'}) at {c.get('address')}: {disks}"
        )
    for d in facts.get("disks", []):
        size = (d.get("size_bytes") or 0) / 2**30
        lines.append(f"disk {d.get('name')}: {size:.1f} GiB {d.get('bus')} {d.get('model') or ''}")
    for n in facts.get("nics", []):
        lines.append(
            f"nic {n.get('name')}: {n.get('mac')} {n.get('driver') or '?'} {n.get('link')}"
        )
    lines.append(f"reported {str(facts.get('reported_at', ''))[:19]} from {facts.get('ip') or '?'}")
    return lines


def print_json(rows: list[dict[str, Any]]) -> None:
    print(json.dumps(rows, indent=2))
