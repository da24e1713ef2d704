"""Hostile HTTP input over every route of the real server: never a 5xx, never a traceback.

The server is built by the composition root (``server.run``: middlewares, connection guard,
every service) on loopback. A seeded generator drives every route the router has (the test
fails on a route it does not know how to drive) with hostile path segments, query values,
headers and bodies: wrong types, out-of-range and huge numbers, bad encodings, malformed
JSON and forms, junk tokens and cursors, bad ranges. Every answer must be below 500, and
nothing may be logged with a traceback. Then the connection limits: a client that opens more
connections than its share is answered 503 (not dropped silently), a dripping request head
is closed, and the server still answers everybody else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import socket
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import REGISTRY
from sqlalchemy.exc import OperationalError
from yarl import URL

from netdeploy.config import load_config
from netdeploy.context import Context, Ports
from netdeploy.http.app import build_app
from netdeploy.http.errors import errors
from netdeploy.images.actions import AddRequest, add_image
from netdeploy.server import open_context, run
from tests.integration.conftest_boot import boot_token
from tests.integration.conftest_images import make_image
from tests.integration.rollout_support import ADMIN_TOKEN, free_port, lab_config, mac_of

REQUESTS = 1200

HOSTILE_SEGMENTS = [
    "", "x", "..", "%2e%2e", "%2F", "%00", "%ff%fe", "%C3%28", "a" * 3000, "52:54:00:00:00:01",
    mac_of(1), mac_of(2), "zz:zz:zz:zz:zz:zz", "52-54-00-00-00-01", "525400000001", "-1",
    "999999999999999999999999", "nan", "%E2%80%AE", "%0d%0aX-Injected:1", "img", "clu", "n1",
    "release", "retry", "fail", "reset", "sysprep.inf", "unattend.xml", "../../etc/passwd",
]  # fmt: skip
HOSTILE_VALUES = [
    "", "-1", "0", "1", "1e309", "nan", "inf", "-inf", "99999999999999999999999999", "0x10",
    "1.5", "²", "٣", "abc", "%00", "%ff", "a" * 5000, "null", "[]", "{}", "true", "sh", "json",
    "bytes=0-", "../", "1/2.3", "  7  ", "9" * 400,
]  # fmt: skip
QUERY_KEYS = [
    "timeout", "offset", "length", "sha256", "mac", "format", "limit", "before", "node", "cluster",
    "kind", "since", "token", "image", "id", "force", "x",
]  # fmt: skip
HEADERS = [
    ("Range", ["bytes=0-", "bytes=-0", "bytes=5-1", "bytes=0-1,2-3", "bytes=x", "items=1-2",
               "bytes=99999999999999999999-", "bytes=-99999999999999999999"]),
    ("If-Range", ['"x"', "W/\"sha256-0\"", "Mon, 32 Foo 2020", ""]),
    ("If-Match", ["*", '"x"', "garbage"]),
    ("If-None-Match", ["*", '"x"', ","]),
    ("Authorization", ["Bearer", "Bearer ", "Bearer x", f"Bearer {ADMIN_TOKEN}",
                       "Basic Zm9vOmJhcg==", "Bearer " + "a" * 4000, "bearer \u00e9"]),
    ("Last-Event-ID", ["-1", "x", "1/2", "1/2.3.x", "99999999999999999999999", "0/"]),
    ("X-Netdeploy-Mac", ["zz", mac_of(1), "52:54:00:00:00:0g"]),
    ("Cookie", ["nd_session=x", "nd_session=" + "a" * 3000, "=", "a=b; c"]),
    ("Content-Type", ["application/json", "application/x-www-form-urlencoded", "text/plain",
                      "multipart/form-data; boundary=x", "application/json; charset=latin-1",
                      "application/json; charset=bogus"]),
]  # fmt: skip
BODIES = [
    b"", b"{", b"[]", b"null", b"1", b'"s"', b'{"state": 1}',
    b'{"state": "imaging", "progress": 1e309}',
    b'{"state": "imaging", "progress": "x"}', b'{"healthy": "yes"}', b'{"force": "no"}',
    b'{"reason": ' + b'"' + b"r" * 5000 + b'"}', b"\xff\xfe\x00", b"a=b&c", b"%zz=%zz",
    b'{"a": ' * 200 + b"1" + b"}" * 200, b'{"state": "imaging", "x": 1}', b"\x00" * 100,
    b'{"image": "img", "mac": "zz"}', b'{"actor": []}',
    b"--x\r\nContent-Disposition: form-data\r\n",
]  # fmt: skip
METHODS = ["GET", "GET", "POST", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"]


@contextlib.asynccontextmanager
async def real_server(tmp_path: Path) -> AsyncIterator[tuple[Context, str]]:
    config = lab_config(tmp_path / "state", 3, standalone=True)
    port = free_port()
    cfg = load_config(config, http_port=port, bind="127.0.0.1")
    ctx = await open_context(cfg, Ports(http=port, tftp=free_port()))
    source = tmp_path / "img.raw"
    IMAGE_SHA.append(make_image(source, 3 * 1024 * 1024))  # > 1 MiB: streams take a slot
    facts = {"sysprep": "reseal", "without_cluster_service": True, "no_shared_storage": True}
    await add_image(cfg, ctx.sessions, AddRequest("img", source, **facts))  # type: ignore[arg-type]
    async with AsyncExitStack() as stack:
        stack.push_async_callback(ctx.close)
        await run(ctx, stack)
        yield ctx, f"http://127.0.0.1:{port}"


def routes_of(router) -> set[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """(method, pattern) of every route the app has."""
    return {(r.method, r.resource.canonical) for r in router.routes() if r.resource is not None}


IMAGE_SHA: list[str] = []


def fill(pattern: str, rng: random.Random) -> str:
    out = []
    for part in pattern.split("/"):
        if part.startswith("{"):
            part = rng.choice(HOSTILE_SEGMENTS)
            if pattern.endswith(".ipxe") and part and rng.random() < 0.5:
                part = part  # the suffix stays in the pattern's literal part
        out.append(part)
    path = "/".join(out).replace("{mac}.ipxe", rng.choice(HOSTILE_SEGMENTS) + ".ipxe")
    if "{" in path:  # a placeholder inside a segment (e.g. {mac}.ipxe)
        head, _, tail = path.partition("{")
        path = head + rng.choice(HOSTILE_SEGMENTS) + tail.partition("}")[2]
    return path


def hostile_request(
    route: tuple[str, str], rng: random.Random, tokens: list[str]
) -> tuple[str, str, dict, bytes | None]:
    method, pattern = route
    path = fill(pattern, rng)
    values = [*HOSTILE_VALUES, *IMAGE_SHA, "1048576", "3145727", "3145728"]
    query = "&".join(
        f"{rng.choice(QUERY_KEYS)}={rng.choice(values)}" for _ in range(rng.randint(0, 4))
    )
    headers = {}
    for name, values in rng.sample(HEADERS, rng.randint(0, 4)):
        headers[name] = rng.choice(values)
    if rng.random() < 0.4:  # get past the token check: a real node token or the admin's
        headers["Authorization"] = f"Bearer {rng.choice([*tokens, ADMIN_TOKEN])}"
    body = rng.choice(BODIES) if rng.random() < 0.6 else None
    if rng.random() < 0.2 or method == "*":
        method = rng.choice(METHODS)
    return method, path + (f"?{query}" if query else ""), headers, body


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO)
    return caplog


async def test_every_route_takes_hostile_input_without_5xx_or_traceback(
    tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    rng = random.Random(15)
    async with real_server(tmp_path) as (ctx, url):
        # node tokens, so reports get past the token check into the parsing behind it
        tokens = [await boot_token(url, mac_of(i)) for i in (1, 2, 3)]
        routes = routes_of(build_app(ctx).router)
        assert len({pattern for _, pattern in routes}) >= 25, routes
        statuses: Counter[int] = Counter()
        failures: list[str] = []
        timeout = aiohttp.ClientTimeout(total=8)
        connector = aiohttp.TCPConnector(limit=8)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:

            async def one(method: str, target: str, headers: dict, body: bytes | None) -> None:
                try:
                    async with http.request(
                        method,
                        URL(url + target, encoded=True),
                        headers=headers,
                        data=body,
                        skip_auto_headers=["Content-Type"],
                        allow_redirects=False,
                    ) as r:
                        statuses[r.status] += 1
                        if r.status >= 500:
                            failures.append(f"{r.status} {method} {target[:120]} {headers}: "
                                            f"{(await r.read())[:200]!r}")  # fmt: skip
                        elif r.content_type != "text/event-stream":
                            await r.read()
                except TimeoutError:
                    statuses[0] += 1  # a long-poll or a stream that does not end: not an error
                except aiohttp.ClientResponseError as exc:  # the server's 400 to a request
                    statuses[exc.status] += 1  # line the client library itself calls bad
                    if exc.status >= 500:
                        failures.append(f"{exc.status} {method} {target[:120]}: {exc.message}")

            jobs = []
            ordered = sorted(routes)
            for i in range(REQUESTS):
                route = ordered[i % len(ordered)]  # every route, many times each
                jobs.append(one(*hostile_request(route, rng, tokens)))
            for start in range(0, len(jobs), 16):
                await asyncio.gather(*jobs[start : start + 16])
        assert sum(statuses.values()) == REQUESTS
        assert not failures, "\n".join(failures[:20])
        logged = [r for r in logs.records if r.exc_info or "Traceback" in r.getMessage()]
        assert not logged, [(r.name, r.getMessage()) for r in logged[:5]]
        assert statuses[0] < REQUESTS // 20, statuses
        assert statuses[200] > 100 and statuses[400] > 100, statuses  # deep and shallow


async def test_connection_limits_answer_instead_of_dropping(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = lab_config(state, 1)
    text = config.read_text().replace(
        "[http]\n", "[http]\nmax_connections_per_address = 4\nkeepalive_timeout = 0.5\n"
    )
    config.write_text(text)
    port = free_port()
    cfg = load_config(config, http_port=port, bind="127.0.0.1")
    ctx = await open_context(cfg, Ports(http=port, tftp=free_port()))
    async with AsyncExitStack() as stack:
        stack.push_async_callback(ctx.close)
        await run(ctx, stack)
        loop = asyncio.get_running_loop()
        held = []
        for _ in range(4):
            sock = socket.create_connection(("127.0.0.1", port))
            held.append(sock)
        extra = socket.create_connection(("127.0.0.1", port))
        extra.setblocking(False)
        answer = await asyncio.wait_for(loop.sock_recv(extra, 4096), 5)
        assert answer.startswith(b"HTTP/1.1 503") and b"Retry-After: 5" in answer
        assert b"max_connections_per_address" in answer
        extra.close()
        # the held connections send a head byte by byte too slowly: closed by the server
        for sock in held:
            sock.sendall(b"GET /api/ver")
            sock.setblocking(False)
        for sock in held:
            assert await asyncio.wait_for(loop.sock_recv(sock, 4096), 5) == b""
            sock.close()
        # their slots are free again: a normal request is served
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/api/version") as r,
        ):
            assert r.status == 200 and json.loads(await r.read())["name"] == "netdeploy"


async def test_the_error_middleware_answers_outages_and_counts_what_it_answered() -> None:
    """One layer (decision 0018): a store that cannot be reached is a 503 with Retry-After, not
    a bug; every response is counted with the status it was answered with (bad input: 400)."""

    async def store_down(_request: web.Request) -> web.Response:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("refused"))

    async def bad_input(_request: web.Request) -> web.Response:
        int("x")
        raise AssertionError

    def count(route: str, status: int) -> float:
        labels = {"route": route, "status": str(status)}
        return REGISTRY.get_sample_value("netdeploy_http_responses_total", labels) or 0.0

    app = web.Application(middlewares=[errors])
    app.router.add_get("/api/test-down", store_down)
    app.router.add_get("/api/test-bad", bad_input)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    before = [
        count("/api/test-down", 503),
        count("/api/test-bad", 400),
        count("/api/test-bad", 500),
    ]
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/api/test-down") as r:
                assert r.status == 503 and r.headers["Retry-After"]
                assert "cannot reach its database" in (await r.json())["error"]
            async with http.get(f"http://127.0.0.1:{port}/api/test-bad") as r:
                assert r.status == 400
    finally:
        await runner.cleanup()
    after = [count("/api/test-down", 503), count("/api/test-bad", 400), count("/api/test-bad", 500)]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 0]


async def test_the_error_middleware_answers_json_and_logs_one_traceback_per_kind(
    logs: pytest.LogCaptureFixture,
) -> None:
    """What a route raises: bad input is a 400, our own bug a 500 logged in full once."""

    async def bad_input(_request: web.Request) -> web.Response:
        int("x")
        raise AssertionError

    async def bug(_request: web.Request) -> web.Response:
        raise RuntimeError("a bug")

    app = web.Application(middlewares=[errors])
    app.router.add_get("/api/bad", bad_input)
    app.router.add_get("/api/bug", bug)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as http:
            for path, status in [("bad", 400), ("bug", 500), ("bug", 500), ("bug", 500)]:
                async with http.get(f"http://127.0.0.1:{port}/api/{path}") as r:
                    assert r.status == status and "error" in await r.json()
    finally:
        await runner.cleanup()
    tracebacks = logs.records
    full = [r for r in tracebacks if r.exc_info]
    assert len(full) == 1 and "/api/bug" in full[0].getMessage()
    assert sum("failed again with RuntimeError (3 times)" in r.getMessage() for r in tracebacks)
    assert any("bad input: ValueError" in r.getMessage() for r in tracebacks)
