"""The admin dashboard: ``GET /`` (server-rendered), login/logout, and the admin action POSTs.

Handlers parse, check the session and CSRF token, call the rollout service, and render. Every
admin action works without JavaScript (a plain form POST answered by a result page); the page's
script sends the same POST with ``Accept: application/json`` and shows the answer in place.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
from aiohttp import web
from sqlalchemy import select

from netdeploy.http import auth as declared
from netdeploy.http import session as auth
from netdeploy.http.agent_routes import STATUS as ROLLOUT_STATUS
from netdeploy.http.api import facts_by_mac, facts_json
from netdeploy.http.auth import LOGINS
from netdeploy.http.common import ctx_of, multicast_of, reloader_of
from netdeploy.http.dashboard_view import GATE_LABELS, NODE_ACTIONS, load_view, stale_limits
from netdeploy.http.multicast_view import multicast_view
from netdeploy.images import capture
from netdeploy.inventory import BadMac, NodeState, normalize_mac
from netdeploy.reload import ReloadRefused
from netdeploy.rollout import service as rollout
from netdeploy.rollout.errors import RolloutError
from netdeploy.store.models import Cluster, Node

log = logging.getLogger("netdeploy.http.dashboard")
routes = web.RouteTableDef()

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"

# The page names no origin but its own: no inline script, no third-party anything (OWASP CSP).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h"


def _since(when: datetime | None) -> str:
    return _duration((datetime.now(UTC) - when).total_seconds()) if when else "—"


def _epoch(when: datetime | None) -> str:
    return str(int(when.timestamp())) if when else ""


def _ago(seconds: float) -> str:
    return _duration(seconds) + " ago"


def _size(n: int | None) -> str:
    if n is None:
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def _static_version() -> str:
    digest = hashlib.sha256()
    for path in sorted(STATIC.iterdir()):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,  # every value is escaped: node messages come from the network
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters.update(since=_since, size=_size, epoch=_epoch, ago=_ago)
ENV.globals.update(static_version=_static_version(), gate_labels=GATE_LABELS)


def script_json(value: Any) -> str:
    """JSON safe inside a <script> element: no ``</script>`` or ``<!--`` can end it early
    (HTML §4.12.1.3), whatever a node's name or message says."""
    text = json.dumps(value)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render(template: str, status: int = 200, **values: Any) -> web.Response:
    body = ENV.get_template(template).render(**values)
    response = web.Response(text=body, status=status, content_type="text/html", charset="utf-8")
    response.headers.update(SECURITY_HEADERS)
    return response


def _page(raw: str) -> int:
    """A page number from the query; anything else is the first page."""
    raw = raw.strip()
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 7 else 0


@routes.get("/")
async def dashboard(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    session = auth.session_of(request)
    if not auth.may_read(request):
        return render("login.html", error="", public_read=False)
    state_filter = request.query.get("state", "").strip()
    if state_filter not in {*NodeState, "stale"}:
        state_filter = ""
    async with ctx.sessions() as db:
        view = await load_view(
            db,
            log_node=request.query.get("node", "").strip(),
            log_cluster=request.query.get("cluster", "").strip(),
            config=ctx.config,
            state_filter=state_filter,
            discovered_page=_page(request.query.get("discovered", "")),
        )
        limits = stale_limits(ctx.config, list((await db.scalars(select(Cluster))).all()))
    service = multicast_of(request)
    multicast = multicast_view(
        service.status() if service is not None else None,
        view.labels,
        enabled=ctx.config.multicast.enabled,
    )
    page_data = {
        "lastEventId": view.last_event_id,
        "admin": session is not None,
        "csrf": session.csrf if session else "",
        "gateLabels": GATE_LABELS,
        "nodeActions": NODE_ACTIONS,
        "logFilter": {"node": view.log_node, "cluster": view.log_cluster},
        "stateFilter": state_filter,
        "staleLimits": limits,
        # the section polls /api/multicast/sessions only while a session is under way
        "multicast": {"available": multicast.available, "active": bool(multicast.sessions)},
    }
    cfg = ctx.config
    response = render(
        "dashboard.html",
        view=view,
        multicast=multicast,
        session=session,
        page_data=script_json(page_data),
        facts={mac: facts_json(row) for mac, row in (await facts_by_mac(ctx)).items()},
        inventory={
            "clusters": sorted(cfg.clusters),
            "images": sorted(cfg.images),
            "profiles": list(cfg.hardware),
        },
    )
    response.enable_compression()
    return response


def _see_dashboard() -> web.Response:
    # 303: the browser follows with a GET, so a reload never re-posts the form (RFC 9110 §15.4.4)
    return web.Response(status=303, headers={"Location": "/"})


@routes.post("/login")
async def login(request: web.Request) -> web.Response:
    throttle, ip = request.app[LOGINS], request.remote or "?"
    wait = throttle.retry_after(ip)
    if wait > 0:  # guessing the admin token: a few tries a minute, not thousands a second
        response = declared.refuse(request, 429, f"too many failed logins; retry in {wait:.0f} s")
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    form = await declared.form_of(request)
    if not auth.token_is_admin(request, str(form.get("token", ""))):
        throttle.failed(ip)
        log.warning("dashboard login refused from %s: wrong admin token", request.remote)
        declared.refuse(request, 401, "dashboard login: wrong admin token")  # the event
        return render(
            "login.html",
            status=401,
            error="That is not the admin token. It is in <state_dir>/admin-token "
            "(or [server] admin_token in the config).",
            public_read=ctx_of(request).config.dashboard.public_read,
        )
    response = _see_dashboard()
    auth.set_session_cookie(request, response)
    log.info("dashboard login from %s", request.remote)
    return response


@routes.post("/logout")
async def logout(request: web.Request) -> web.Response:
    session = auth.session_of(request)
    form = await declared.form_of(request)
    if session is not None and not auth.check_csrf(request, session, str(form.get("csrf", ""))):
        return _answer(request, 403, "the form is stale (CSRF token mismatch); reload the page")
    if session is not None:
        await auth.revoke(request, session)
    response = _see_dashboard()
    auth.clear_session_cookie(response)
    return response


def _wants_json(request: web.Request) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _answer(request: web.Request, status: int, message: str) -> web.Response:
    """An action's outcome, as JSON for the page's script or as a small page for a plain form."""
    if _wants_json(request):
        key = "message" if status < 400 else "error"
        return web.json_response({key: message}, status=status)
    return render("result.html", status=status, ok=status < 400, message=message)


def _foreign_origin(request: web.Request) -> str | None:
    """The ``Origin`` of a cross-site POST, or None when it is ours or absent (curl, scripts).

    Browsers send Origin with every POST (Fetch standard); "null" (sandboxed frames, data:
    URLs) is foreign too."""
    origin = request.headers.get("Origin")
    if origin is None or (origin != "null" and urlsplit(origin).netloc == request.host):
        return None
    return origin


@routes.post("/actions/{action}")
async def action(request: web.Request) -> web.Response:
    name = request.match_info["action"]
    if name not in ("release", "retry", "fail", "reset", "capture", "adopt"):
        return _answer(
            request,
            404,
            f"no action {name!r}; use release, retry, fail, reset, capture or adopt",
        )
    session = auth.session_of(request)
    if session is None:
        return _answer(request, 401, "log in with the admin token first; nothing was changed")
    form = await declared.form_of(request)
    if (origin := _foreign_origin(request)) is not None:
        return _answer(
            request,
            403,
            f"refused: the request came from {origin}, not from this dashboard ({request.host}); "
            "behind a reverse proxy, pass the original Host header",
        )
    if not auth.check_csrf(request, session, str(form.get("csrf", ""))):
        return _answer(request, 403, "the form is stale (CSRF token mismatch); reload the page")
    actor = f"dashboard admin from {request.remote}"
    ctx = ctx_of(request)
    if name == "capture":
        return await _capture(request, form, actor)
    if name == "adopt":
        return await _adopt(request, form, actor)
    if name == "reset":
        cluster = str(form.get("cluster", "")).strip()
        async with ctx.sessions() as db:
            known = await db.get(Cluster, cluster) is not None
        if not known:
            return _answer(request, 404, f"no cluster named {cluster!r}; nothing was changed")
        return await _run(
            request, rollout.reset_cluster(ctx, cluster, actor), f"cluster {cluster} reset"
        )
    try:
        mac = normalize_mac(str(form.get("mac", "")))
    except BadMac as exc:
        return _answer(request, 400, f"{exc}; nothing was changed")
    async with ctx.sessions() as db:
        node = await db.get(Node, mac)
    if node is None:
        return _answer(request, 404, f"no node with MAC {mac}; nothing was changed")
    label = node.hostname or mac
    if name == "release":
        change = rollout.release(ctx, mac, actor)
    elif name == "retry":
        change = rollout.retry(ctx, mac, actor)
    else:
        reason = str(form.get("reason", "")).strip() or "marked failed from the dashboard"
        change = rollout.fail(ctx, mac, actor, reason)
    return await _run(request, change, f"{name} {label}")


async def _capture(request: web.Request, form: Any, actor: str) -> web.Response:
    """Mark a machine for network capture, as `netdeploy image capture` does."""
    ctx = ctx_of(request)
    try:
        mac = normalize_mac(str(form.get("mac", "")))
    except BadMac as exc:
        return _answer(request, 400, f"{exc}; nothing was changed")
    image = str(form.get("image", "")).strip()
    try:
        await capture.request(
            ctx.config, ctx.sessions, ctx.bus, image=image, mac=mac, actor=f"admin:{actor}"
        )
    except capture.CaptureError as exc:
        return _answer(request, exc.status, f"{exc}; nothing was changed")
    log.info("dashboard: capture of %s into %s by %s", mac, image, request.remote)
    return _answer(request, 200, f"{mac} marked for capture into {image}: PXE-boot it now")


async def _adopt(request: web.Request, form: Any, actor: str) -> web.Response:
    """The adopt form: the same validated write and reload as `netdeploy adopt`."""

    def field(key: str) -> str | None:
        return str(form.get(key, "")).strip() or None

    try:
        mac = normalize_mac(str(form.get("mac", "")))
    except BadMac as exc:
        return _answer(request, 400, f"{exc}; nothing was changed")
    hostname = field("hostname") or ""
    cluster, image = field("cluster"), field("image")
    if cluster:
        image = None  # a cluster node takes its cluster's image
    try:
        result = await reloader_of(request).adopt(
            mac, hostname, cluster=cluster, image=image, hardware=field("hardware"), actor=actor
        )
    except ReloadRefused as exc:
        problems = "; ".join(exc.problems)
        return _answer(request, exc.status, f"{exc}" + (f": {problems}" if problems else ""))
    log.info("dashboard: adopted %s as %s by %s", mac, hostname, request.remote)
    return _answer(request, 200, f"adopted {mac} as {hostname} ({result.file})")


async def _run(request: web.Request, change: Awaitable[Any], what: str) -> web.Response:
    """Apply one rollout admin action; a refusal is shown as is (it changed nothing)."""
    try:
        result = await change
    except RolloutError as exc:
        return _answer(request, ROLLOUT_STATUS.get(type(exc), 409), str(exc))
    log.info("dashboard: %s by %s", what, request.remote)
    state = getattr(result, "state", None)
    return _answer(request, 200, f"{what}: done" + (f", now {state}" if state else ""))


def setup(app: web.Application) -> None:
    app.add_routes(routes)
    app.router.add_static("/static/", STATIC, append_version=False)
