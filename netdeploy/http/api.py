"""Read-only JSON status: ``GET /api/nodes``, ``/api/nodes/{mac}``, ``/api/clusters``."""

from __future__ import annotations

from typing import Any

import prometheus_client
from aiohttp import web
from sqlalchemy import select

import netdeploy
from netdeploy import metrics as store_gauges
from netdeploy.context import Context
from netdeploy.http import events_routes
from netdeploy.http.common import ctx_of, mac_param
from netdeploy.rollout.membership import membership_json
from netdeploy.store.models import Cluster, MachineFacts, Node

routes = web.RouteTableDef()


def node_json(node: Node) -> dict[str, Any]:
    return {
        "mac": node.mac,
        "hostname": node.hostname,
        "cluster": node.cluster,
        "hardware": node.hardware,
        "image": node.image,
        "state": node.state,
        "state_since": node.state_since.isoformat() if node.state_since else None,
        "progress": node.progress,
        "message": node.message,
        "last_seen": node.last_seen.isoformat() if node.last_seen else None,
        "last_ip": node.last_ip,
    }


def facts_json(row: MachineFacts | None) -> dict[str, Any] | None:
    """The machine's last hardware report (netdeploy.rollout.facts), or None."""
    if row is None:
        return None
    return {**row.facts, "reported_at": row.reported_at.isoformat(), "ip": row.ip}


async def facts_by_mac(ctx: Context) -> dict[str, MachineFacts]:
    async with ctx.sessions() as session:
        return {row.mac: row for row in (await session.scalars(select(MachineFacts))).all()}


def cluster_json(cluster: Cluster, nodes: list[Node]) -> dict[str, Any]:
    return {
        "name": cluster.name,
        "image": cluster.image,
        "first_node": cluster.first_node,
        "release_policy": cluster.release_policy,
        "gate": cluster.gate,
        "gate_detail": cluster.gate_detail,
        # an identity alarm (docs/security.md): the gate is stopped until the admin acts
        "alarm": cluster.alarm or None,
        "formed_at": cluster.formed_at.isoformat() if cluster.formed_at else None,
        "nodes": [n.hostname or n.mac for n in nodes],
        # issue 16: the member list as the cluster itself reported it, next to the config
        "membership": membership_json(
            (cluster.settings or {}).get("kind"),
            cluster.membership,
            [(n.hostname or n.mac, n.state) for n in nodes],
        ),
    }


@routes.get("/api/version")
async def version(_request: web.Request) -> web.Response:
    return web.json_response({"name": "netdeploy", "version": netdeploy.__version__})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format; each module registers its own metrics on the default registry.
    The store's gauges (nodes by state, gates, images) are read now, for this scrape."""
    ctx = ctx_of(request)
    streams = request.app.get(events_routes.STREAMS, set())
    waits = len(ctx.rollout.waiters)
    await store_gauges.refresh(ctx.sessions, event_streams=len(streams), gate_waits=waits)
    body = prometheus_client.generate_latest()
    return web.Response(body=body, headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST})


@routes.get("/api/nodes")
async def list_nodes(request: web.Request) -> web.Response:
    """Every node; ``?facts=1`` adds each one's reported hardware (``facts``)."""
    ctx = ctx_of(request)
    async with ctx.sessions() as session:
        nodes = (await session.scalars(select(Node).order_by(Node.cluster, Node.hostname))).all()
    rows = [node_json(n) for n in nodes]
    if request.query.get("facts") in ("1", "true", "yes"):
        facts = await facts_by_mac(ctx)
        for row in rows:
            row["facts"] = facts_json(facts.get(row["mac"]))
    return web.json_response({"nodes": rows})


@routes.get("/api/nodes/{mac}")
async def get_node(request: web.Request) -> web.Response:
    """One node with its reported hardware (``facts``, null until its agent reports)."""
    mac = mac_param(request)
    async with ctx_of(request).sessions() as session:
        node = await session.get(Node, mac)
        facts = await session.get(MachineFacts, mac)
    if node is None:
        raise web.HTTPNotFound(text=f"no node with MAC {mac}")
    return web.json_response({**node_json(node), "facts": facts_json(facts)})


@routes.get("/api/clusters")
async def list_clusters(request: web.Request) -> web.Response:
    async with ctx_of(request).sessions() as session:
        clusters = (await session.scalars(select(Cluster).order_by(Cluster.name))).all()
        nodes = (await session.scalars(select(Node).order_by(Node.hostname))).all()
    return web.json_response(
        {"clusters": [cluster_json(c, [n for n in nodes if n.cluster == c.name]) for c in clusters]}
    )


def setup(app: web.Application) -> None:
    app.add_routes(routes)
