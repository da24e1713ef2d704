"""Multicast control API: join a session, and session status for the dashboard.

``POST /api/multicast/join`` tells a receiver where its image comes from: a multicast session
(group, port, session and receiver ids) or a unicast URL with the reason. The receiver
itself then talks UDP to the session (see docs/multicast.md).
"""

from __future__ import annotations

import re
import shlex
import socket
from typing import Any

from aiohttp import web

from netdeploy.http.auth import form_of, is_admin, json_of, refuse
from netdeploy.http.common import ctx_of, multicast_of, request_token
from netdeploy.inventory import BadMac, normalize_mac
from netdeploy.multicast.service import JoinError, MulticastService
from netdeploy.rollout.identity import claim_valid
from netdeploy.store.models import Cluster, Node

routes = web.RouteTableDef()
_NAME = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def _service(request: web.Request) -> MulticastService:
    service = multicast_of(request)
    if service is None:
        raise web.HTTPServiceUnavailable(text="the multicast service is not running")
    return service


async def _fields(request: web.Request) -> dict[str, Any]:
    fields: dict[str, Any] = dict(request.query)
    if request.body_exists:  # (can_read_body is False once the error middleware read it)
        if request.content_type == "application/json":
            body = await json_of(request)
            if not isinstance(body, dict):
                raise web.HTTPBadRequest(text="the body must be a JSON object")
            fields.update(body)
        else:
            fields.update(await form_of(request))
    return fields


def _args(answer: dict[str, Any], sender: str) -> str:
    """The join answer as command-line words for the media's C receiver (ndmc-recv)."""
    if answer["mode"] != "multicast":
        return f"--unicast {shlex.quote(answer['url'])} --size {answer['size']} " + (
            f"--sha256 {answer['sha256']}\n"
        )
    words = [
        ("--session", answer["session"]),
        ("--receiver", answer["receiver"]),
        ("--group", answer["group"]),
        ("--port", answer["port"]),
        ("--sender", f"{sender}:{answer['feedback_port']}"),
        ("--slice-size", answer["slice_size"]),
        ("--size", answer["size"]),
        ("--sha256", answer["sha256"]),
    ]
    return " ".join(f"{k} {shlex.quote(str(v))}" for k, v in words) + "\n"


@routes.post("/api/multicast/join")
async def join(request: web.Request) -> web.Response:
    fields = await _fields(request)
    image = str(fields.get("image", ""))
    if not image:
        raise web.HTTPBadRequest(text="say which image: image=NAME")
    mac = None
    if fields.get("mac"):
        try:
            mac = normalize_mac(str(fields["mac"]))
        except BadMac as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
    token = request_token(request)
    if not is_admin(request, token):
        # a node joins with its agent's claim: nobody takes another node's place
        node = cluster = None
        if mac is not None:
            async with ctx_of(request).sessions() as session:
                node = await session.get(Node, mac)
                if node is not None and node.cluster:
                    cluster = await session.get(Cluster, node.cluster)
        if node is None or not claim_valid(node, cluster, token):
            why = "a join needs mac= of a node and its agent's claim (Bearer), or the admin token"
            return refuse(request, 403, why, mac=mac)
    name = str(fields.get("name") or mac or request.remote or "receiver")
    if not _NAME.match(name):
        raise web.HTTPBadRequest(text="name: 1-64 letters, digits, '.', '_', ':' or '-'")
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    local_ip = sockname[0] if sockname and sockname[0] not in ("0.0.0.0", "::") else None
    try:
        answer = await _service(request).join(
            image,
            mac=mac,
            name=name,
            client_ip=request.remote or "",
            local_ip=local_ip,
            base_url=f"{request.scheme}://{request.host}",
        )
    except JoinError as exc:
        raise _error(exc) from None
    if fields.get("format") == "args":
        sender = local_ip or socket.gethostbyname(request.url.host or "127.0.0.1")
        return web.Response(text=_args(answer, sender))
    return web.json_response(answer)


def _error(exc: JoinError) -> web.HTTPException:
    cls = {404: web.HTTPNotFound, 409: web.HTTPConflict, 503: web.HTTPServiceUnavailable}
    return cls.get(exc.status, web.HTTPBadRequest)(text=str(exc))


@routes.get("/api/multicast/sessions")
async def sessions(request: web.Request) -> web.Response:
    # names, MACs and addresses of receivers: the dashboard's read rule, like the event log
    return web.json_response(_service(request).status())


@routes.get("/api/multicast/sessions/{id}")
async def one_session(request: web.Request) -> web.Response:
    try:
        session_id = int(request.match_info["id"])
    except ValueError:
        raise web.HTTPBadRequest(text="session ids are decimal numbers") from None
    found = _service(request).find(session_id)
    if found is None:
        raise web.HTTPNotFound(text=f"no multicast session {session_id} (running or recent)")
    return web.json_response(found)


@routes.post("/api/multicast/sessions")
async def create_session(request: web.Request) -> web.Response:
    """Admin: open a session ahead of the joins, e.g. for N receivers that are not nodes."""
    # admin only: declared in http/auth.py
    fields = await _fields(request)
    service = _service(request)
    try:
        expected = int(fields["expected"]) if fields.get("expected") else None
        overrides = {
            "min_receivers": int(fields["min_receivers"]) if fields.get("min_receivers") else None,
            "max_wait": float(fields["max_wait"]) if fields.get("max_wait") else None,
        }
        source = await service.image_source(str(fields.get("image", "")))
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        session = service.create(
            source, fields.get("cluster"), expected, sockname[0] if sockname else None, **overrides
        )
    except (TypeError, ValueError) as exc:
        raise web.HTTPBadRequest(text=f"expected, min_receivers, max_wait: {exc}") from None
    except JoinError as exc:
        raise _error(exc) from None
    return web.json_response(session.json(), status=201)


def setup(app: web.Application) -> None:
    app.add_routes(routes)
