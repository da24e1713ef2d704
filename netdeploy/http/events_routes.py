"""The event log over HTTP: a live Server-Sent Events stream and a filterable JSON query.

``GET /api/events`` streams every committed event. A client that reconnects sends
``Last-Event-ID`` (browsers do this by themselves, WHATWG HTML §9.2) and gets the events it
missed replayed from the ``events`` table before the live ones, so a dropped connection loses
nothing. The ``id:`` field is the event row id, or ``high/hole.hole`` while lower ids may still
commit (PostgreSQL; netdeploy/http/event_cursor.py). A client that cannot keep up is cut
off — by the bus when its queue overflows, or here when one write stalls — and never slows
the server or other clients; it reconnects and resumes from the store.

``GET /api/events/log`` pages through the record, newest first, by node, cluster and kind.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web
from sqlalchemy import or_, select

from netdeploy.eventlog import LogFilterError, query_events, with_text
from netdeploy.events import FeedReader, Payload, event_json
from netdeploy.http.common import ctx_of
from netdeploy.http.event_cursor import BadCursor, Cursor
from netdeploy.store.db import newest_event_id
from netdeploy.store.models import Event

log = logging.getLogger("netdeploy.http.events")
routes = web.RouteTableDef()

KEEPALIVE_S = 15.0  # a comment line keeps proxies and NAT from closing an idle stream
WRITE_TIMEOUT_S = 10.0  # a client whose socket accepts nothing for this long is cut off
RETRY_MS = 2000  # how long a browser waits before reconnecting (the SSE `retry:` field)
REPLAY_MAX = 5000  # more missed events than this: tell the page to reload instead
WRITE_BATCH = 256  # events per write at most, so one write stays small
COALESCE_S = 0.1  # a stream gathers events this long before writing them together
STREAMS: web.AppKey[set[FeedReader]] = web.AppKey("event_streams")


def _int_param(request: web.Request, name: str, low: int, high: int) -> int | None:
    raw = request.query.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name}={raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise web.HTTPBadRequest(text=f"{name}={value} is out of range; use {low}..{high}")
    return value


@routes.get("/api/events/log")
async def event_log(request: web.Request) -> web.Response:
    limit = _int_param(request, "limit", 1, 1000) or 100
    before = _int_param(request, "before", 1, 2**62)
    node = request.query.get("node") or request.query.get("mac") or None
    try:
        async with ctx_of(request).sessions() as session:
            events = await query_events(
                session,
                node=node,
                cluster=request.query.get("cluster") or None,
                kind=request.query.get("kind") or None,
                before=before,
                limit=limit,
            )
    except LogFilterError as exc:
        raise web.HTTPNotFound(text=str(exc)) from None
    more = len(events) == limit
    return web.json_response({"events": events, "next_before": events[-1]["id"] if more else None})


def sse_frame(ev: dict[str, Any], cursor: Cursor | None = None) -> bytes:
    """One event; ``cursor`` (already advanced past it) becomes its ``id:`` field."""
    # one `data:` line: json.dumps never emits a raw newline, which would split the field.
    # Progress reports are announced without a row (no id): no `id:` line, so the browser's
    # Last-Event-ID stays at the last recorded event (WHATWG HTML §9.2.6).
    head = f"id: {cursor or ev['id']}\n" if ev.get("id") is not None else ""
    return head.encode() + _data_line(ev)


def _data_line(ev: dict[str, Any]) -> bytes:
    """The ``data:`` line, serialised once per event however many streams send it (the bus
    hands every subscriber the same :class:`Payload`)."""
    wire = ev.wire if isinstance(ev, Payload) else None
    if wire is None:
        wire = f"data: {json.dumps(with_text(ev))}\n\n".encode()
        if isinstance(ev, Payload):
            ev.wire = wire
    return wire


def _last_event_id(request: web.Request) -> Cursor | None:
    raw = request.headers.get("Last-Event-ID") or request.query.get("since") or ""
    if not raw.strip():
        return None
    try:
        return Cursor.parse(raw)
    except BadCursor as exc:
        raise web.HTTPBadRequest(text=f"Last-Event-ID: {exc}; reconnect without it") from None


async def _missed(request: web.Request, cursor: Cursor) -> tuple[list[dict[str, Any]], bool]:
    """Events the client lacks, from the store, oldest first; False when there are too many."""
    missed = Event.id > cursor.high
    if cursor.holes:  # ids that committed after higher ones were sent (PostgreSQL)
        missed = or_(missed, Event.id.in_(sorted(cursor.holes)))
    async with ctx_of(request).sessions() as session:
        rows = (
            await session.scalars(
                select(Event).where(missed).order_by(Event.id).limit(REPLAY_MAX + 1)
            )
        ).all()
    return [event_json(ev) for ev in rows[:REPLAY_MAX]], len(rows) <= REPLAY_MAX


async def _newest_id(request: web.Request) -> int:
    async with ctx_of(request).sessions() as session:
        return await newest_event_id(session)


async def _write(response: web.StreamResponse, data: bytes) -> None:
    await asyncio.wait_for(response.write(data), WRITE_TIMEOUT_S)


@routes.get("/api/events")
async def event_stream(request: web.Request) -> web.StreamResponse:
    cursor = _last_event_id(request)
    ctx = ctx_of(request)
    # take a place in the feed before reading the store, so nothing committed in between is
    # missed; the feed is shared: an event costs one append however many streams are open
    reader = ctx.bus.feed.reader()
    streams: set[FeedReader] = request.app[STREAMS]
    streams.add(reader)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # a reverse proxy must not buffer the stream
        }
    )
    try:
        await response.prepare(request)
        await _write(response, f"retry: {RETRY_MS}\n: connected\n\n".encode())
        if cursor is None:  # a new client: from now on
            cursor = Cursor(await _newest_id(request))
        else:
            missed, complete = await _missed(request, cursor)
            if not complete:  # too far behind to replay: the page re-renders from the store
                await _write(response, b"event: reload\ndata: {}\n\n")
                return response
            for ev in missed:
                cursor.add(ev["id"])
                await _write(response, sse_frame(ev, cursor))
        while not reader.closed:
            await reader.wait(KEEPALIVE_S)
            if reader.closed:
                break
            if reader.position == reader.feed.end:  # nothing new for a while
                await _write(response, b": keep-alive\n\n")
                continue
            # a stream that has events waits COALESCE_S for more, then sends them in one
            # write: each stream wakes at most ~10 times a second whatever the event rate
            await asyncio.sleep(COALESCE_S)
            frames = []
            for item in reader.take(WRITE_BATCH):
                ident = item.get("id")
                if ident is None:  # progress: no id line, the same bytes for every stream
                    frames.append(item.wire or _data_line(item))
                elif not cursor.sent(ident):  # else replayed already
                    cursor.add(ident)
                    frames.append(sse_frame(item, cursor))
            if reader.lost:  # fell behind the feed: cut off; the client resumes by id
                log.info("event stream to %s fell behind and was cut off", request.remote)
                break
            if frames:
                await _write(response, b"".join(frames))
    except (ConnectionError, TimeoutError):
        log.info("event stream to %s closed (client gone or not reading)", request.remote)
    finally:
        streams.discard(reader)
        reader.close()
    return response


async def _end_streams(app: web.Application) -> None:
    """On shutdown end every stream at once, rather than waiting out the shutdown timeout."""
    for reader in list(app[STREAMS]):
        reader.close()


def setup(app: web.Application) -> None:
    app[STREAMS] = set[FeedReader]()
    app.on_shutdown.append(_end_streams)
    app.add_routes(routes)
