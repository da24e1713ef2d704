"""``GET /api/nodes/{mac}/plan``: everything the imaging agent needs for this boot, in one answer.

The plan itself is decided in :mod:`netdeploy.boot.agent`; this route checks the request and
renders it. ``?format=sh`` answers with shell assignments the busybox agent sources; values are
single-quoted so nothing in them is executed. ``?zstd=1``: the agent's media can decompress a
raw+zstd image onto the disk (``ndcap unzstd``); without it such an image is refused.
"""

from __future__ import annotations

import shlex
from typing import Any

from aiohttp import web

from netdeploy.boot.agent import PlanRefused, agent_plan
from netdeploy.http.auth import refuse
from netdeploy.http.common import ctx_of, mac_param, request_token
from netdeploy.store.outage import RETRY_AFTER_S

routes = web.RouteTableDef()


@routes.get("/api/nodes/{mac}/plan")
async def plan(request: web.Request) -> web.Response:
    mac = mac_param(request)
    try:
        body = await agent_plan(
            ctx_of(request),
            mac,
            request_token(request),
            ip=request.remote,
            path=request.path,
            unzstd=request.query.get("zstd") == "1",
        )
    except PlanRefused as exc:
        return refuse(request, exc.status, str(exc), mac=mac, forbidden=exc.status in (401, 403))
    if request.query.get("format") == "sh":
        return web.Response(
            text=as_shell(body), content_type="text/plain", headers={"Cache-Control": "no-store"}
        )
    return web.json_response(body, headers={"Cache-Control": "no-store"})


def as_shell(body: dict[str, Any]) -> str:
    image = body["image"] or {}
    values = {
        "ND_STATE": body["state"],
        "ND_MODE": body["mode"],
        "ND_WHY": body["why"],
        "ND_HOSTNAME": body["hostname"] or "",
        "ND_IMAGE": image.get("name", ""),
        "ND_IMAGE_URL": image.get("url", ""),
        "ND_IMAGE_SHA256": image.get("sha256", ""),
        "ND_IMAGE_SIZE": str(image.get("size", "")),
        "ND_IMAGE_SPARSE_URL": image.get("sparse_url", ""),
        # raw: the disk is the served bytes (ND_IMAGE_SHA256/SIZE); raw+zstd: the disk is what
        # they decompress to, ND_IMAGE_RAW_SIZE bytes hashing to ND_IMAGE_RAW_SHA256
        "ND_IMAGE_FORMAT": image.get("format", ""),
        "ND_IMAGE_RAW_SIZE": str(image.get("raw_size") or ""),
        "ND_IMAGE_RAW_SHA256": image.get("raw_sha256") or "",
        "ND_DISK": body["disk"],
        # empty: stream over HTTP; else the join URL for the media's multicast receiver
        "ND_MULTICAST": (
            f"{body['distribution']['join']}&format=args"
            if body["distribution"]["mode"] == "multicast"
            else ""
        ),
        # the outage pause (Retry-After): busybox wget does not show it on a 503 answer
        "ND_RETRY_AFTER": str(RETRY_AFTER_S),
        "ND_CAPTURE_URL": (body.get("capture") or {}).get("url", ""),
        "ND_CAPTURE_IMAGE": (body.get("capture") or {}).get("image", ""),
        "ND_GATE_TIMEOUT": str(body["gate_timeout"]),
        "ND_INJECT": " ".join(
            f"{t['partition']}:{t['fs']}:{t['path']}:{t['file']}" for t in body["inject"]
        ),
    }
    return "".join(f"{key}={shlex.quote(value)}\n" for key, value in values.items())


def setup(app: web.Application) -> None:
    app.add_routes(routes)
