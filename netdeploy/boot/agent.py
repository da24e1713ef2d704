"""What the imaging agent does in this boot, in full: the plan behind ``GET /api/nodes/{mac}/plan``.

The boot script tells the agent *that* it images or waits (``nd.mode``); the plan tells it *what*:
the image (ready to serve or not, and why), how it is distributed (its own HTTP stream or the
cluster's multicast session), the target disk, and where each answer file goes inside the
written image. The decision is the boot plan's (:func:`netdeploy.boot.plan.boot_plan`); the
HTTP route only checks the request and renders this as JSON or shell.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from netdeploy import eventlog
from netdeploy.boot.plan import BootAction, BootUrls, boot_plan
from netdeploy.boot.service import facts_of
from netdeploy.config import Config, NodeConfig
from netdeploy.context import Context, Refusal
from netdeploy.store.models import Cluster, Image, Node
from netdeploy.store.retry import read_retrying
from netdeploy.tokens import token_matches

MULTICAST_OFF = (
    'distribution = "multicast" but [multicast] enabled = false: streaming over HTTP; '
    "set [multicast] enabled = true to image by multicast"
)


class PlanRefused(Refusal):
    """The plan is not handed out; ``status`` is the HTTP status, the message what to do."""


@dataclass(frozen=True)
class ImageRef:
    name: str
    url: str
    sha256: str
    size: int


def image_plan(public_url: str, node: Node, image: Image | None) -> tuple[ImageRef | None, str]:
    """The image part of the plan, or None and why the node cannot be imaged now."""
    if node.image is None:
        return None, "no image is configured for this node"
    if image is None or image.status != "ok" or not image.sha256 or not image.size:
        status = image.status if image else "unknown"
        return None, (
            f"image {node.image} is not ready to serve (status {status}); "
            f"run `netdeploy image add {node.image} PATH`"
        )
    url = f"{public_url}/images/{image.name}?mac={node.mac}"
    return ImageRef(image.name, url, image.sha256, image.size), ""


def distribution(
    cfg: Config, public_url: str, node_cfg: NodeConfig, image: str, mac: str
) -> dict[str, str]:
    """How the agent receives the image: its own HTTP stream, or the cluster's multicast session.

    The join URL is what the agent POSTs to; the session it answers with may still turn out to
    be unicast (late joiner, no free ports), which the agent handles the same way.
    """
    if cfg.distribution_for(node_cfg) != "multicast":
        return {"mode": "unicast"}
    if not cfg.multicast.enabled:
        return {"mode": "unicast", "why": MULTICAST_OFF}
    query = urlencode({"image": image, "mac": mac})
    return {"mode": "multicast", "join": f"{public_url}/api/multicast/join?{query}"}


async def agent_plan(
    ctx: Context, mac: str, token: str | None, *, ip: str | None, path: str
) -> dict[str, Any]:
    """The plan for ``mac``, for the holder of its current boot token; else :class:`PlanRefused`
    (recorded as an ``auth`` event with the requester's address)."""

    async def read() -> tuple[Node | None, Cluster | None, Image | None]:
        async with ctx.sessions() as session:
            node = await session.get(Node, mac)
            if node is None:
                return None, None, None
            cluster = await session.get(Cluster, node.cluster) if node.cluster else None
            image = await session.get(Image, node.image) if node.image else None
            return node, cluster, image

    node, cluster, image = await read_retrying(read)  # a busy store never fails an agent
    if node is None:
        raise PlanRefused(404, f"no node with MAC {mac}; boot it first to be discovered")
    authorised = token_matches(token, node.token)
    if not authorised:
        event = eventlog.refusal(
            forbidden=True,
            mac=mac,
            cluster=node.cluster,
            path=path,
            ip=ip,
            reason="bad or missing token",
        )
        async with ctx.sessions() as session, session.begin():
            session.add(event)
        ctx.bus.publish(event)
        raise PlanRefused(
            403, "this plan needs the node's current token (Authorization: Bearer, from nd.token=)"
        )
    decision = boot_plan(facts_of(node, mac, cluster), BootUrls(ctx.public_url))
    body: dict[str, Any] = {
        "mac": mac,
        "hostname": node.hostname,
        "state": node.state,
        "mode": str(decision.action),
        "why": decision.why,
        "image": None,
        "disk": "auto",
        "inject": [],
        # how long the agent's gate long-poll asks for: the server's limit, so any configured
        # [http] gate_poll_timeout is one the agent can use
        "gate_timeout": int(ctx.config.http.gate_poll_timeout),
        "distribution": {"mode": "unicast"},
    }
    cfg = ctx.config
    node_cfg = cfg.node_by_mac(mac)
    if node_cfg is not None:
        if node_cfg.hardware:
            body["disk"] = cfg.hardware[node_cfg.hardware].disk
        body["inject"] = [t.model_dump() for t in cfg.inject_for(node_cfg)]
    if decision.action == BootAction.IMAGE:
        ref, problem = image_plan(ctx.public_url, node, image)
        if ref is None:
            body.update(mode="error", why=problem)
        else:
            body["image"] = {
                "name": ref.name,
                "url": ref.url,
                "sha256": ref.sha256,
                "size": ref.size,
            }
            if node_cfg is not None:
                body["distribution"] = distribution(cfg, ctx.public_url, node_cfg, ref.name, mac)
    return body
