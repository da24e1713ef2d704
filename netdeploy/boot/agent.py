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

from netdeploy.boot.plan import BootAction, BootUrls, boot_plan
from netdeploy.boot.service import facts_of, hardware_of
from netdeploy.config import Config, NodeConfig
from netdeploy.context import Context, Refusal
from netdeploy.rollout.identity import claim_valid
from netdeploy.store.models import Capture, Cluster, Image, Node
from netdeploy.store.retry import read_retrying

MULTICAST_OFF = (
    'distribution = "multicast" but [multicast] enabled = false: streaming over HTTP; '
    "set [multicast] enabled = true to image by multicast"
)


# an agent whose media cannot decompress zstd would write the compressed bytes to the disk;
# it asks for its plan without ?zstd=1 (old media, or media built without libzstd-dev)
NO_UNZSTD = (
    "image {name} is stored as raw+zstd, but this node's startup media cannot decompress it "
    "onto the disk (its agent did not ask with ?zstd=1: the media has no /bin/ndcap, or predates "
    "it); nothing was written. Rebuild the media with `netdeploy media build` on a host with gcc "
    'and libzstd-dev (its manifest.json then says "capture_streamer": "bin/ndcap") and '
    'PXE-boot the node again, or add the image uncompressed: format = "raw" in '
    "[images.{name}] and `netdeploy image add {name} PATH` without --compress"
)
NO_RAW_FACTS = (
    "image {name} is raw+zstd but its catalog entry has no raw_size/raw_sha256 (what the disk "
    "must hash to); run `netdeploy image add {name} PATH --compress zstd` again"
)
MULTICAST_ZSTD = (
    'distribution = "multicast" but image {name} is raw+zstd: the agent decompresses one '
    "stream from byte 0, which a multicast session with repairs by byte range cannot feed; "
    'streaming over HTTP. Add the image with format = "raw" to image it by multicast'
)


class PlanRefused(Refusal):
    """The plan is not handed out; ``status`` is the HTTP status, the message what to do."""


@dataclass(frozen=True)
class ImageRef:
    name: str
    url: str
    sha256: str
    size: int
    # a captured image goes back as it came: only its non-zero blocks (http/sparse_routes);
    # other images keep the whole-image stream with its ?offset= resume
    sparse_url: str | None = None
    # "raw": the disk is the served bytes (sha256/size). "raw+zstd": the served bytes are a
    # zstd stream; the disk is what it decompresses to, raw_size bytes hashing to raw_sha256
    format: str = "raw"
    raw_size: int | None = None
    raw_sha256: str | None = None

    def as_plan(self) -> dict[str, Any]:
        plan: dict[str, Any] = {
            "name": self.name,
            "url": self.url,
            "sha256": self.sha256,
            "size": self.size,
            "format": self.format,
        }
        if self.sparse_url:
            plan["sparse_url"] = self.sparse_url
        if self.format == "raw+zstd":
            plan.update(raw_size=self.raw_size, raw_sha256=self.raw_sha256)
        return plan


def image_plan(
    public_url: str, node: Node, image: Image | None, *, unzstd: bool = False
) -> tuple[ImageRef | None, str]:
    """The image part of the plan, or None and why the node cannot be imaged now.

    ``unzstd``: the agent said its media decompresses zstd onto the disk (``?zstd=1``); without
    it a raw+zstd image is refused here, before the agent writes anything.
    """
    if node.image is None:
        return None, "no image is configured for this node"
    if image is None or image.status != "ok" or not image.sha256 or not image.size:
        status = image.status if image else "unknown"
        return None, (
            f"image {node.image} is not ready to serve (status {status}); "
            f"run `netdeploy image add {node.image} PATH`"
        )
    url = f"{public_url}/images/{image.name}?mac={node.mac}"
    facts = image.facts or {}
    if image.format == "raw+zstd":
        raw_size, raw_sha256 = facts.get("raw_size"), facts.get("raw_sha256")
        if not isinstance(raw_size, int) or raw_size <= 0 or not isinstance(raw_sha256, str):
            return None, NO_RAW_FACTS.format(name=image.name)
        if not unzstd:
            return None, NO_UNZSTD.format(name=image.name)
        return ImageRef(
            image.name, url, image.sha256, image.size, None, image.format, raw_size, raw_sha256
        ), ""
    if image.format != "raw":  # a format this server cannot deploy is never handed out
        return None, f"image {image.name} has format {image.format!r}, which no agent can write"
    sparse = None
    if facts.get("captured_from"):
        sparse = f"{public_url}/images/{image.name}/sparse?mac={node.mac}"
    return ImageRef(image.name, url, image.sha256, image.size, sparse), ""


def distribution(
    cfg: Config, public_url: str, node_cfg: NodeConfig, image: ImageRef, mac: str
) -> dict[str, str]:
    """How the agent receives the image: its own HTTP stream, or the cluster's multicast session.

    The join URL is what the agent POSTs to; the session it answers with may still turn out to
    be unicast (late joiner, no free ports), which the agent handles the same way. A raw+zstd
    image always streams over HTTP (decision 0019).
    """
    if cfg.distribution_for(node_cfg) != "multicast":
        return {"mode": "unicast"}
    if not cfg.multicast.enabled:
        return {"mode": "unicast", "why": MULTICAST_OFF}
    if image.format != "raw":
        return {"mode": "unicast", "why": MULTICAST_ZSTD.format(name=image.name)}
    query = urlencode({"image": image.name, "mac": mac})
    return {"mode": "multicast", "join": f"{public_url}/api/multicast/join?{query}"}


async def agent_plan(
    ctx: Context, mac: str, token: str | None, *, ip: str | None, path: str, unzstd: bool = False
) -> dict[str, Any]:
    """The plan for ``mac``, for the agent that claimed it in this boot phase; else
    :class:`PlanRefused` (the route records it with the requester's address). ``unzstd``: the
    agent can decompress a raw+zstd image onto the disk (:func:`image_plan`)."""

    async def read() -> tuple[Node | None, Cluster | None, Image | None, Capture | None]:
        async with ctx.sessions() as session:
            node = await session.get(Node, mac)
            if node is None:
                return None, None, None, None
            cluster = await session.get(Cluster, node.cluster) if node.cluster else None
            image = await session.get(Image, node.image) if node.image else None
            return node, cluster, image, await session.get(Capture, mac)

    node, cluster, image, capture = await read_retrying(read)  # a busy store fails no agent
    if node is None:
        raise PlanRefused(404, f"no node with MAC {mac}; boot it first to be discovered")
    if not claim_valid(node, cluster, token):
        # recorded by the HTTP layer, off the rollout writer (netdeploy.http.auth.refuse)
        raise PlanRefused(
            403,
            "this plan needs the agent's claim of this boot phase (Authorization: Bearer "
            "<secret>, after POST /api/nodes/{mac}/claim with the nd.token= boot token)",
        )
    cfg = ctx.config  # one config for the whole plan, even if a reload swaps it meanwhile
    hardware = await hardware_of(ctx, mac)
    decision = boot_plan(
        facts_of(node, mac, cluster, capture, hardware.refusal), BootUrls(ctx.public_url)
    )
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
        "capture": None,
        "hardware": hardware.profile,
    }
    node_cfg = cfg.node_by_mac(mac)
    if node_cfg is not None:
        if hardware.profile in cfg.hardware:
            body["disk"] = cfg.hardware[hardware.profile].disk
        body["inject"] = [t.model_dump() for t in cfg.inject_for(node_cfg)]
    if decision.action == BootAction.CAPTURE and capture is not None:
        body["capture"] = {  # netdeploy.http.capture_routes
            "image": capture.image,
            "url": f"{ctx.public_url}/api/nodes/{mac}/capture",
        }
    if decision.refused:  # the agent reports it failed, with the PCI ID; the disk is untouched
        body.update(mode="error", why=decision.why, missing_drivers=list(hardware.missing))
    if decision.action == BootAction.IMAGE:
        ref, problem = image_plan(ctx.public_url, node, image, unzstd=unzstd)
        if ref is None:
            body.update(mode="error", why=problem)
        else:
            body["image"] = ref.as_plan()
            if node_cfg is not None:
                body["distribution"] = distribution(cfg, ctx.public_url, node_cfg, ref, mac)
    return body
