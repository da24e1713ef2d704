"""``GET /cluster/{name}``: one cluster's rollout, with a chart of its nodes per state over time
and the image throughput, drawn by the page (static/cluster.js, SVG, no library, no CDN).

The chart is the event record replayed: the page gets the cluster's ``state`` and ``http``
(image transfer) events in compact form and keeps adding the ones the live stream brings, so
what it draws is exactly what the event log says.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import or_, select

from netdeploy.eventlog import macs_of
from netdeploy.http import session as auth
from netdeploy.http.common import ctx_of
from netdeploy.http.dashboard import render, script_json
from netdeploy.http.dashboard_view import GATE_LABELS, load_view
from netdeploy.store.models import Event, Node

routes = web.RouteTableDef()

CHART_EVENTS = 20_000  # the newest this many state and transfer rows of the cluster


def _compact(ev: Event) -> list[list[Any]]:
    """[ms, mac, kind, from, to, bytes, seconds]: ~60 bytes a row for thousands of rows; a
    release wave (one row, docs/decisions/0014) gives one per node it released."""
    detail = ev.detail or {}
    at = int(ev.at.timestamp() * 1000) if ev.at else 0
    if ev.kind == "http":
        sent = detail.get("sent") if isinstance(detail.get("sent"), int) else 0
        seconds = detail.get("seconds") if isinstance(detail.get("seconds"), int | float) else 0
        return [[at, ev.mac, "h", None, None, sent, seconds]]
    return [[at, mac, "s", ev.from_state, ev.to_state, 0, 0] for mac in macs_of(ev)]


@routes.get("/cluster/{name}")
async def cluster_page(request: web.Request) -> web.Response:
    if not auth.may_read(request):
        return render("login.html", error="", public_read=False)
    ctx = ctx_of(request)
    name = request.match_info["name"]
    async with ctx.sessions() as db:
        view = await load_view(db, config=ctx.config, log_cluster=name, log_limit=1)
        cluster = next((c for c in view.clusters if c.name == name), None)
        if cluster is None:
            names = ", ".join(c.name for c in view.clusters) or "none"
            return render(
                "result.html", status=404, ok=False, message=f"no cluster {name!r}; {names}"
            )
        members = select(Node.mac).where(Node.cluster == name)
        rows = (
            await db.scalars(
                select(Event)
                .where(
                    Event.kind.in_(("state", "http")),
                    or_(Event.cluster == name, Event.mac.in_(members)),
                )
                .order_by(Event.id.desc())
                .limit(CHART_EVENTS)
            )
        ).all()
    session = auth.session_of(request)
    page_data = {
        "lastEventId": view.last_event_id,
        "cluster": name,
        "nodes": {n.mac: n.state for n in cluster.nodes},
        "events": [row for ev in reversed(rows) for row in _compact(ev)],
        "gateLabels": GATE_LABELS,
    }
    response = render(
        "cluster.html",
        c=cluster,
        view=view,
        session=session,
        page_data=script_json(page_data),
    )
    response.enable_compression()
    return response


def setup(app: web.Application) -> None:
    app.add_routes(routes)
