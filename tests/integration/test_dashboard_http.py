"""The dashboard over real HTTP: login, session cookie, CSRF, escaping, actions' bad input."""

from __future__ import annotations

import asyncio

from aiohttp import ClientSession, CookieJar
from markupsafe import escape
from sqlalchemy import select

from netdeploy.http.session import new_cookie, parse_cookie
from netdeploy.store.models import Event
from tests.integration.dashboard_helpers import (
    SQL_N2,
    csrf_of,
    event_count,
    move,
    running_server,
    state_of,
)


def client_session() -> ClientSession:
    return ClientSession(cookie_jar=CookieJar(unsafe=True))  # unsafe: keep cookies for 127.0.0.1


def test_session_cookie_is_signed_and_expires():
    cookie = new_cookie("token-a", 60, now=1000)
    assert parse_cookie("token-a", cookie, now=1001) is not None
    assert parse_cookie("token-a", cookie, now=1061) is None  # expired
    assert parse_cookie("token-b", cookie, now=1001) is None  # admin token changed
    expires, nonce, sig = cookie.split(".")
    assert parse_cookie("token-a", f"{int(expires) + 99999}.{nonce}.{sig}", now=1001) is None
    assert parse_cookie("token-a", "garbage", now=1001) is None
    # the CSRF token belongs to one session only
    other = new_cookie("token-a", 60, now=1000)
    assert parse_cookie("token-a", cookie, 1001).csrf != parse_cookie("token-a", other, 1001).csrf


async def test_without_public_read_the_page_asks_for_the_token(tmp_path):
    async with running_server(tmp_path) as srv, client_session() as client:
        async with client.get(srv.url + "/") as r:
            page = await r.text()
        assert 'name="token"' in page and "sqlclu" not in page
        async with client.get(srv.url + "/api/events/log") as r:
            assert r.status == 401
            assert "Authorization: Bearer" in (await r.json())["error"]
        async with client.post(srv.url + "/login", data={"token": "wrong"}) as r:
            assert r.status == 401
            assert "not the admin token" in await r.text()
            assert "nd_session" not in r.cookies
        async with client.post(
            srv.url + "/login", data={"token": srv.ctx.admin_token}, allow_redirects=False
        ) as r:
            assert r.status == 303
            cookie = r.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        async with client.get(srv.url + "/") as r:
            page = await r.text()
        assert "sqlclu" in page and "Log out" in page and "Reset cluster sqlclu" in page


async def test_public_read_shows_the_page_but_no_admin_buttons(tmp_path):
    async with (
        running_server(tmp_path, public_read=True) as srv,
        client_session() as client,
        client.get(srv.url + "/") as r,
    ):
        assert r.status == 200
        assert "default-src 'self'" in r.headers["Content-Security-Policy"]
        page = await r.text()
    for text in ("sqlclu", "sql-n1", "first node", "waiting for first node", "w2k3-ent-sp1"):
        assert text in page
    assert 'data-action="release"' not in page and "Reset cluster" not in page


async def test_html_in_node_messages_is_escaped(tmp_path):
    evil = '<script>alert("owned")</script><img src=x onerror=alert(1)>'
    async with running_server(tmp_path, public_read=True) as srv, client_session() as client:
        await move(srv.ctx, SQL_N2, "pxe", message=evil, reason=evil)
        async with client.get(srv.url + "/") as r:
            page = await r.text()
        async with client.get(srv.url + "/?node=" + evil) as r:
            filtered = await r.text()
    assert evil not in page and "<img src=x" not in page
    assert str(escape(evil)) in page  # shown as text: in the message cell and the event log
    assert "<img src=x" not in filtered and "no node with MAC or host name" in filtered


async def latest_events(ctx, count: int):
    async with ctx.sessions() as session:
        rows = await session.scalars(select(Event).order_by(Event.id.desc()).limit(count))
        return list(rows)


async def test_actions_refuse_without_login_bad_csrf_and_unknown_targets(tmp_path):
    async with running_server(tmp_path, public_read=True) as srv, client_session() as client:
        await move(srv.ctx, SQL_N2, "held")
        before = await event_count(srv.ctx)
        json = {"Accept": "application/json"}

        async with client.post(srv.url + "/actions/release", data={"mac": SQL_N2}) as r:
            assert r.status == 401
            assert "log in" in await r.text()
        csrf = await srv.login(client)
        async with client.post(
            srv.url + "/actions/release", data={"mac": SQL_N2, "csrf": "0" * 64}, headers=json
        ) as r:
            assert r.status == 403 and "CSRF" in (await r.json())["error"]
        async with client.post(
            srv.url + "/actions/release",
            data={"mac": SQL_N2, "csrf": csrf},
            headers={**json, "Origin": "http://evil.example"},
        ) as r:
            assert r.status == 403
            assert "came from http://evil.example" in (await r.json())["error"]
        async with client.post(
            srv.url + "/actions/release",
            data={"mac": SQL_N2, "csrf": csrf},
            headers={**json, "Origin": "null"},
        ) as r:
            assert r.status == 403
        async with client.post(
            srv.url + "/actions/release",
            data={"mac": "52:54:00:99:99:99", "csrf": csrf},
            headers=json,
        ) as r:
            assert r.status == 404
            assert "no node with MAC 52:54:00:99:99:99" in (await r.json())["error"]
        async with client.post(
            srv.url + "/actions/release", data={"mac": "zz", "csrf": csrf}, headers=json
        ) as r:
            assert r.status == 400 and "not a MAC address" in (await r.json())["error"]
        async with client.post(
            srv.url + "/actions/reset", data={"cluster": "nope", "csrf": csrf}
        ) as r:  # a plain form post gets a readable page, not JSON
            assert r.status == 404
            page = await r.text()
            assert "no cluster named &#39;nope&#39;" in page and "nothing was changed" in page
        async with client.post(srv.url + "/actions/explode", data={"csrf": csrf}) as r:
            assert r.status == 404
        assert await state_of(srv.ctx, SQL_N2) == "held"
        # nothing changed: the only new rows are the recorded refusal of the first request
        await asyncio.sleep(1)  # refusals of declared auth are written off the request path
        assert await event_count(srv.ctx) == before + 1
        (refusal,) = await latest_events(srv.ctx, 1)
        assert refusal.kind == "auth" and refusal.detail["ip"] == "127.0.0.1"


async def test_logout_needs_the_csrf_token_and_ends_the_session(tmp_path):
    async with running_server(tmp_path) as srv, client_session() as client:
        csrf = await srv.login(client)
        async with client.post(srv.url + "/logout", data={"csrf": "x"}) as r:
            assert r.status == 403
        async with client.post(srv.url + "/logout", data={"csrf": csrf}) as r:
            page = await r.text()
        assert 'name="token"' in page and "sqlclu" not in page
        async with client.get(srv.url + "/") as r:
            assert "sqlclu" not in await r.text()


async def test_the_page_carries_the_event_id_to_resume_from(tmp_path):
    async with running_server(tmp_path) as srv, client_session() as client:
        ev = await move(srv.ctx, SQL_N2, "pxe")
        csrf = await srv.login(client)
        async with client.get(srv.url + "/") as r:
            page = await r.text()
        assert csrf == csrf_of(page)
        assert f'"lastEventId": {ev.id}' in page


async def test_capture_action_marks_a_machine_and_refuses_bad_input(tmp_path):
    from netdeploy.images import capture

    mac = "52:54:00:00:30:01"
    json = {"Accept": "application/json"}
    async with running_server(tmp_path) as srv, client_session() as client:
        csrf = await srv.login(client)
        async with client.get(srv.url + "/") as r:
            assert 'action="/actions/capture"' in await r.text()
        form = {"mac": mac, "image": "debian-12", "csrf": csrf}
        async with client.post(srv.url + "/actions/capture", data=form, headers=json) as r:
            assert r.status == 200, await r.text()
            assert "marked for capture into debian-12" in (await r.json())["message"]
        row = await capture.get(srv.ctx.sessions, mac)
        assert row is not None and row.state == "requested" and row.actor.startswith("admin:")
        bad = {**form, "image": "nosuch"}
        async with client.post(srv.url + "/actions/capture", data=bad, headers=json) as r:
            assert r.status == 404 and "not declared" in (await r.json())["error"]
        stale = {**form, "csrf": "0" * 64}
        async with client.post(srv.url + "/actions/capture", data=stale, headers=json) as r:
            assert r.status == 403
