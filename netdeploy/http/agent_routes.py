"""Agent API: the imaging agent and the started node report in and wait at the gate.

The agent first claims its node with the boot token and a secret of its own, then speaks with
that secret (``Authorization: Bearer <secret>``, or ``?token=``); the started OS sends health
and joined with the report token of its answer files (docs/security.md). Handlers only parse
and render; the rollout writer decides (netdeploy.rollout.identity).

| route | body | answers |
| --- | --- | --- |
| ``POST /api/nodes/{mac}/claim`` | ``{"secret"}`` (Bearer: the boot token) | 200 |
| ``POST /api/nodes/{mac}/events`` | ``{"state", "progress"?, "message"?}`` | 200 node view |
| ``GET /api/nodes/{mac}/gate?timeout=S[&seen=ST]`` | none | 200 released, changed, or after S |
| ``POST /api/nodes/{mac}/health`` | ``{"healthy", "message"?}`` | 200 node view |
| ``POST /api/nodes/{mac}/facts`` | hardware facts (netdeploy.rollout.facts) | 200 facts kept |

Refusals: 400 malformed body / MAC / timeout, 401 no or malformed credential (http/auth.py),
403 wrong credential (alarms: docs/security.md), 404 unknown MAC, 409 wrong state,
503 stopping. Each is ``{"error": "..."}`` and an event row; the node's state is unchanged.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from typing import Any

import prometheus_client
from aiohttp import web

from netdeploy.http.auth import refuse
from netdeploy.http.common import CTX, ctx_of, json_error, request_token
from netdeploy.inventory import BadMac, normalize_mac
from netdeploy.rollout import actions, identity
from netdeploy.rollout.errors import (
    BadReport,
    Forbidden,
    NotFound,
    Refused,
    RolloutError,
    StoreUnreachable,
    Unavailable,
)
from netdeploy.rollout.reports import AgentReport, HealthReport, parse_health, parse_report
from netdeploy.tokens import clean_token

routes = web.RouteTableDef()

GATE_WAITERS = prometheus_client.Gauge(
    "netdeploy_rollout_gate_waiters", "Agents parked on GET /api/nodes/{mac}/gate right now"
)

STATUS: dict[type[RolloutError], int] = {
    NotFound: 404,
    Forbidden: 403,
    BadReport: 400,
    Refused: 409,
    Unavailable: 503,
    StoreUnreachable: 503,  # the outage middleware adds Retry-After (netdeploy/http/outage.py)
}


def error_response(exc: RolloutError) -> web.Response:
    return json_error(STATUS.get(type(exc), 409), str(exc))


async def _mac_or_refuse(request: web.Request, route: str) -> str:
    """The canonical MAC of the path; a bad one is refused, recorded, and answered 400."""
    raw = request.match_info["mac"]
    try:
        return normalize_mac(raw)
    except BadMac as exc:
        # recorded off the rollout writer: a flood of bad requests never reaches its batches
        refuse(request, 400, str(exc), forbidden=False, agent_route=route)
        raise web.HTTPBadRequest(text=str(exc)) from None


async def _json_body(request: web.Request) -> Any:
    """The body as JSON; a :class:`BadReport` (not an exception) when it is not (bytes that are
    not UTF-8 included: json.loads of bytes raises ValueError for them)."""
    raw = await request.read()
    try:
        return json.loads(raw)
    except ValueError as exc:
        return BadReport(f'request body is not valid JSON ({exc}); send e.g. {{"state": ...}}')


async def _agent_call(
    request: web.Request,
    route: str,
    parse: Callable[[Any], AgentReport | HealthReport],
    make_action: Callable[..., actions.Action],
) -> web.Response:
    """Parse the body with ``parse``, run ``make_action``'s action, answer the node view."""
    mac = await _mac_or_refuse(request, route)
    body = await _json_body(request)
    try:
        report = body if isinstance(body, BadReport) else parse(body)
    except BadReport as exc:
        report = exc
    quiet = ctx_of(request).config.rollout.report_quiet
    token, ip = request_token(request), request.remote
    action = make_action(mac, token, report, ip, known_ip(request, mac), quiet)
    try:
        outcome = await ctx_of(request).rollout.run(action, [mac])
    except RolloutError as exc:
        return error_response(exc)
    return web.json_response(outcome.json())


def known_ip(request: web.Request, mac: str) -> str | None:
    """The address the node's config gives it (``vars.ip``): Mini-Setup may switch to it, so
    the started OS may report from there as well as from the address its agent claimed from."""
    node = ctx_of(request).config.node_by_mac(mac)
    ip = node.vars.get("ip") if node is not None else None
    return str(ip) if ip else None


@routes.post("/api/nodes/{mac}/claim")
async def post_claim(request: web.Request) -> web.Response:
    """The agent claims its node for this boot phase: ``Authorization: Bearer <boot token>``,
    body ``{"secret": "<its own random secret>"}``; from then on it sends that secret."""
    mac = await _mac_or_refuse(request, "claim")
    body = await _json_body(request)
    raw = body.get("secret") if isinstance(body, dict) else None
    secret = clean_token(raw)
    if secret is None:
        why = 'send {"secret": "<16-128 characters of [A-Za-z0-9_.~-]>"}'
        return refuse(request, 400, why, mac=mac, forbidden=False)
    action = identity.claim(mac, request_token(request), secret, request.remote)
    try:
        return web.json_response(await ctx_of(request).rollout.run(action, [mac]))
    except RolloutError as exc:
        return error_response(exc)


@routes.post("/api/nodes/{mac}/events")
async def post_event(request: web.Request) -> web.Response:
    return await _agent_call(request, "events", parse_report, actions.agent_report)


@routes.post("/api/nodes/{mac}/facts")
async def post_facts(request: web.Request) -> web.Response:
    """The agent's hardware facts (netdeploy.rollout.facts); answers what was kept."""
    mac = await _mac_or_refuse(request, "facts")
    body = await _json_body(request)
    action = actions.facts_report(mac, request_token(request), body, request.remote)
    try:
        return web.json_response(await ctx_of(request).rollout.run(action, [mac]))
    except RolloutError as exc:
        return error_response(exc)


@routes.post("/api/nodes/{mac}/health")
async def post_health(request: web.Request) -> web.Response:
    return await _agent_call(request, "health", parse_health, actions.health)


def _poll_timeout(request: web.Request) -> float | BadReport:
    limit = ctx_of(request).config.http.gate_poll_timeout
    raw = request.query.get("timeout")
    if raw is None:
        return limit
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 <= value <= limit):
        return BadReport(f"timeout must be seconds from 0 to {limit:g} (got {raw!r})")
    return value


@routes.get("/api/nodes/{mac}/gate")
async def get_gate(request: web.Request) -> web.Response:
    """Long-poll: answer the moment the node is released (or its state changes), else after
    ``timeout`` seconds with its current state. The agent simply asks again."""
    mac = await _mac_or_refuse(request, "gate")
    timeout = _poll_timeout(request)
    token, ip = request_token(request), request.remote
    engine = ctx_of(request).rollout
    # register before reading: a release committed after the read still wakes us
    woken = engine.waiters.register(mac)
    GATE_WAITERS.inc()
    try:
        view = await engine.run(actions.gate_check(mac, token, ip, timeout), [mac])
        timeout = float(timeout) if not isinstance(timeout, BadReport) else 0.0  # refused above
        # ?seen=STATE: the state of the agent's last answer; a change since (a failure or a
        # retry decided between two polls) is answered at once, never missed for a whole poll
        seen = request.query.get("seen")
        if view["released"] or timeout == 0 or (seen and seen != view["state"]):
            return web.json_response(view)
        try:
            async with asyncio.timeout(timeout):  # a timer, not a task per parked poll
                changed = await woken
        except TimeoutError:
            # authenticated when the poll began; a re-check now could see a newer claim
            return web.json_response(await engine.run(actions.gate_read(mac), [mac]))
        if changed is None:
            raise Unavailable("the server is stopping; poll again in a few seconds")
        return web.json_response(changed)
    except RolloutError as exc:
        return error_response(exc)
    finally:
        engine.waiters.discard(mac, woken)
        GATE_WAITERS.dec()


def setup(app: web.Application) -> None:
    app.add_routes(routes)

    async def stop_rollout(app: web.Application) -> None:
        # wake every long-poll now, or aiohttp would wait up to a minute for them on shutdown
        await app[CTX].rollout.stop()

    app.on_shutdown.append(stop_rollout)
