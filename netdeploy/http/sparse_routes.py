"""``GET /images/{name}/sparse``: a raw image as sparse segments, for agents with ``ndcap``.

The same format as network capture (netdeploy.images.sparse): concatenated zstd frames, each
one segment holding only the non-zero 64 KiB blocks; the agent's ``ndcap unpack`` writes them
to the disk and writes the skipped blocks as zeros itself, so the disk ends up byte for byte
the image (the agent still verifies its sha256) while only the data crosses the network.
Holes of a sparse image file are skipped without reading (SEEK_DATA).

Servable as ``/images/{name}`` is (catalog ``ok`` and the file unchanged, re-checked before
every segment; a change cuts the stream short). ``raw+zstd`` images are refused with 409: the
agent then streams ``/images/{name}`` as before. ``?mac=`` names the node for the event log.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

from netdeploy import eventlog
from netdeploy.http.auth import refuse
from netdeploy.http.common import ctx_of, json_error
from netdeploy.http.image_routes import may_stream
from netdeploy.images import catalog, sparse
from netdeploy.images.capture import SEGMENT
from netdeploy.images.catalog import NotServable
from netdeploy.inventory import BadMac, normalize_mac
from netdeploy.store.models import Cluster, Image, Node

log = logging.getLogger("netdeploy.http.sparse")
routes = web.RouteTableDef()


@routes.get("/images/{name}/sparse")
async def sparse_image(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    name = request.match_info["name"]
    if not catalog.IMAGE_NAME.match(name) or name not in ctx.config.images:
        return json_error(404, f"no image named {name!r}; see GET /api/images")
    mac = None
    if request.query.get("mac"):
        try:
            mac = normalize_mac(request.query["mac"])
        except BadMac as exc:
            return json_error(400, f"{exc} (in ?mac=)")
    async with ctx.sessions() as session:
        row = await session.get(Image, name)
        node = await session.get(Node, mac) if mac else None
        cluster = await session.get(Cluster, node.cluster) if node and node.cluster else None
    refusal = may_stream(request, name, node, cluster)  # the same rule as /images/{name}
    if refusal is not None:
        return refuse(request, 403, refusal, mac=mac)
    try:
        if row is None:
            raise NotServable(name, catalog.UNHASHED, f"image {name!r} is not in the store yet")
        catalog.check_row(ctx.config, row)
        if row.format != "raw":
            return json_error(409, f"image {name} is {row.format}: fetch /images/{name}")
        image = await asyncio.to_thread(catalog.open_checked, row)
    except NotServable as exc:
        if row is not None:
            await catalog.mark_not_servable(ctx.sessions, ctx.bus, exc, row)
        return json_error(409, exc.reason, image=name, status=exc.status)
    size = image.identity.size
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/x-netdeploy-sparse+zstd",
            "X-Image-SHA256": row.sha256 or "",
            "X-Image-Size": str(size),
            "Cache-Control": "no-cache",
        }
    )
    started, sent, complete, why = time.monotonic(), 0, False, ""
    try:
        await response.prepare(request)
        for offset in range(0, size, SEGMENT):
            changed = image.still_same()
            if changed:  # changed under us: cut short, never a mix of two images
                why = f"image changed while streaming: {changed}"
                break
            frame = await asyncio.to_thread(
                sparse.encode_frame, image.fh, offset, min(SEGMENT, size - offset)
            )
            await response.write(frame)
            sent += len(frame)
        else:
            complete = True
            await response.write_eof()
    except (ConnectionResetError, asyncio.CancelledError) as exc:
        why = f"client went away ({type(exc).__name__})"
        if isinstance(exc, asyncio.CancelledError):
            raise
    finally:
        image.close()
        event = eventlog.transfer(
            "http",
            mac,
            None,
            **{
                "what": "image-sparse",
                "image": name,
                "image_size": size,
                "bytes_sent": sent,
                "seconds": round(time.monotonic() - started, 3),
                "complete": complete,
                "reason": why,
                "ip": request.remote,
            },
        )
        async with ctx.sessions() as session, session.begin():
            session.add(event)
        ctx.bus.publish(event)
    return response


def setup(app: web.Application) -> None:
    app.add_routes(routes)
