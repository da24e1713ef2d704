"""``GET|HEAD /images/{name}``: image bytes for the agent; ``/api/images``, ``/api/transfers``.

The contract the agent relies on (docs/images.md has the full table):
- ``ETag: "sha256-<hex>"`` (strong), ``X-Image-SHA256: <hex>``, ``Repr-Digest`` (RFC 9530) and
  ``Digest`` (RFC 3230) carry the sha256 of the whole image on every 200/206/HEAD.
- ``?offset=N&sha256=<hex>[&length=L]``: the bytes from N (L of them, default to the end) as a
  200, for busybox wget (which refuses 206 into a pipe); a different image is refused (409),
  never mixed. The multicast agent fills the ranges its session missed this way.
- One byte range per request (206); resume with ``Range`` + ``If-Range: <ETag>`` so a re-added
  image comes back whole (200) instead of being spliced onto the old one.
- Identify with ``?mac=`` or ``X-Netdeploy-Mac`` so the dashboard shows per-node bytes.
- 404 unknown image, 409 image not servable (re-add it), 412 If-Match failed, 416 bad range,
  503 + Retry-After when ``http.max_image_streams`` transfers are running.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

from aiohttp import web
from sqlalchemy import select

from netdeploy import eventlog
from netdeploy.context import Context
from netdeploy.http.auth import is_admin, refuse
from netdeploy.http.common import IMAGES, ctx_of, json_error, request_token
from netdeploy.http.sendfile import FileSender
from netdeploy.images import catalog
from netdeploy.images.admission import Slot, ordinal
from netdeploy.images.catalog import NotServable, OpenImage
from netdeploy.images.ranges import (
    RangeError,
    etag_for,
    http_date,
    if_match_fails,
    if_none_match_hits,
    if_range_allows,
    parse_range,
)
from netdeploy.images.streams import ANONYMOUS, REFUSED, ImageStreams, Stream
from netdeploy.inventory import BadMac, NodeState, normalize_mac
from netdeploy.rollout.identity import claim_valid
from netdeploy.store.models import Cluster, Image, Node
from netdeploy.store.retry import read_retrying

log = logging.getLogger("netdeploy.images")
routes = web.RouteTableDef()

# Bodies up to this size (a partition table, a probe) never need a stream slot, so a busy
# server still answers them; everything larger counts against http.max_image_streams.
SMALL_BODY = 1024 * 1024
# The file is checked unchanged (one fstat) after every this many bytes sent. Each sendfile(2)
# call sends at most sendfile.MAX_PER_CALL, so streams take turns (decision 0017).
SENDFILE_CHUNK = 16 * 1024 * 1024


def service_of(request: web.Request) -> ImageStreams:
    return request.app[IMAGES]


def _client_mac(request: web.Request) -> str | None:
    """The agent's MAC from ``?mac=`` or ``X-Netdeploy-Mac``; BadMac when malformed/conflicting.

    Only for accounting: a MAC we do not know streams all the same, counted as anonymous.
    """
    given = {v for v in (request.query.get("mac"), request.headers.get("X-Netdeploy-Mac")) if v}
    macs = {normalize_mac(v) for v in given}
    if len(macs) > 1:
        raise BadMac("?mac= and X-Netdeploy-Mac name different MACs; send one")
    return macs.pop() if macs else None


IMAGING_STATES = frozenset({NodeState.PXE, NodeState.IMAGING})


def may_stream(
    request: web.Request, name: str, node: Node | None, cluster: Cluster | None
) -> str | None:
    """None when the caller may have image ``name``: the admin, or the agent that claimed a
    node (``?mac=``) whose plan writes this image now; else why not."""
    token = request_token(request)
    if is_admin(request, token):
        return None
    if node is None:
        return (
            f"image {name} is streamed to a node being imaged (?mac=<its MAC> and its agent's "
            "claim as Bearer) or with the admin token"
        )
    if not claim_valid(node, cluster, token):
        return f"not the claim of {node.mac}'s current boot phase; PXE-boot it again"
    if node.image != name or node.state not in IMAGING_STATES:
        return f"{node.mac} is {node.state} with image {node.image}: its plan does not write {name}"
    return None


def _problem(http_status: int, reason: str, message: str, **extra: Any) -> web.Response:
    """A JSON error (``{"error": ..., ...}``), counted by ``reason`` in the metrics."""
    REFUSED.labels(reason).inc()
    return web.json_response({"error": message, **extra}, status=http_status)


def _validators(row: Image) -> dict[str, str]:
    assert row.sha256 and row.mtime_ns is not None
    b64 = base64.b64encode(bytes.fromhex(row.sha256)).decode()
    headers = {
        "ETag": etag_for(row.sha256),
        "Last-Modified": http_date(row.mtime_ns),
        "Accept-Ranges": "bytes",
        "Cache-Control": "no-cache",  # revalidate: an image may be re-added under the same URL
        "X-Image-SHA256": row.sha256,
        "Repr-Digest": f"sha-256=:{b64}:",  # RFC 9530 §3: digest of the whole representation
        "Digest": f"SHA-256={b64}",  # RFC 3230 §4.3.2, for older clients
        "X-Image-Format": row.format,
    }
    facts = row.facts or {}
    if "raw_sha256" in facts:  # zstd: what the disk must hash to after decompression
        headers["X-Image-Raw-SHA256"] = facts["raw_sha256"]
        headers["X-Image-Raw-Size"] = str(facts["raw_size"])
    return headers


@routes.get("/images/{name}")  # aiohttp adds HEAD for GET routes
async def get_image(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    name = request.match_info["name"]
    if not catalog.IMAGE_NAME.match(name) or name not in ctx.config.images:
        return _problem(
            404,
            "unknown",
            f"no image named {name!r}; see GET /api/images",
            images=sorted(ctx.config.images),
        )
    try:
        mac = _client_mac(request)
    except BadMac as exc:
        return _problem(400, "bad_mac", f"{exc} (in ?mac= or X-Netdeploy-Mac)")

    async def read() -> tuple[Image | None, Node | None, Cluster | None]:
        async with ctx.sessions() as session:
            row = await session.get(Image, name)
            node = await session.get(Node, mac) if mac else None
            cluster = await session.get(Cluster, node.cluster) if node and node.cluster else None
            return row, node, cluster

    row, node, cluster = await read_retrying(read)  # a busy store never fails a download
    refusal = may_stream(request, name, node, cluster)
    if refusal is not None:
        REFUSED.labels("auth").inc()
        return refuse(request, 403, refusal, mac=mac)
    try:
        if row is None:
            raise NotServable(name, catalog.UNHASHED, f"image {name!r} is not in the store yet")
        catalog.check_row(ctx.config, row)
        image = await asyncio.to_thread(catalog.open_checked, row)
    except NotServable as exc:
        if row is not None:
            await catalog.mark_not_servable(ctx.sessions, ctx.bus, exc, row)
        log.warning("not serving image %s: %s", name, exc.reason)
        return _problem(409, "not_servable", exc.reason, image=name, status=exc.status)
    try:
        return await _respond(request, ctx, row, image, node)
    finally:
        image.close()


async def _respond(
    request: web.Request, ctx: Context, row: Image, image: OpenImage, node: Node | None
) -> web.StreamResponse:
    size = image.identity.size
    headers = _validators(row)
    etag = headers["ETag"]
    # RFC 9110 §13.2.2: evaluate If-Match, then If-None-Match, then If-Range
    if if_match_fails(request.headers.get("If-Match"), etag):
        return _problem(
            412,
            "precondition",
            f"image {row.name!r} is now {etag}, not what If-Match asked for; start over",
            etag=etag,
        )
    if if_none_match_hits(request.headers.get("If-None-Match"), etag):
        return web.Response(status=304, headers=headers)
    byte_range = None
    range_header = request.headers.get("Range") if request.method == "GET" else None  # §14.2
    if range_header is not None and if_range_allows(
        request.headers.get("If-Range"), etag, headers["Last-Modified"]
    ):
        try:
            byte_range = parse_range(range_header, size)
        except RangeError as exc:
            REFUSED.labels("range").inc()
            return web.json_response(
                {"error": str(exc), "size": size},
                status=416,
                headers={"Content-Range": f"bytes */{size}"},  # §15.5.17
            )
    offset, length = (byte_range.start, byte_range.length) if byte_range else (0, size)
    if byte_range is None and "offset" in request.query:
        # Resume for clients that cannot take a 206 (busybox wget accepts 206 only for its own
        # `-c` into a file, never into a pipe): ?offset=N&sha256=<hex> answers 200 with the
        # bytes from N. The sha256 plays If-Range's part: another image is refused, not mixed.
        raw, wanted = request.query["offset"], request.query.get("sha256")
        if not (raw.isascii() and raw.isdigit()) or int(raw) >= size:  # '²'.isdigit()
            return _problem(416, "range", f"offset must be a byte position below {size}", size=size)
        if wanted != row.sha256:
            return _problem(
                409,
                "changed",
                f"image {row.name!r} is now sha256 {row.sha256}, "
                "not the one this resume started with (?sha256=); start over",
                image=row.name,
            )
        offset, length = int(raw), size - int(raw)
        if "length" in request.query:
            raw_length = request.query["length"]
            if (
                not (raw_length.isascii() and raw_length.isdigit())
                or not 0 < int(raw_length) <= length
            ):
                return _problem(
                    416,
                    "range",
                    f"length must be 1 to {length} (the bytes from offset {offset} to the end)",
                    size=size,
                )
            length = int(raw_length)
        headers["X-Image-Offset"] = raw
    response = web.StreamResponse(status=206 if byte_range else 200, headers=headers)
    response.content_type = "application/octet-stream"
    response.content_length = length
    if byte_range:
        response.headers["Content-Range"] = byte_range.content_range(size)
    if request.method == "HEAD" or length == 0:
        await response.prepare(request)
        return response

    service = service_of(request)
    slot: Slot | None = None
    if length > SMALL_BODY:
        address = request.remote or "?"
        key = node.mac if node else f"{ANONYMOUS}:{address}"
        admitted = await service.admission.wait(key, address, service.queue_wait)
        if not isinstance(admitted, Slot):
            return _queued(service, admitted)
        slot = admitted
    try:
        await _stream(request, ctx, response, row, image, node, offset, length)
    finally:
        if slot is not None:
            service.admission.release(slot)
    return response


def _queued(service: ImageStreams, position: int) -> web.Response:
    """503 with the client's place in line. busybox wget shows a 503's status line but none of
    its headers, so the reason phrase says it too: ``503 Queued 7 Retry-After 5`` (the agent's
    ``image_queue_wait`` reads it); other clients read ``Retry-After`` and the JSON body."""
    admission, wait = service.admission, service.retry_after
    REFUSED.labels("busy").inc()
    return web.json_response(
        {
            "error": f"{admission.limit} image transfers are running (http.max_image_streams): "
            f"queued, {ordinal(position)} in line; keep asking every {wait} s to keep the place",
            "queued": True,
            "position": position,
            "retry_after": wait,
        },
        status=503,
        reason=f"Queued {position} Retry-After {wait}",
        headers={"Retry-After": str(wait), "X-Queue-Position": str(position)},  # RFC 9110 §10.2.3
    )


async def _stream(
    request: web.Request,
    ctx: Context,
    response: web.StreamResponse,
    row: Image,
    image: OpenImage,
    node: Node | None,
    offset: int,
    length: int,
) -> None:
    """Send ``length`` bytes from ``offset`` with sendfile(2), accounting each chunk.

    The last byte is held back until the open file is proven unchanged: if the image was
    modified in place meanwhile, the connection is aborted short of Content-Length, so the
    client sees a failed transfer, never a complete-looking mix of two images.
    """
    service = service_of(request)
    stream = service.transfers.begin(
        mac=node.mac if node else None,
        hostname=node.hostname if node else None,
        peer=request.remote,
        image=row.name,
        image_size=image.identity.size,
        offset=offset,
        length=length,
    )
    aborted = ""

    async def send() -> None:
        try:
            sender: FileSender | None = FileSender(request.transport)
        except NotImplementedError:  # no plain TCP socket (TLS): read and write instead
            sender = None
        async with sender or contextlib.nullcontext():  # corked: headers ride with the body
            await response.prepare(request)  # StreamResponse sends the headers now
            await _send_range(response, sender, image, offset, length - 1, stream.sent)
            changed = await asyncio.to_thread(image.still_same)
            if changed:
                raise _FileChanged(f"{changed} during the transfer")
            await _send_range(response, sender, image, offset + length - 1, 1, stream.sent)

    sending = asyncio.ensure_future(send())
    watchdog = asyncio.ensure_future(_watch_progress(request, stream, service.stall_timeout))
    try:
        await asyncio.wait({sending, watchdog}, return_when=asyncio.FIRST_COMPLETED)
        if not sending.done():  # stalled: cancel the send (a cancelled sendfile unregisters
            sending.cancel()  # its fd), then drop the connection short of Content-Length
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                await sending
            aborted = watchdog.result()
            if request.transport is not None:
                request.transport.abort()
        else:
            sending.result()
    except _FileChanged as exc:
        aborted = f"{row.path}: {exc}"
        problem = NotServable(
            row.name, catalog.BAD, f"{aborted}; {catalog.readd_hint(row.name, row.path)}"
        )
        await catalog.mark_not_servable(ctx.sessions, ctx.bus, problem, row)
        log.error("aborted image %s to %s: %s", row.name, request.remote, aborted)
        if request.transport is not None:
            request.transport.abort()  # short of Content-Length: the client sees a failure
    except (ConnectionError, OSError) as exc:  # the client went away: account what was sent
        aborted = f"connection lost: {exc}"
    finally:
        sending.cancel()
        watchdog.cancel()
        facts = stream.end()
        if aborted:
            facts["aborted"] = aborted
        await _record(ctx, node, facts)


async def _watch_progress(request: web.Request, stream: Stream, stall_timeout: float) -> str:
    """Cut a stream that moves no bytes for ``stall_timeout`` seconds, so its slot goes to the
    next node in line (a client that stopped reading holds a connection, never a slot).

    Progress is what the client acknowledged (Linux ``TCP_INFO.tcpi_bytes_acked``): bytes
    handed to the kernel may sit in the socket buffer of a client that stopped reading. Where
    TCP_INFO is not available the bytes handed to the kernel count instead.
    """
    sock = request.transport.get_extra_info("socket") if request.transport else None
    last, since = -1, 0.0
    loop = asyncio.get_running_loop()
    while True:
        now = loop.time()
        moved = _acked_bytes(sock)
        moved = stream.sent_bytes if moved is None else moved
        if moved != last:
            last, since = moved, now
        elif now - since >= stall_timeout:
            why = f"stalled: no bytes moved for {stall_timeout:g} s (http.stall_timeout)"
            log.info("closing image stream to %s: %s", request.remote, why)
            return why
        await asyncio.sleep(min(stall_timeout / 4, 5.0))


_TCP_INFO_BYTES_ACKED = 120  # offset of tcpi_bytes_acked (u64) in struct tcp_info, Linux ≥ 4.1


def _acked_bytes(sock: Any) -> int | None:
    if sock is None or not hasattr(socket, "TCP_INFO"):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    except OSError:
        return None
    if len(info) < _TCP_INFO_BYTES_ACKED + 8:
        return None
    return int.from_bytes(info[_TCP_INFO_BYTES_ACKED : _TCP_INFO_BYTES_ACKED + 8], sys.byteorder)


class _FileChanged(Exception):
    """The open image file no longer matches the catalog (truncated or modified in place)."""


async def _send_range(
    response: web.StreamResponse,
    sender: FileSender | None,
    image: OpenImage,
    offset: int,
    count: int,
    sent: Callable[[int], None],
) -> None:
    end = offset + count
    while offset < end:
        chunk = min(SENDFILE_CHUNK, end - offset)
        if sender is not None:  # sendfile(2); sent() per call, so a dropped node's count is exact
            n = await sender.send(image.fh, offset, chunk, sent)
        else:
            data = await asyncio.to_thread(_pread, image, offset, min(chunk, 1024 * 1024))
            await response.write(data)
            n = len(data)
            sent(n)
        if n == 0:  # the file is shorter than its catalog size: truncated under us
            raise _FileChanged(f"the file ended early at byte {offset}")
        offset += n
        if changed := image.still_same():  # one fstat per chunk: stop a mix early
            raise _FileChanged(f"{changed} during the transfer")


def _pread(image: OpenImage, offset: int, count: int) -> bytes:
    return os.pread(image.fh.fileno(), count, offset)


async def _record(ctx: Context, node: Node | None, facts: dict[str, Any]) -> None:
    """One event row per image transfer: the per-MAC history shows every fetch and its outcome."""
    async with ctx.sessions() as session, session.begin():
        event = eventlog.transfer(
            "http",
            node.mac if node else None,
            node.cluster if node else None,
            what="image",
            **facts,
        )
        session.add(event)
    ctx.bus.publish(event)


@routes.get("/api/images")
async def list_images(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    async with ctx.sessions() as session:
        rows = (await session.scalars(select(Image).order_by(Image.name))).all()
    declared = [r for r in rows if r.name in ctx.config.images]
    return web.json_response({"images": [catalog.image_json(r, ctx.public_url) for r in declared]})


@routes.get("/api/images/{name}")
async def get_image_json(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    name = request.match_info["name"]
    async with ctx.sessions() as session:
        row = await session.get(Image, name) if name in ctx.config.images else None
    if row is None:
        return json_error(404, f"no image named {name!r}", images=sorted(ctx.config.images))
    return web.json_response(catalog.image_json(row, ctx.public_url))


@routes.get("/api/transfers")
async def list_transfers(request: web.Request) -> web.Response:
    """Bytes sent per node (and per unidentified peer) since the server started."""
    service = service_of(request)
    return web.json_response(
        {
            "active_streams": service.admission.active,
            "max_image_streams": service.admission.limit,
            "queued": service.admission.queued(),
            "transfers": service.transfers.snapshot(),
        }
    )


def setup(app: web.Application) -> None:
    app.add_routes(routes)
