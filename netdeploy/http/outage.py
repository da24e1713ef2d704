"""Outages answered as outages: 503 with ``Retry-After``, never a 500 and a traceback.

When the store cannot be reached (PostgreSQL restarting, the network to it cut), a handler's
query raises. The error middleware (``http/errors.py``) asks here first, before it reads an
exception as a bug, and turns exactly those failures (:func:`netdeploy.store.outage.
is_outage`) into ``503 Service Unavailable`` with ``Retry-After`` and logs the outage once
(:data:`netdeploy.store.outage.OUTAGE`), not a traceback per request. Any other exception is
left alone: a bug still shows as a bug.

It also adds ``Retry-After`` to a 503 a handler answered itself (the rollout writer's "could not
be stored; retry"), so every 503 tells the client when to come back. The agent waits that long;
iPXE's first stage retries on its own (bootfiles/templates/boot.ipxe.j2).
"""

from __future__ import annotations

from aiohttp import web

from netdeploy.http.common import json_error
from netdeploy.store.outage import OUTAGE, RETRY_AFTER_S

RETRY_HEADERS = {"Retry-After": str(RETRY_AFTER_S), "Cache-Control": "no-store"}


def outage_response(request: web.Request) -> web.Response:
    message = (
        f"netdeploy cannot reach its database right now; nothing was changed, retry in "
        f"{RETRY_AFTER_S} s"
    )
    if request.path.startswith("/api/"):
        response = json_error(503, message)
    else:
        response = web.Response(status=503, text=message + "\n")
    response.headers.update(RETRY_HEADERS)
    return response


def answered(request: web.Request, exc: Exception) -> web.Response:
    """The answer to ``exc``, which :func:`~netdeploy.store.outage.is_outage` said is an
    outage: logged once per outage (not per request), 503 with ``Retry-After``."""
    OUTAGE.failed("http", f"{request.method} {request.path}", exc)
    return outage_response(request)


def with_retry_after(response: web.StreamResponse) -> web.StreamResponse:
    """A 503 a handler answered itself gets ``Retry-After`` too (if it has none yet)."""
    if response.status == 503 and not response.prepared and "Retry-After" not in response.headers:
        response.headers.update(RETRY_HEADERS)
    return response
