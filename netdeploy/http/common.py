"""Helpers every route module shares: the typed app keys, MAC parsing, JSON errors.

``server.py`` builds the app with :func:`netdeploy.http.app.build_app`, which stores each
service the routes use under its own typed key: no lookup by string, no bag of services.
"""

from __future__ import annotations

from aiohttp import web

from netdeploy.boot.service import BootService
from netdeploy.context import Context
from netdeploy.images.streams import ImageStreams
from netdeploy.inventory import BadMac, normalize_mac
from netdeploy.multicast.service import MulticastService
from netdeploy.reload import Reloader
from netdeploy.tokens import clean_token

CTX = web.AppKey("ctx", Context)
BOOT = web.AppKey("boot", BootService)
IMAGES = web.AppKey("images", ImageStreams)
MULTICAST = web.AppKey("multicast", MulticastService)
RELOADER = web.AppKey("reloader", Reloader)


def ctx_of(request: web.Request) -> Context:
    return request.app[CTX]


def boot_of(request: web.Request) -> BootService:
    return request.app[BOOT]


def reloader_of(request: web.Request) -> Reloader:
    return request.app[RELOADER]


def multicast_of(request: web.Request) -> MulticastService | None:
    """The multicast service, or None in an app built without one (tests of other areas)."""
    return request.app.get(MULTICAST)


def json_error(status: int, message: str, **extra: object) -> web.Response:
    """Every API error has one shape: ``{"error": "...", ...}`` with a message to act on."""
    return web.json_response({"error": message, **extra}, status=status)


def mac_param(request: web.Request) -> str:
    """The ``{mac}`` path segment in canonical form, or a 400 that says what was wrong."""
    try:
        return normalize_mac(request.match_info["mac"])
    except BadMac as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None


def request_token(request: web.Request) -> str | None:
    """A node's token: ``Authorization: Bearer TOKEN`` or ``?token=TOKEN`` (iPXE, busybox wget).

    The scheme is case-insensitive (RFC 9110 §11.1); an empty or malformed token counts as
    none (netdeploy.tokens.clean_token): nothing undecodable ever reaches a digest.
    """
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return clean_token(value.strip())
    return clean_token(request.query.get("token"))
