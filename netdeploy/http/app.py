"""Build the aiohttp application: one module per area adds its routes."""

from __future__ import annotations

import json
import logging

from aiohttp import web

from netdeploy.http import api, image_routes
from netdeploy.http.common import CTX, json_error
from netdeploy.server import Context

log = logging.getLogger("netdeploy.http")

# Modules with a ``setup(app)`` that adds their routes; each area of the product owns one.
ROUTE_MODULES = [api, image_routes]


@web.middleware
async def errors_as_json(request: web.Request, handler):  # type: ignore[no-untyped-def]
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if (
            exc.status < 400
            or exc.content_type == "application/json"
            or (not request.path.startswith("/api/"))
        ):
            raise
        return json_error(exc.status, exc.reason if exc.text is None else exc.text)
    except json.JSONDecodeError as exc:
        return json_error(400, f"request body is not valid JSON: {exc}")


def build_app(ctx: Context) -> web.Application:
    app = web.Application(middlewares=[errors_as_json], client_max_size=1024**2)
    app[CTX] = ctx
    for module in ROUTE_MODULES:
        module.setup(app)
    return app
