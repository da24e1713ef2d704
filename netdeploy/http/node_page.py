"""One machine's boot path: ``GET /node/{node}`` (the dashboard's node page) and
``GET /api/nodes/{node}/explain`` (JSON, what ``netdeploy explain`` prints).

Both show :func:`netdeploy.boot.explain.explain`; ``{node}`` is a MAC in any notation or a host
name. Read access as for the rest of the dashboard (``[dashboard] public_read``, a login, or
``Authorization: Bearer <admin token>``).
"""

from __future__ import annotations

from aiohttp import web

from netdeploy.boot.explain import explain
from netdeploy.boot.explanation import ExplainSettings, Explanation
from netdeploy.context import Context
from netdeploy.eventlog import LogFilterError
from netdeploy.http import session as auth
from netdeploy.http.common import ctx_of
from netdeploy.http.dashboard import render, script_json
from netdeploy.store.db import newest_event_id
from netdeploy.store.models import utcnow

routes = web.RouteTableDef()


def explain_settings(ctx: Context) -> ExplainSettings:
    cfg = ctx.config
    return ExplainSettings(
        public_url=ctx.public_url,
        dhcp_proxy=cfg.dhcp.proxy,
        dhcp_interface=cfg.dhcp.interface,
        tftp_enabled=cfg.tftp.enabled,
        stale_after=cfg.dashboard.stale_after,
        gate_poll=cfg.http.gate_poll_timeout,
    )


async def _explain(ctx: Context, node: str) -> tuple[Explanation, int]:
    async with ctx.sessions() as session:
        last_id = await newest_event_id(session)
        return await explain(session, node, explain_settings(ctx), utcnow()), last_id


@routes.get("/api/nodes/{node}/explain")
async def explain_json(request: web.Request) -> web.Response:
    try:
        answer, _ = await _explain(ctx_of(request), request.match_info["node"])
    except LogFilterError as exc:
        raise web.HTTPNotFound(text=str(exc)) from None
    return web.json_response(answer.as_json())


@routes.get("/node/{node}")
async def node_page(request: web.Request) -> web.Response:
    if not auth.may_read(request):
        return render("login.html", error="", public_read=False)
    session = auth.session_of(request)
    try:
        answer, last_id = await _explain(ctx_of(request), request.match_info["node"])
    except LogFilterError as exc:
        return render("result.html", status=404, ok=False, message=str(exc))
    page_data = {
        "lastEventId": last_id,
        "mac": answer.mac,
        "admin": session is not None,
        "csrf": session.csrf if session else "",
    }
    response = render("node.html", x=answer, session=session, page_data=script_json(page_data))
    response.enable_compression()
    return response


def setup(app: web.Application) -> None:
    app.add_routes(routes)
