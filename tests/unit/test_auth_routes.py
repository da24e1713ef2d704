"""Every route declares its auth level in netdeploy/http/auth.py (issue 22; Home Assistant's
``requires_auth`` is the model): walk the router of the real app and fail on any route that
does not, and on any declaration that names no route."""

from __future__ import annotations

from unittest import mock

import pytest

from netdeploy.http import auth
from netdeploy.http.app import build_app
from netdeploy.tokens import clean_token


def _app():  # type: ignore[no-untyped-def]
    ctx = mock.MagicMock()
    ctx.config.http.max_image_streams = 1
    ctx.config.http.image_retry_after = 1
    return build_app(ctx, boot=mock.MagicMock(), images=mock.MagicMock(), multicast=None)


def routes() -> list[tuple[str, str]]:
    app = _app()
    found = []
    for route in app.router.routes():
        assert route.resource is not None
        found.append((route.method, route.resource.canonical))
    return found


def test_every_route_declares_its_auth_level() -> None:
    undeclared = [(m, p) for m, p in routes() if auth.level_of(m, p) is None]
    assert not undeclared, f"declare these in netdeploy/http/auth.py ROUTES: {undeclared}"


def test_every_declaration_names_a_route() -> None:
    present = {("GET" if m == "HEAD" else m, p) for m, p in routes()}
    stale = set(auth.ROUTES) - present
    assert not stale, f"ROUTES declares routes the app does not have: {stale}"


def test_data_routes_are_not_public() -> None:
    for path in ("/api/nodes", "/api/clusters", "/api/images", "/api/transfers", "/metrics"):
        assert auth.level_of("GET", path) is auth.Level.READ, path
    assert auth.level_of("GET", "/images/{name}") is auth.Level.NODE
    assert auth.level_of("HEAD", "/images/{name}") is auth.Level.NODE
    for method, path in auth.ROUTES:
        if path.startswith("/api/admin/"):
            assert auth.ROUTES[(method, path)] is auth.Level.ADMIN, path


@pytest.mark.parametrize(
    "raw",
    [None, "", "short", "a" * 129, "tok en-with-space-0123", "\udcff" * 20, "é" * 20, "x\n" * 10],
)
def test_malformed_credentials_never_pass(raw: object) -> None:
    assert clean_token(raw) is None


def test_login_throttle_per_address() -> None:
    throttle = auth.LoginThrottle(limit=3, window=60)
    for i in range(3):
        assert throttle.retry_after("10.0.0.1", now=100 + i) == 0
        throttle.failed("10.0.0.1", now=100 + i)
    assert throttle.retry_after("10.0.0.1", now=103) > 0
    assert throttle.retry_after("10.0.0.2", now=103) == 0  # another address is not affected
    assert throttle.retry_after("10.0.0.1", now=161) == 0  # the window passed
