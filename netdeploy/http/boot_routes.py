"""Boot over HTTP: iPXE scripts, per-node answer files and the static bootfiles.

``GET /boot.ipxe``               first stage: chain to the per-MAC script
``GET /boot/{mac}.ipxe``         the node's boot plan as an iPXE script (any MAC notation)
``GET /nodes/{mac}/files``       the node's answer files (JSON: name, secret, url); read access
``GET /nodes/{mac}/files/{name}`` one rendered answer file, for the agent that claimed the node
``GET /bootfiles/{path}``        static files under the bootfiles root (kernel, initrd, ...)

Handlers only parse and render; decisions live in :mod:`netdeploy.boot`.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from netdeploy.answers.render import is_secret_template
from netdeploy.boot import scripts
from netdeploy.boot.files import node_files, serve_node_file
from netdeploy.http.common import boot_of, ctx_of, mac_param, request_token
from netdeploy.store.outage import OUTAGE, is_outage

routes = web.RouteTableDef()
IPXE = "text/plain"
NO_STORE = {"Cache-Control": "no-store"}  # every answer is per request: never cache a plan


def client_ip(request: web.Request) -> str:
    return request.remote or "?"


@routes.get("/boot.ipxe")
async def first_stage(request: web.Request) -> web.Response:
    """The same script for every machine; it needs nothing from the store, so it is served
    during a database outage too, and its retry loop carries the machine through it."""
    boot = boot_of(request)
    try:
        await boot.first_stage(via="http", path=request.path, ip=client_ip(request))
    except Exception as exc:  # the first stage needs no store: serve it, it retries by itself
        if not is_outage(exc):
            raise
        OUTAGE.failed("http", "first stage (not recorded)", exc)
    text = scripts.first_stage_ipxe(ctx_of(request).config.server.bootfiles_dir, boot.urls)
    return web.Response(text=text, content_type=IPXE, headers=NO_STORE)


@routes.get("/boot/{mac}.ipxe")
async def node_script(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    mac = mac_param(request)
    answer = await boot_of(request).answer(
        mac, via="http", path=request.path, ip=client_ip(request)
    )
    text = scripts.ipxe_script(ctx.config.server.bootfiles_dir, answer.plan, answer.token)
    return web.Response(text=text, content_type=IPXE, headers=NO_STORE)


@routes.get("/nodes/{mac}/files")
async def list_files(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    mac = mac_param(request)
    files = node_files(ctx, mac)
    if files is None:
        raise web.HTTPNotFound(text=f"{mac} is not in the config, so it has no answer files")
    templates = ctx.config.server.templates_dir
    base = f"{ctx.public_url}/nodes/{mac.replace(':', '-')}/files"
    return web.json_response(
        {
            "mac": mac,
            "files": [
                {"name": n, "secret": is_secret_template(templates, n), "url": f"{base}/{n}"}
                for n in files
            ],
        },
        headers=NO_STORE,
    )


@routes.get("/nodes/{mac}/files/{name}")
async def node_file(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    mac = mac_param(request)
    answer = await serve_node_file(
        ctx,
        mac,
        request.match_info["name"],
        token=request_token(request),
        ip=client_ip(request),
    )
    return web.Response(
        body=answer.body,
        status=answer.status,
        headers={**NO_STORE, "Content-Type": answer.content_type},
    )


def bootfile_path(root: Path, relative: str) -> Path | None:
    """``relative`` inside ``root`` as a regular file, or None (missing, a directory, outside)."""
    if "\x00" in relative:
        return None
    root = root.resolve()
    try:
        path = (root / relative.lstrip("/")).resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a symlink loop
        return None
    if not path.is_relative_to(root) or not path.is_file():
        return None  # ".." or a symlink that leads out of the root
    return path


@routes.get("/bootfiles/{path:.+}")
async def bootfile(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    relative = request.match_info["path"]
    path = bootfile_path(ctx.config.server.bootfiles_dir, relative)
    if path is None:
        hint = ""
        if relative.startswith("media/"):
            hint = "; the agent startup media are built by `netdeploy media build`"
        raise web.HTTPNotFound(text=f"no file {relative!r} under the bootfiles root{hint}")
    return web.FileResponse(path)


def setup(app: web.Application) -> None:
    app.add_routes(routes)
