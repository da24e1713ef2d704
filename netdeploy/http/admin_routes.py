"""Admin API: the decisions only an admin makes. Needs ``Authorization: Bearer <admin token>``.

| route | body (all optional) | answers |
| --- | --- | --- |
| ``GET /api/admin/clusters`` | | clusters, gate, every node's state |
| ``POST /api/admin/nodes/{node}/release`` | ``{"force": bool, "actor": str}`` | the node |
| ``POST /api/admin/nodes/{node}/retry`` | ``{"actor": str}`` | the node |
| ``POST /api/admin/nodes/{node}/fail`` | ``{"reason": str, "actor": str}`` | the node |
| ``POST /api/admin/clusters/{name}/reset`` | ``{"actor": str}`` | the cluster |
| ``POST /api/admin/nodes/{mac}/adopt`` | ``{"hostname", "cluster"|"image", "hardware"?}`` | diff |
| ``POST /api/admin/reload`` | ``{"actor": str}`` | what changed |

Adopt and reload validate the whole config as `netdeploy check` does and change nothing when it
fails: 422 with ``{"error", "problems": [...]}`` (netdeploy.reload).

``{node}`` is a MAC (any notation) or a host name. Refusals: 401 no token, 403 wrong token,
400 bad body, 404 unknown node/cluster, 409 not allowed now; ``{"error": "..."}``.
"""

from __future__ import annotations

import json
from typing import Any, cast

from aiohttp import web
from sqlalchemy import select

from netdeploy.http.agent_routes import error_response
from netdeploy.http.api import cluster_json, node_json
from netdeploy.http.common import ctx_of, json_error, reloader_of
from netdeploy.inventory import BadMac, normalize_mac
from netdeploy.reload import ReloadRefused
from netdeploy.rollout import service as rollout
from netdeploy.rollout.errors import BadReport, RolloutError
from netdeploy.rollout.rows import NodeRow
from netdeploy.store.models import Cluster, Node

routes = web.RouteTableDef()


def admin_node_json(node: Node | NodeRow) -> dict[str, Any]:
    return {
        **node_json(cast(Node, node)),  # a NodeRow has every attribute node_json reads
        "release_seq": node.release_seq,
        "stops_rollout": node.stops_rollout,
    }


def admin_cluster_json(cluster: Cluster, nodes: list[Node]) -> dict[str, Any]:
    return {
        **cluster_json(cluster, nodes),
        "rollout": cluster.rollout,
        "nodes": [admin_node_json(n) for n in nodes],
    }


async def read_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)  # bytes: not UTF-8 is a ValueError too, never a 500
    except ValueError as exc:
        raise BadReport(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadReport("request body must be a JSON object")
    return body


def _actor(body: dict[str, Any]) -> str:
    actor = body.get("actor", "api")
    if not isinstance(actor, str) or not 0 < len(actor) <= 64:
        raise BadReport("actor must be a short string naming who acts")
    return f"admin:{actor}"


def _node_name(request: web.Request) -> str:
    raw = request.match_info["node"]
    try:
        return normalize_mac(raw)
    except BadMac:
        return raw  # a host name; the rollout core says 404 if there is none


@routes.get("/api/admin/clusters")
async def clusters(request: web.Request) -> web.Response:
    async with ctx_of(request).sessions() as session:
        rows = (await session.scalars(select(Cluster).order_by(Cluster.name))).all()
        nodes = (await session.scalars(select(Node).order_by(Node.hostname))).all()
    standalone = [n for n in nodes if n.cluster is None]
    return web.json_response(
        {
            "clusters": [
                admin_cluster_json(c, [n for n in nodes if n.cluster == c.name]) for c in rows
            ],
            "standalone": [admin_node_json(n) for n in standalone],
        }
    )


@routes.post("/api/admin/nodes/{node}/{action:release|retry|fail}")
async def node_action(request: web.Request) -> web.Response:
    ctx, name, what = ctx_of(request), _node_name(request), request.match_info["action"]
    try:
        body = await read_body(request)
        actor = _actor(body)
        if what == "release":
            force = body.get("force", False)
            if not isinstance(force, bool):
                raise BadReport("force must be true or false")
            node = await rollout.release(ctx, name, actor, force=force)
        elif what == "retry":
            node = await rollout.retry(ctx, name, actor)
        else:
            reason = body.get("reason", "given up by the admin")
            if not isinstance(reason, str) or len(reason) > 500:
                raise BadReport("reason must be a string of at most 500 characters")
            node = await rollout.fail(ctx, name, actor, reason)
    except RolloutError as exc:
        return error_response(exc)
    return web.json_response(admin_node_json(node))


@routes.post("/api/admin/clusters/{name}/reset")
async def reset(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    try:
        actor = _actor(await read_body(request))
        cluster = await rollout.reset_cluster(ctx, request.match_info["name"], actor)
    except RolloutError as exc:
        return error_response(exc)
    async with ctx.sessions() as session:
        nodes = (
            await session.scalars(
                select(Node).where(Node.cluster == cluster.name).order_by(Node.hostname)
            )
        ).all()
    return web.json_response(admin_cluster_json(cluster, list(nodes)))


def _refused(exc: ReloadRefused) -> web.Response:
    return json_error(exc.status, str(exc), problems=exc.problems)


def _optional_name(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and (not isinstance(value, str) or not 0 < len(value) <= 128):
        raise BadReport(f"{key} must be a name (a string)")
    return value


@routes.post("/api/admin/nodes/{node}/adopt")
async def adopt(request: web.Request) -> web.Response:
    """A discovered machine becomes an inventory node: one validated file in the inventory
    directory, then a reload (netdeploy.reload)."""
    try:
        mac = normalize_mac(request.match_info["node"])
    except BadMac as exc:
        return json_error(400, str(exc))
    try:
        body = await read_body(request)
        actor = _actor(body)
        hostname = body.get("hostname")
        if not isinstance(hostname, str) or not hostname:
            raise BadReport('hostname is required: {"hostname": "node3", "cluster": "..."}')
        result = await reloader_of(request).adopt(
            mac,
            hostname,
            cluster=_optional_name(body, "cluster"),
            image=_optional_name(body, "image"),
            hardware=_optional_name(body, "hardware"),
            actor=actor,
        )
    except RolloutError as exc:
        return error_response(exc)
    except ReloadRefused as exc:
        return _refused(exc)
    return web.json_response(result.json())


@routes.post("/api/admin/reload")
async def reload(request: web.Request) -> web.Response:
    """Re-read the config (edited by hand); apply it in one transaction or change nothing."""
    try:
        actor = _actor(await read_body(request))
        result = await reloader_of(request).reload(actor)
    except RolloutError as exc:
        return error_response(exc)
    except ReloadRefused as exc:
        return _refused(exc)
    return web.json_response(result.json())


def setup(app: web.Application) -> None:
    app.add_routes(routes)
