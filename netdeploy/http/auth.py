"""Declared auth: every route says who may call it, here, in one table; one middleware enforces it.

Home Assistant's ``requires_auth`` views are the model: a route cannot forget its check,
because a route missing from :data:`ROUTES` is refused (and ``tests/unit/test_auth_routes.py``
walks the router and fails on it). Levels:

- ``public``  anyone (boot scripts, boot files, the login page, the version).
- ``node``    a node credential, well-formed, in ``Authorization: Bearer`` or ``?token=``:
              the agent's claim secret (or the boot token for the claim itself, the report
              token for health/joined). *Which* node and whether the credential is current for
              its phase is decided where the state lives (the rollout writer,
              netdeploy.rollout.identity), atomically with what the request changes.
              ``/images/{name}`` and the multicast join also take the admin token.
- ``read``    ``[dashboard] public_read = true``, a dashboard session, or the admin token;
              ``/metrics`` follows ``[metrics] public`` instead and also takes ``[metrics] token``.
- ``admin``   the admin token as ``Authorization: Bearer`` (the dashboard's ``/actions/*``:
              its session cookie, with a CSRF token checked by the handler).

Every refusal is a 4xx with ``{"error": ...}`` and an ``auth`` event carrying the requester's
address, written off the rollout writer in batches (a flood of bad requests never touches an
agent's batch), at most :data:`EVENTS_PER_WINDOW` per address per window.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import prometheus_client
from aiohttp import web
from multidict import MultiDictProxy

from netdeploy import eventlog
from netdeploy.http import session as sessions
from netdeploy.http.common import CTX, json_error
from netdeploy.inventory import BadMac, normalize_mac
from netdeploy.store.batch import BatchWriter
from netdeploy.store.models import Event
from netdeploy.tokens import clean_token

log = logging.getLogger("netdeploy.http.auth")


class Level(StrEnum):
    PUBLIC = "public"
    NODE = "node"
    READ = "read"
    ADMIN = "admin"


P, N, R, A = Level.PUBLIC, Level.NODE, Level.READ, Level.ADMIN

# (method, route pattern) -> level. HEAD follows GET. Keep it in route order of http/app.py.
ROUTES: dict[tuple[str, str], Level] = {
    ("GET", "/api/version"): P,
    ("GET", "/metrics"): R,  # [metrics] public / token, see _may_scrape
    ("GET", "/api/nodes"): R,
    ("GET", "/api/nodes/{mac}"): R,
    ("GET", "/api/clusters"): R,
    ("GET", "/boot.ipxe"): P,  # PXE has no authentication (docs/security.md)
    ("GET", "/boot/{mac}.ipxe"): P,  # the boot token in it only claims (rollout.identity)
    ("GET", "/nodes/{mac}/files"): R,
    ("GET", "/nodes/{mac}/files/{name}"): N,
    ("GET", "/bootfiles/{path}"): P,  # kernel, initrd, iPXE: nothing secret
    ("GET", "/api/nodes/{mac}/plan"): N,
    ("POST", "/api/nodes/{mac}/claim"): N,
    ("POST", "/api/nodes/{mac}/events"): N,
    ("POST", "/api/nodes/{mac}/health"): N,
    ("GET", "/api/nodes/{mac}/gate"): N,
    ("GET", "/api/admin/clusters"): A,
    ("POST", "/api/admin/nodes/{node}/{action}"): A,
    ("POST", "/api/admin/clusters/{name}/reset"): A,
    ("GET", "/"): P,  # the login form, or the page when the requester may read (its handler)
    ("POST", "/login"): P,  # throttled per address (LoginThrottle)
    ("POST", "/logout"): P,  # ends the caller's own session, if any
    ("POST", "/actions/{action}"): A,
    ("GET", "/static"): P,
    ("GET", "/api/events/log"): R,
    ("GET", "/api/events"): R,
    ("POST", "/api/multicast/join"): N,
    ("GET", "/api/multicast/sessions"): R,
    ("GET", "/api/multicast/sessions/{id}"): R,
    ("POST", "/api/multicast/sessions"): A,
    ("GET", "/images/{name}"): N,  # a node whose plan includes the image, or admin
    ("GET", "/api/images"): R,
    ("GET", "/api/images/{name}"): R,
    ("GET", "/api/transfers"): R,
    # the operator's view (issue 19): pages show the login form to who may not read (handler)
    ("GET", "/node/{node}"): P,
    ("GET", "/cluster/{name}"): P,
    ("GET", "/api/nodes/{node}/explain"): R,
    # network capture (issue 17): the admin marks, the claimed agent streams its disk
    ("GET", "/api/admin/captures"): A,
    ("POST", "/api/admin/captures"): A,
    ("GET", "/api/admin/captures/{mac}"): A,
    ("DELETE", "/api/admin/captures/{mac}"): A,
    ("GET", "/api/nodes/{mac}/capture"): N,
    ("POST", "/api/nodes/{mac}/capture/segments"): N,
    ("POST", "/api/nodes/{mac}/capture/done"): N,
    ("POST", "/api/nodes/{mac}/capture/failed"): N,
    ("GET", "/images/{name}/sparse"): N,  # as /images/{name}: the imaging node, or admin
    # discovery to inventory (issue 18)
    ("POST", "/api/nodes/{mac}/facts"): N,
    ("POST", "/api/admin/nodes/{node}/adopt"): A,
    ("POST", "/api/admin/reload"): A,
    ("POST", "/api/admin/images/{name}/{action}"): A,
}
ADMIN_ALSO = frozenset(
    {"/images/{name}", "/images/{name}/sparse", "/api/multicast/join"}
)  # node routes admins may use
COOKIE_ADMIN = frozenset({"/actions/{action}"})  # handler checks the session's CSRF token

REFUSED = prometheus_client.Counter(
    "netdeploy_http_auth_refused_total", "HTTP requests refused by declared auth", ["level"]
)
EVENTS_LOST = prometheus_client.Counter(
    "netdeploy_http_auth_events_lost_total",
    "Refusal events not written (per-address cap, or the store could not keep up)",
)
EVENTS_PER_WINDOW = 20  # refusal events recorded per address and window; the rest counted
WINDOW_S = 10.0


def route_pattern(request: web.Request) -> str | None:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else None


def level_of(method: str, pattern: str | None) -> Level | None:
    """The declared level of a route, None when undeclared (refused: secure by default)."""
    if pattern is None:
        return None
    return ROUTES.get(("GET" if method == "HEAD" else method, pattern))


# ---------------------------------------------------------------- credentials


@dataclass(frozen=True)
class Credential:
    """What a request presents: ``value`` when well-formed, ``malformed`` when it sent junk."""

    value: str | None
    malformed: bool = False


def credential(request: web.Request) -> Credential:
    """``Authorization: Bearer X`` or ``?token=X``, checked before anything hashes it.

    Never raises: header values may hold surrogates (undecodable bytes), control characters
    or anything else; only a token we could have issued passes (netdeploy.tokens.clean_token).
    """
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer":
            return Credential(None, malformed=True)
        token = clean_token(value.strip())
        return Credential(token, malformed=token is None)
    raw = request.query.get("token")
    if raw is None:
        return Credential(None)
    token = clean_token(raw)
    return Credential(token, malformed=token is None)


def is_admin(request: web.Request, given: str | None) -> bool:
    admin = request.app[CTX].admin_token
    return given is not None and hmac.compare_digest(given.encode(), admin.encode())


# ---------------------------------------------------------------- refusals, recorded


class AuthEvents(BatchWriter[Event]):
    """Refusal events, batched off the request path and off the rollout writer."""

    what = "refusal events"

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.windows: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def admit(self, ip: str) -> bool:
        """At most EVENTS_PER_WINDOW rows per address per window: a flood is counted, not
        stored row by row (bounded memory: the 10,000 most recent addresses)."""
        now = time.monotonic()
        start, count = self.windows.pop(ip, (now, 0))
        if now - start > WINDOW_S:
            start, count = now, 0
        self.windows[ip] = (start, count + 1)
        if len(self.windows) > 10_000:
            self.windows.popitem(last=False)
        return count < EVENTS_PER_WINDOW

    async def rows(self, batch: list[Event]) -> list[Event]:
        return batch


AUTH_EVENTS = web.AppKey("auth_events", AuthEvents)


def _mac_of(request: web.Request) -> str | None:
    raw = request.match_info.get("mac") or request.query.get("mac")
    if not raw:
        return None
    try:
        return normalize_mac(raw)
    except BadMac:
        return None


def refuse(
    request: web.Request,
    status: int,
    message: str,
    *,
    mac: str | None = None,
    forbidden: bool = True,
    **detail: str,
) -> web.Response:
    """Answer ``status`` with ``{"error": message}`` and record an ``auth`` event (``rejected``
    unless ``forbidden``) with the requester's address (never the credential)."""
    ip = request.remote or "?"
    writer = request.app.get(AUTH_EVENTS)
    if writer is not None and writer.admit(ip):
        writer.put(
            eventlog.refusal(
                forbidden=forbidden,
                mac=mac or _mac_of(request),
                cluster=None,
                route=route_pattern(request) or request.path[:200],
                method=request.method,
                error=message,
                ip=ip,
                **detail,
            )
        )
    else:
        EVENTS_LOST.inc()
    return json_error(status, message)


# ---------------------------------------------------------------- bodies, decoded safely


async def form_of(request: web.Request) -> MultiDictProxy[str | bytes | web.FileField]:
    """The request's form fields; a body that is not valid for its charset is a 400 (with
    ``{"error": ...}`` under /api/), never a 500."""
    try:
        return await request.post()
    except (UnicodeDecodeError, ValueError):
        raise web.HTTPBadRequest(text="the form is not valid UTF-8 / urlencoded data") from None


async def json_of(request: web.Request) -> Any:
    """The request's JSON body (bytes that are not UTF-8 included): a 400, never a 500."""
    try:
        return json.loads(await request.read())
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"the body is not valid JSON ({exc})") from None


# ---------------------------------------------------------------- the middleware


def _may_read(request: web.Request, given: Credential) -> bool:
    ctx = request.app[CTX]
    if ctx.config.dashboard.public_read:
        return True
    return is_admin(request, given.value) or sessions.session_of(request) is not None


def _may_scrape(request: web.Request, given: Credential) -> bool:
    metrics = request.app[CTX].config.metrics
    if metrics.public:
        return True
    token = metrics.token
    if token and given.value and hmac.compare_digest(given.value.encode(), token.encode()):
        return True
    return is_admin(request, given.value) or sessions.session_of(request) is not None


LOGIN_HINT = (
    "log in on the dashboard (GET /) or send 'Authorization: Bearer <admin token>'; "
    "set [dashboard] public_read = true to allow read-only access without login"
)


@web.middleware
async def declared_auth(request: web.Request, handler):  # type: ignore[no-untyped-def]
    pattern = route_pattern(request)
    if pattern is None:  # no route matched: aiohttp's own 404/405
        return await handler(request)
    level = level_of(request.method, pattern)
    given = credential(request)
    if level is None:
        log.error("route %s %s declares no auth level: refused", request.method, pattern)
        REFUSED.labels("undeclared").inc()
        return refuse(request, 403, f"{request.method} {pattern} declares no auth level")
    if level is Level.PUBLIC:  # whatever it carries (a proxy's Basic auth, say)
        return await handler(request)
    if level is Level.NODE:
        if given.malformed:
            REFUSED.labels(level).inc()
            return refuse(request, 401, "malformed credential: send Authorization: Bearer <token>")
        if given.value is None:
            REFUSED.labels(level).inc()
            return refuse(
                request, 401, "a node credential is needed: Authorization: Bearer <token>"
            )
        return await handler(request)
    if level is Level.READ:
        allowed = _may_scrape if pattern == "/metrics" else _may_read
        if allowed(request, given):
            return await handler(request)
        REFUSED.labels(level).inc()
        return refuse(request, 401, LOGIN_HINT)
    # admin
    if is_admin(request, given.value):
        return await handler(request)
    if pattern in COOKIE_ADMIN:
        if sessions.session_of(request) is not None:
            return await handler(request)
        REFUSED.labels(level).inc()
        return refuse(request, 401, "log in with the admin token first; nothing was changed")
    REFUSED.labels(level).inc()
    if given.value is None and not given.malformed:
        response = refuse(request, 401, "admin token required: Authorization: Bearer <admin token>")
        response.headers["WWW-Authenticate"] = 'Bearer realm="netdeploy admin"'
        return response
    return refuse(request, 403, "wrong admin token")


# ---------------------------------------------------------------- login throttle


class LoginThrottle:
    """Failed logins per address: after ``limit`` in ``window`` seconds, refuse (429) until the
    window has passed. Bounded: the 10,000 most recent addresses."""

    def __init__(self, limit: int = 5, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self.failures: OrderedDict[str, list[float]] = OrderedDict()

    def retry_after(self, ip: str, now: float | None = None) -> float:
        """Seconds this address must wait before trying again (0: it may try now)."""
        now = time.monotonic() if now is None else now
        recent = [t for t in self.failures.get(ip, []) if now - t < self.window]
        if len(recent) < self.limit:
            return 0.0
        return self.window - (now - recent[0])

    def failed(self, ip: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        recent = [t for t in self.failures.pop(ip, []) if now - t < self.window]
        self.failures[ip] = [*recent, now][-self.limit :]
        if len(self.failures) > 10_000:
            self.failures.popitem(last=False)


LOGINS = web.AppKey("login_throttle", LoginThrottle)


def setup(app: web.Application) -> None:
    """Install the middleware's helpers: the refusal-event writer and the login throttle."""
    ctx = app[CTX]
    app[LOGINS] = LoginThrottle()
    app[AUTH_EVENTS] = AuthEvents(ctx.sessions, ctx.bus.publish, EVENTS_LOST, interval=0.5)
    app[sessions.REVOKED] = set()

    async def start(app: web.Application) -> None:
        app[AUTH_EVENTS].start()
        await sessions.load_revoked(app)

    async def stop(app: web.Application) -> None:
        await app[AUTH_EVENTS].close()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
