"""Build the aiohttp application: one module per area adds its routes."""

from __future__ import annotations

import logging

from aiohttp import web

from netdeploy.boot.service import BootService
from netdeploy.context import Context
from netdeploy.http import (
    admin_routes,
    agent_plan,
    agent_routes,
    api,
    auth,
    boot_routes,
    capture_routes,
    cluster_page,
    dashboard,
    events_routes,
    image_admin_routes,
    image_routes,
    multicast_routes,
    node_page,
    sparse_routes,
)
from netdeploy.http.common import BOOT, CTX, IMAGES, MULTICAST, RELOADER
from netdeploy.http.errors import errors, quiet_protocol_errors
from netdeploy.images.streams import ImageStreams
from netdeploy.multicast.service import MulticastService
from netdeploy.reload import Reloader

log = logging.getLogger("netdeploy.http")

# Modules with a ``setup(app)`` that adds their routes; each area of the product owns one.
ROUTE_MODULES = [
    api,
    boot_routes,
    agent_plan,
    agent_routes,
    admin_routes,
    dashboard,
    events_routes,
    multicast_routes,
    image_routes,
    capture_routes,
    sparse_routes,
    image_admin_routes,
    node_page,
    cluster_page,
]


def build_app(
    ctx: Context,
    *,
    boot: BootService | None = None,
    images: ImageStreams | None = None,
    multicast: MulticastService | None = None,
    reloader: Reloader | None = None,
) -> web.Application:
    """The HTTP adapter over the services the composition root built (server.py).

    ``boot``, ``images`` and ``reloader`` default to fresh ones over ``ctx`` (tests build apps
    alone);
    without ``multicast`` the multicast routes answer 503.
    """
    quiet_protocol_errors()
    # outermost first: errors turns what escapes into an answer (an unreachable store into
    # 503 before anything reads it as a bug) and counts every response; then declared auth
    app = web.Application(middlewares=[errors, auth.declared_auth], client_max_size=1024**2)
    app[CTX] = ctx
    app[BOOT] = boot or BootService(ctx)
    app[IMAGES] = images or ImageStreams.from_config(ctx.config.http)
    app[RELOADER] = reloader or Reloader(ctx)
    if multicast is not None:
        app[MULTICAST] = multicast
    for module in ROUTE_MODULES:
        module.setup(app)
    auth.setup(app)  # every route's level is declared in http/auth.py (ROUTES)
    return app
