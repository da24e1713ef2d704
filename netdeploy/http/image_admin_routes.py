"""Admin API for the image catalog: `netdeploy image add|verify|rm` against a running server.

The running server owns the store (DESIGN, "Seams that must hold"), so while one runs the CLI
asks it to add, verify or remove an image instead of writing the store itself. The work is
:mod:`netdeploy.images.actions`, the same the CLI runs without a server; the file named in
``add`` is read by the server, so it must be a path on the server's host.

| route | body | answers |
| --- | --- | --- |
| ``POST /api/admin/images/{name}/add`` | ``{"path", "hardware"?, "compress"?, ...}`` | image |
| ``POST /api/admin/images/{name}/verify`` | none | ``{"name", "status", "message"}`` |
| ``POST /api/admin/images/{name}/rm`` | ``{"delete_file"?: bool}`` | ``{"message"}`` |
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

from netdeploy.http.admin_routes import read_body
from netdeploy.http.common import ctx_of, json_error
from netdeploy.images import actions, catalog
from netdeploy.images.actions import AddRequest, CatalogError
from netdeploy.rollout.errors import BadReport

routes = web.RouteTableDef()

_FLAGS = ("without_cluster_service", "no_shared_storage", "force")


def _add_request(name: str, body: dict[str, Any]) -> AddRequest:
    path = body.get("path")
    if not isinstance(path, str) or not path:
        raise BadReport('path is required: {"path": "/srv/captures/master.img"}')
    hardware = body.get("hardware", [])
    if not isinstance(hardware, list) or not all(isinstance(h, str) for h in hardware):
        raise BadReport("hardware must be a list of profile names")
    for key in ("compress", "sysprep", "force_reason", "actor"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise BadReport(f"{key} must be a string")
    for key in _FLAGS:
        if not isinstance(body.get(key, False), bool):
            raise BadReport(f"{key} must be true or false")
    return AddRequest(
        name=name,
        source=Path(path),
        hardware=list(hardware),
        compress=body.get("compress"),
        sysprep=body.get("sysprep"),
        # a preflight override is recorded with who asked (the admin CLI says who it runs as)
        force_reason=body.get("force_reason") or None,
        actor=f"admin:{body.get('actor') or 'api'}",
        **{key: bool(body.get(key, False)) for key in _FLAGS},
    )


@routes.post("/api/admin/images/{name}/{action:add|verify|rm}")
async def image_action(request: web.Request) -> web.Response:
    ctx, name, what = ctx_of(request), request.match_info["name"], request.match_info["action"]
    cfg = ctx.config
    try:
        body = await read_body(request)
        if what == "add":
            row, event = await actions.add_image(cfg, ctx.sessions, _add_request(name, body))
            ctx.bus.publish(event)
            return web.json_response(catalog.image_json(row, ctx.public_url))
        if what == "verify":
            verdict = await actions.verify_image(cfg, ctx.sessions, name)
            return web.json_response(
                {"name": verdict.name, "status": verdict.status, "message": verdict.message}
            )
        delete_file = body.get("delete_file", False)
        if not isinstance(delete_file, bool):
            raise BadReport("delete_file must be true or false")
        message = await actions.remove_image(cfg, ctx.sessions, name, delete_file=delete_file)
        return web.json_response({"message": message})
    except BadReport as exc:
        return json_error(400, str(exc))
    except CatalogError as exc:
        return json_error(409, str(exc))


def setup(app: web.Application) -> None:
    app.add_routes(routes)
