"""``GET /api/nodes/{mac}/plan``: everything the imaging agent needs for this boot, in one answer.

The boot script tells the agent *that* it images or waits (``nd.mode``); the plan tells it *what*:
the image URL, its size and sha256 (the agent verifies the written disk against it), the target
disk, and where each answer file goes inside the written image. ``?format=sh`` answers with shell
assignments the busybox agent sources; values are single-quoted so nothing in them is executed.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from aiohttp import web

from netdeploy.boot.plan import BootAction, boot_plan
from netdeploy.boot.service import facts_of, urls_of
from netdeploy.config import NodeConfig
from netdeploy.http.common import ctx_of, json_error, mac_param, request_token
from netdeploy.store.models import Capture, Cluster, Event, Image, Node
from netdeploy.tokens import token_matches

if TYPE_CHECKING:
    from netdeploy.server import Context

routes = web.RouteTableDef()


def image_plan(ctx: Context, node: Node, image: Image | None) -> tuple[dict[str, Any] | None, str]:
    """The image part of the plan, or None and why the node cannot be imaged now."""
    if node.image is None:
        return None, "no image is configured for this node"
    if image is None or image.status != "ok" or not image.sha256 or not image.size:
        status = image.status if image else "unknown"
        return None, (
            f"image {node.image} is not ready to serve (status {status}); "
            f"run `netdeploy image add {node.image} PATH`"
        )
    url = f"{ctx.public_url}/images/{image.name}?mac={node.mac}"
    plan = {"name": image.name, "url": url, "sha256": image.sha256, "size": image.size}
    # a captured image goes back as it came: only its non-zero blocks (sparse_routes); other
    # images keep the whole-image stream with its ?offset= resume
    if image.format == "raw" and (image.facts or {}).get("captured_from"):
        plan["sparse_url"] = f"{ctx.public_url}/images/{image.name}/sparse?mac={node.mac}"
    return plan, ""


@routes.get("/api/nodes/{mac}/plan")
async def plan(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    mac = mac_param(request)
    async with ctx.sessions() as session:
        node = await session.get(Node, mac)
        if node is None:
            return json_error(404, f"no node with MAC {mac}; boot it first to be discovered")
        if not token_matches(request_token(request), node.token):
            cluster_name = node.cluster
            await session.rollback()  # end the read's implicit transaction before writing
            async with session.begin():
                session.add(
                    Event(
                        kind="auth",
                        mac=mac,
                        cluster=cluster_name,
                        detail={
                            "path": request.path,
                            "ip": request.remote,
                            "reason": "bad or missing token",
                        },
                    )
                )
            return json_error(
                403,
                "this plan needs the node's current token (Authorization: Bearer, from nd.token=)",
            )
        cluster = await session.get(Cluster, node.cluster) if node.cluster else None
        image = await session.get(Image, node.image) if node.image else None
        capture = await session.get(Capture, mac)
    decision = boot_plan(facts_of(node, mac, cluster, capture), urls_of(ctx))
    body: dict[str, Any] = {
        "mac": mac,
        "hostname": node.hostname,
        "state": node.state,
        "mode": str(decision.action),
        "why": decision.why,
        "image": None,
        "disk": "auto",
        "inject": [],
        "distribution": {"mode": "unicast"},
        "capture": None,
    }
    node_cfg = ctx.config.node_by_mac(mac)
    if node_cfg is not None:
        if node_cfg.hardware:
            body["disk"] = ctx.config.hardware[node_cfg.hardware].disk
        body["inject"] = [t.model_dump() for t in ctx.config.inject_for(node_cfg)]
    if decision.action == BootAction.CAPTURE and capture is not None:
        body["capture"] = {  # netdeploy.http.capture_routes
            "image": capture.image,
            "url": f"{ctx.public_url}/api/nodes/{mac}/capture",
        }
    if decision.action == BootAction.IMAGE:
        body["image"], problem = image_plan(ctx, node, image)
        if problem:
            body.update(mode="error", why=problem)
        elif node_cfg is not None:
            body["distribution"] = distribution(ctx, node_cfg, body["image"]["name"], mac)
    if request.query.get("format") == "sh":
        return web.Response(
            text=as_shell(body), content_type="text/plain", headers={"Cache-Control": "no-store"}
        )
    return web.json_response(body, headers={"Cache-Control": "no-store"})


MULTICAST_OFF = (
    'distribution = "multicast" but [multicast] enabled = false: streaming over HTTP; '
    "set [multicast] enabled = true to image by multicast"
)


def distribution(ctx: Context, node_cfg: NodeConfig, image: str, mac: str) -> dict[str, str]:
    """How the agent receives the image: its own HTTP stream, or the cluster's multicast session.

    The join URL is what the agent POSTs to; the session it answers with may still turn out to
    be unicast (late joiner, no free ports), which the agent handles the same way.
    """
    if ctx.config.distribution_for(node_cfg) != "multicast":
        return {"mode": "unicast"}
    if not ctx.config.multicast.enabled:
        return {"mode": "unicast", "why": MULTICAST_OFF}
    query = urlencode({"image": image, "mac": mac})
    return {"mode": "multicast", "join": f"{ctx.public_url}/api/multicast/join?{query}"}


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
        "ND_DISK": body["disk"],
        # empty: stream over HTTP; else the join URL for the media's multicast receiver
        "ND_MULTICAST": (
            f"{body['distribution']['join']}&format=args"
            if body["distribution"]["mode"] == "multicast"
            else ""
        ),
        "ND_CAPTURE_URL": (body.get("capture") or {}).get("url", ""),
        "ND_CAPTURE_IMAGE": (body.get("capture") or {}).get("image", ""),
        "ND_INJECT": " ".join(
            f"{t['partition']}:{t['fs']}:{t['path']}:{t['file']}" for t in body["inject"]
        ),
    }
    return "".join(f"{key}={shlex.quote(value)}\n" for key, value in values.items())


def setup(app: web.Application) -> None:
    app.add_routes(routes)
