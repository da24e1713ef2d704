"""Import the validated config into the store: idempotent, all-or-nothing, by the writer.

The config is the source of truth for the inventory; the store keeps what happened (node
states, gate, events). Importing the same config twice changes nothing the second time.
Adding a node, adopting a discovered one and removing one are node-state changes, so the
import runs as one exclusive action of the rollout writer (netdeploy.rollout.engine): one
transaction with its event rows, published only after commit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from netdeploy import eventlog
from netdeploy.config import Config
from netdeploy.events import EventBus
from netdeploy.inventory import NodeState
from netdeploy.rollout.engine import Action, Batch, RolloutEngine
from netdeploy.store.db import take_startup_lock
from netdeploy.store.models import Cluster, Event, HardwareProfile, Image, Node, utcnow
from netdeploy.tokens import without_secrets


@dataclass
class ImportResult:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed)


def _set(obj: object, values: dict, changes: list[str], label: str) -> None:
    dirty = False
    for key, value in values.items():
        if getattr(obj, key) != value:
            setattr(obj, key, value)
            dirty = True
    if dirty:
        changes.append(label)


async def _import(session: AsyncSession, cfg: Config, result: ImportResult) -> None:
    images = {i.name: i for i in (await session.scalars(select(Image))).all()}
    for name, image in cfg.images.items():
        values = {
            "path": str(cfg.image_path(name)),
            "format": image.format,
            "description": image.description,
            "hardware": list(image.hardware),
        }
        row = images.get(name)
        if row is None:
            session.add(Image(name=name, **values, facts={}))
            result.added.append(f"image {name}")
        else:
            if row.path != values["path"]:  # another file: catalog facts no longer hold
                row.sha256, row.size, row.mtime_ns, row.status = None, None, None, "unhashed"
            _set(row, values, result.updated, f"image {name}")

    profiles = {p.name: p for p in (await session.scalars(select(HardwareProfile))).all()}
    for name, profile in cfg.hardware.items():
        values = {
            "description": profile.description,
            "mass_storage": [d.model_dump() for d in profile.mass_storage],
        }
        if name in profiles:
            _set(profiles.pop(name), values, result.updated, f"hardware {name}")
        else:
            session.add(HardwareProfile(name=name, **values))
            result.added.append(f"hardware {name}")
    for name, row in profiles.items():
        await session.delete(row)
        result.removed.append(f"hardware {name}")

    clusters = {c.name: c for c in (await session.scalars(select(Cluster))).all()}
    for name, cluster in cfg.clusters.items():
        first = cfg.node_by_hostname(cluster.first_node or "")
        values = {
            "image": cluster.image,
            "first_node": first.hostname if first else "",
            "release_policy": cluster.release,
            # secret vars stay in the config: answer files are rendered from it (security.md)
            "settings": without_secrets(
                cluster.model_dump(mode="json", exclude={"image", "first_node", "release"})
            ),
        }
        if name in clusters:
            _set(clusters.pop(name), values, result.updated, f"cluster {name}")
        else:
            session.add(Cluster(name=name, **values))
            result.added.append(f"cluster {name}")
    await session.flush()  # nodes reference clusters

    nodes = {n.mac: n for n in (await session.scalars(select(Node))).all()}
    wanted = {n.mac for n in cfg.nodes}
    for mac, row in list(nodes.items()):
        if mac not in wanted and row.in_config:
            await session.delete(row)
            del nodes[mac]
            result.removed.append(f"node {mac} ({row.hostname})")
            result.events.append(
                eventlog.config_change(
                    {"removed": True}, mac=mac, cluster=row.cluster, from_state=row.state
                )
            )
    # free hostnames that move between nodes before assigning them (unique constraint)
    for node in cfg.nodes:
        row = nodes.get(node.mac)
        if row is not None and row.hostname != node.hostname:
            row.hostname = None
    await session.flush()
    for clusters_row in clusters.values():  # clusters no longer in config
        await session.delete(clusters_row)
        result.removed.append(f"cluster {clusters_row.name}")
    for node in cfg.nodes:
        values = {
            "hostname": node.hostname,
            "cluster": node.cluster,
            "hardware": node.hardware,
            "image": cfg.image_for(node),
            "vars": without_secrets(dict(node.vars)),
            "in_config": True,
        }
        row = nodes.get(node.mac)
        if row is None:
            session.add(
                Node(mac=node.mac, state=NodeState.REGISTERED, state_since=utcnow(), **values)
            )
            result.added.append(f"node {node.mac} ({node.hostname})")
            result.events.append(
                eventlog.state_change(
                    node.mac, node.cluster, None, NodeState.REGISTERED, "added to config"
                )
            )
            continue
        if row.state == NodeState.DISCOVERED:  # the admin adopted a discovered machine
            result.events.append(
                eventlog.state_change(
                    node.mac, node.cluster, row.state, NodeState.REGISTERED, "added to config"
                )
            )
            values.update(state=NodeState.REGISTERED, state_since=utcnow())
        _set(row, values, result.updated, f"node {node.mac} ({node.hostname})")


def import_action(cfg: Config) -> Action:
    """The writer's action: make the store's inventory match ``cfg`` (run it ``exclusive``)."""

    async def action(batch: Batch) -> ImportResult:
        result = ImportResult()
        await take_startup_lock(batch.session)  # another server importing at the same moment
        await _import(batch.session, cfg, result)
        if result.changed:
            result.events.append(
                eventlog.config_change(
                    {
                        "source": str(cfg.source) if cfg.source else None,
                        "added": result.added,
                        "updated": result.updated,
                        "removed": result.removed,
                    }
                )
            )
        await batch.session.flush()  # node rows before the event rows that name them
        for event in result.events:
            batch.record(event)
        return result

    return action


async def import_config(
    sessions: async_sessionmaker, cfg: Config, bus: EventBus | None = None
) -> ImportResult:
    """Make the store's inventory match ``cfg`` in one transaction (nothing changes on error),
    through a rollout writer of its own: for a process that runs no server (tests, tools)."""
    writer = RolloutEngine(sessions, bus or EventBus())
    try:
        result: ImportResult = await writer.run(import_action(cfg), exclusive=True)
    finally:
        await writer.stop()
    return result
