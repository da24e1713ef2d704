"""Network capture over HTTP (netdeploy.images.capture): the admin marks, the agent uploads.

Admin (``Authorization: Bearer <admin token>``):

| route | body | answers |
| --- | --- | --- |
| ``POST /api/admin/captures`` | ``{"image", "node", "actor"?, "force"?: REASON}`` | the capture |
| ``GET /api/admin/captures`` | | ``{"captures": [...]}`` |
| ``GET /api/admin/captures/{mac}`` | | the capture (state, received, percent, wire bytes) |
| ``DELETE /api/admin/captures/{mac}?actor=`` | | the capture as it was |

Agent (the node's boot token, ``Authorization: Bearer`` or ``?token=``):

| route | body | answers |
| --- | --- | --- |
| ``GET /api/nodes/{mac}/capture?size=N[&format=sh]`` | | where to resume: ``offset``, ``segment`` |
| ``POST /api/nodes/{mac}/capture/segments?offset=N`` | one zstd sparse segment | ``received`` |
| ``POST /api/nodes/{mac}/capture/done`` | ``{"sha256"}`` | the capture: done, refused or failed |
| ``POST /api/nodes/{mac}/capture/failed`` | ``{"reason"}`` | the capture, failed |

Refusals are ``{"error": ..., "offset"?: N}``: 400 bad body or segment, 403 token, 404 unknown,
409 not now or not at the committed offset (``offset`` says where to resume).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from netdeploy.http.auth import refuse
from netdeploy.http.common import ctx_of, json_error, mac_param, request_token
from netdeploy.images import capture
from netdeploy.images.capture import CaptureError
from netdeploy.inventory import BadMac, normalize_mac
from netdeploy.rollout.identity import claim_valid
from netdeploy.store.models import Cluster, Node

routes = web.RouteTableDef()


def _refused(exc: CaptureError) -> web.Response:
    return json_error(exc.status, str(exc), **exc.extra)


async def _json_body(request: web.Request) -> dict[str, Any]:
    text = await request.text()
    if not text.strip():
        return {}
    body = json.loads(text)  # a JSONDecodeError becomes 400 in the app's middleware
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="request body must be a JSON object")
    return body


# ---------------------------------------------------------------- admin


@routes.post("/api/admin/captures")
async def request_capture(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    body = await _json_body(request)
    image, node, force = body.get("image"), body.get("node"), body.get("force")
    actor = body.get("actor", "api")
    if not isinstance(image, str) or not isinstance(node, str):
        return json_error(400, "give the image name and the node's MAC: {image, node}")
    if not isinstance(actor, str) or not 0 < len(actor) <= 64:
        return json_error(400, "actor must be a short string naming who acts")
    if force is not None and (not isinstance(force, str) or not force.strip()):
        return json_error(400, "force must be the reason for overriding preflight")
    try:
        mac = normalize_mac(node)
    except BadMac as exc:
        return json_error(400, str(exc))
    try:
        row = await capture.request(
            ctx.config,
            ctx.sessions,
            ctx.bus,
            image=image,
            mac=mac,
            actor=f"admin:{actor}",
            force_reason=force,
        )
    except CaptureError as exc:
        return _refused(exc)
    return web.json_response(capture.capture_json(row))


@routes.get("/api/admin/captures")
async def list_captures(request: web.Request) -> web.Response:
    rows = await capture.listing(ctx_of(request).sessions)
    return web.json_response({"captures": [capture.capture_json(r) for r in rows]})


@routes.get("/api/admin/captures/{mac}")
async def show_capture(request: web.Request) -> web.Response:
    row = await capture.get(ctx_of(request).sessions, mac_param(request))
    if row is None:
        return json_error(404, f"no capture for {mac_param(request)}")
    return web.json_response(capture.capture_json(row))


@routes.delete("/api/admin/captures/{mac}")
async def cancel_capture(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    actor = f"admin:{request.query.get('actor', 'api')[:64]}"
    try:
        row = await capture.cancel(ctx.config, ctx.sessions, ctx.bus, mac_param(request), actor)
    except CaptureError as exc:
        return _refused(exc)
    return web.json_response(capture.capture_json(row))


# ---------------------------------------------------------------- agent


async def _node_token(request: web.Request) -> str | web.Response:
    """The canonical MAC when the request carries the agent's claim; else the 403/404."""
    ctx = ctx_of(request)
    mac = mac_param(request)
    async with ctx.sessions() as session:
        node = await session.get(Node, mac)
        cluster = await session.get(Cluster, node.cluster) if node and node.cluster else None
    if node is None:
        return json_error(404, f"no node with MAC {mac}; boot it first")
    if claim_valid(node, cluster, request_token(request)):  # the agent's claim of this boot
        return mac
    # the one refusal path: recorded off the writer, capped per address (http.auth)
    return refuse(request, 403, "capture needs the agent's claim of this boot phase", mac=mac)


def _int_query(request: web.Request, name: str) -> int:
    try:
        return int(request.query[name])
    except (KeyError, ValueError):
        raise web.HTTPBadRequest(text=f"?{name}=N (an integer) is required") from None


@routes.get("/api/nodes/{mac}/capture")
async def begin(request: web.Request) -> web.Response:
    mac = await _node_token(request)
    if isinstance(mac, web.Response):
        return mac
    ctx = ctx_of(request)
    try:
        size = _int_query(request, "size")
        row = await capture.begin(ctx.config, ctx.sessions, ctx.bus, mac, size)
    except CaptureError as exc:
        return _refused(exc)
    answer = {"image": row.image, "offset": row.received, "segment": capture.SEGMENT}
    if request.query.get("format") == "sh":
        text = "".join(f"ND_CAPTURE_{k.upper()}={v}\n" for k, v in answer.items())
        return web.Response(text=text, headers={"Cache-Control": "no-store"})
    return web.json_response(answer)


@routes.post("/api/nodes/{mac}/capture/segments")
async def segment(request: web.Request) -> web.Response:
    mac = await _node_token(request)
    if isinstance(mac, web.Response):
        return mac
    ctx = ctx_of(request)
    try:
        got = await capture.receive(
            ctx.config,
            ctx.sessions,
            ctx.bus,
            mac,
            _int_query(request, "offset"),
            request.content.iter_chunked(1 << 20),
        )
    except CaptureError as exc:
        return _refused(exc)
    return web.json_response({"received": got.row.received, "data_bytes": got.data_bytes})


@routes.post("/api/nodes/{mac}/capture/done")
async def done(request: web.Request) -> web.Response:
    mac = await _node_token(request)
    if isinstance(mac, web.Response):
        return mac
    ctx = ctx_of(request)
    sha = (await _json_body(request)).get("sha256")
    if not isinstance(sha, str) or len(sha) != 64:
        return json_error(400, "sha256 (64 hex digits) of the whole disk is required")
    try:
        row = await capture.finish(ctx.config, ctx.sessions, ctx.bus, mac, sha)
    except CaptureError as exc:
        return _refused(exc)
    return web.json_response(capture.capture_json(row))


@routes.post("/api/nodes/{mac}/capture/failed")
async def failed(request: web.Request) -> web.Response:
    mac = await _node_token(request)
    if isinstance(mac, web.Response):
        return mac
    ctx = ctx_of(request)
    reason = str((await _json_body(request)).get("reason", "no reason given"))[:500]
    try:
        row = await capture.agent_failed(ctx.sessions, ctx.bus, mac, reason)
    except CaptureError as exc:
        return _refused(exc)
    return web.json_response(capture.capture_json(row))


def setup(app: web.Application) -> None:
    app.add_routes(routes)
