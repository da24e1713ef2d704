"""``GET /api/events`` (SSE) and ``GET /api/events/log`` against a real server on loopback."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import pytest
from aiohttp import ClientResponse, ClientSession

from netdeploy.http import events_routes
from netdeploy.http.event_cursor import Cursor
from netdeploy.store.models import Cluster, Event
from tests.integration.dashboard_helpers import (
    SQL_N1,
    SQL_N2,
    SQL_N3,
    WEB_1,
    agent_token,
    move,
    report,
    running_server,
)


async def read_frames(
    resp: ClientResponse, count: int, timeout: float = 10
) -> list[dict[str, Any]]:
    """The next ``count`` SSE frames (comments included, as ``{"comment": ...}``)."""
    frames: list[dict[str, Any]] = []
    frame: dict[str, Any] = {}
    while len(frames) < count:
        raw = await asyncio.wait_for(resp.content.readline(), timeout)
        assert raw, "stream ended"
        line = raw.decode().rstrip("\n")
        if not line:
            if frame:
                frames.append(frame)
            frame = {}
        elif line.startswith(":"):
            frame.setdefault("comment", line[1:].strip())
        else:
            field, _, value = line.partition(":")
            frame[field] = value.removeprefix(" ")
    return frames


async def next_events(resp: ClientResponse, count: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while len(events) < count:
        for frame in await read_frames(resp, 1):
            if "data" in frame:
                data = json.loads(frame["data"])
                # "id" or "high/holes" (netdeploy/http/event_cursor.py): it covers this event
                assert Cursor.parse(frame["id"]).sent(data["id"])
                events.append(data)
    return events


async def test_a_change_reaches_a_listener_at_once(tmp_path):
    async with running_server(tmp_path, public_read=True) as srv, ClientSession() as client:
        async with client.get(srv.url + "/api/events") as resp:
            assert resp.headers["Content-Type"] == "text/event-stream"
            first = await read_frames(resp, 1)
            assert first[0]["retry"] == "2000"
            started = time.monotonic()
            ev = await move(srv.ctx, SQL_N2, "pxe", message="PXE ROM asked for boot.ipxe")
            (got,) = await next_events(resp, 1)
            latency = time.monotonic() - started
        assert got["id"] == ev.id and got["mac"] == SQL_N2 and got["to"] == "pxe"
        assert got["text"] == "registered → pxe: test"
        print(f"event reached the SSE client after {latency * 1000:.1f} ms")


async def test_announced_only_progress_has_no_id_and_texts_read_well(tmp_path):
    async with (
        running_server(tmp_path, public_read=True) as srv,
        ClientSession() as client,
        client.get(srv.url + "/api/events") as resp,
    ):
        await read_frames(resp, 1)
        # the rollout core announces progress without writing a row (no id)
        srv.ctx.bus.publish(Event(kind="progress", mac=SQL_N1, detail={"progress": 42.5}))
        gate = Event(id=9001, kind="gate", cluster="sqlclu", from_state="waiting")
        gate.to_state, gate.detail = "formed", {"reason": "sql-n1 reported healthy"}
        admin = Event(id=9002, kind="admin", mac=SQL_N2, detail={"action": "fail"})
        admin.detail["actor"], admin.detail["reason"] = "admin", "bad disk"
        refused = Event(id=9003, kind="rejected", mac=SQL_N3, detail={"error": "wrong state"})
        for ev in (gate, admin, refused):
            srv.ctx.bus.publish(ev)
        frames = await read_frames(resp, 4)
    assert "id" not in frames[0] and json.loads(frames[0]["data"])["text"] == "42%"
    texts = [json.loads(f["data"])["text"] for f in frames[1:]]
    assert texts == [
        "gate waiting → formed: sql-n1 reported healthy",
        "fail by admin: bad disk",
        "refused: wrong state",
    ]


async def test_reconnect_with_last_event_id_replays_what_was_missed(tmp_path):
    async with running_server(tmp_path, public_read=True) as srv, ClientSession() as client:
        seen = await move(srv.ctx, SQL_N1, "pxe")
        missed = [
            await move(srv.ctx, SQL_N2, "pxe"),
            await report(srv.ctx, SQL_N1, progress=10.0),
            await move(srv.ctx, SQL_N3, "failed", reason="disk not found"),
        ]
        headers = {"Last-Event-ID": str(seen.id)}
        async with client.get(srv.url + "/api/events", headers=headers) as resp:
            replayed = await next_events(resp, 3)
            live = await move(srv.ctx, WEB_1, "pxe")
            (after,) = await next_events(resp, 1)
        assert [e["id"] for e in replayed] == [e.id for e in missed]
        assert replayed[2]["text"] == "registered → failed: disk not found"
        assert after["id"] == live.id  # no duplicates, nothing skipped


async def test_too_far_behind_gets_a_reload_and_a_bad_id_a_400(tmp_path, monkeypatch):
    monkeypatch.setattr(events_routes, "REPLAY_MAX", 2)
    async with running_server(tmp_path, public_read=True) as srv, ClientSession() as client:
        for mac in (SQL_N1, SQL_N2, SQL_N3):
            await move(srv.ctx, mac, "pxe")
        async with client.get(srv.url + "/api/events?since=0") as resp:
            frames = await read_frames(resp, 2)
        assert frames[1]["event"] == "reload"
        async with client.get(srv.url + "/api/events", headers={"Last-Event-ID": "x"}) as resp:
            assert resp.status == 400
            assert "not an event id" in (await resp.json())["error"]


async def test_idle_stream_gets_keep_alive_comments(tmp_path, monkeypatch):
    monkeypatch.setattr(events_routes, "KEEPALIVE_S", 0.2)
    async with (
        running_server(tmp_path, public_read=True) as srv,
        ClientSession() as client,
        client.get(srv.url + "/api/events") as resp,
    ):
        frames = await read_frames(resp, 3)
    assert frames[1] == {"comment": "keep-alive"} and frames[2] == {"comment": "keep-alive"}


def _stalled_listener(url: str) -> socket.socket:
    """An SSE client that sends its request and then never reads a byte."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(f"GET /api/events HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    return sock


async def test_a_stalled_client_is_cut_off_and_never_slows_the_others(tmp_path, monkeypatch):
    monkeypatch.setattr(events_routes, "WRITE_TIMEOUT_S", 0.5)
    async with running_server(tmp_path, public_read=True, bus_queue=64) as srv:
        stalled = _stalled_listener(srv.url)
        try:
            async with ClientSession() as client, client.get(srv.url + "/api/events") as resp:
                await read_frames(resp, 1)
                while srv.ctx.bus.listeners < 2:
                    await asyncio.sleep(0.01)
                blob = "x" * 32_000  # 300 events ≈ 10 MB: far more than the socket buffers
                reader = asyncio.create_task(next_events(resp, 300))
                sent = []
                for i in range(1, 301):
                    ev = Event(id=10_000 + i, kind="test", mac=None, cluster=None)
                    ev.detail = {"n": i, "blob": blob}
                    srv.ctx.bus.publish(ev)
                    sent.append(ev.id)
                    await asyncio.sleep(0.002)  # a fast reader keeps up with this pace
                got = [e["id"] for e in await reader]
                assert got == sent  # the reading client got everything, in order
                deadline = time.monotonic() + 10
                while srv.ctx.bus.listeners > 1 and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                assert srv.ctx.bus.listeners == 1  # the stalled one was cut off
                async with client.get(srv.url + "/api/version") as r:
                    assert r.status == 200
        finally:
            stalled.close()


async def test_a_closed_stream_unsubscribes_and_shutdown_is_prompt(tmp_path):
    async with running_server(tmp_path, public_read=True) as srv:
        async with ClientSession() as client, client.get(srv.url + "/api/events") as resp:
            await read_frames(resp, 1)
            assert srv.ctx.bus.listeners == 1
        await move(srv.ctx, SQL_N2, "pxe")  # the write to the closed socket notices
        deadline = time.monotonic() + 5
        while srv.ctx.bus.listeners and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert srv.ctx.bus.listeners == 0
        client = ClientSession()
        resp = await client.get(srv.url + "/api/events")
        await read_frames(resp, 1)
    # leaving `running_server` ran cleanup with a stream open: the stream ended, not hung
    assert await resp.content.read() == b""
    resp.close()
    await client.close()


async def test_event_log_filters_by_node_cluster_and_pages(tmp_path):
    async with running_server(tmp_path, public_read=True) as srv, ClientSession() as client:
        await move(srv.ctx, SQL_N2, "pxe")
        await move(srv.ctx, WEB_1, "pxe")
        await report(srv.ctx, SQL_N2, progress=50.0, message="writing disk")
        async with srv.ctx.sessions() as session:  # a cluster event without a MAC
            gate = Event(kind="gate", cluster="sqlclu", detail={"gate": "formed"})
            session.add(gate)
            await session.commit()

        async def log(query: str) -> tuple[int, Any]:
            async with client.get(srv.url + "/api/events/log?" + query) as r:
                return r.status, await r.json()

        status, body = await log("node=sql-n2")
        assert status == 200
        assert [e["kind"] for e in body["events"]] == ["progress", "state", "state"]
        assert body["events"][0]["text"] == "writing disk; 50%"
        _, by_mac = await log("mac=52-54-00-00-10-02")
        assert by_mac["events"] == body["events"]
        _, cluster = await log("cluster=sqlclu&limit=1000")
        assert {e["mac"] for e in cluster["events"]} == {SQL_N1, SQL_N2, SQL_N3, None}
        assert cluster["events"][0]["id"] == gate.id  # newest first
        _, page1 = await log("limit=2")
        _, page2 = await log(f"limit=2&before={page1['next_before']}")
        assert page2["events"][0]["id"] < page1["events"][-1]["id"]
        for query, code, words in [
            ("node=nobody", 404, "no node with MAC or host name 'nobody'"),
            ("cluster=nope", 404, "no cluster named 'nope'; clusters: haclu, hvclu, sqlclu"),
            ("limit=0", 400, "out of range"),
            ("before=abc", 400, "not a whole number"),
        ]:
            status, body = await log(query)
            assert status == code and words in body["error"], (query, body)


async def test_metrics_count_nodes_per_state_and_gates(tmp_path):
    async with running_server(tmp_path) as srv, ClientSession() as client:
        await move(srv.ctx, SQL_N2, "held")
        await move(srv.ctx, SQL_N3, "held")
        async with srv.ctx.sessions() as session:
            (await session.get(Cluster, "sqlclu")).gate = "formed"
            await session.commit()
        admin = {"Authorization": f"Bearer {srv.ctx.admin_token}"}  # public_read = false
        async with client.get(srv.url + "/api/nodes/52:54:00:99:99:99", headers=admin) as r:
            assert r.status == 404
        token = await agent_token(srv.ctx, SQL_N3)  # sql-n3 held: its agent waits at the gate
        waiting = asyncio.create_task(
            client.get(
                srv.url + f"/api/nodes/{SQL_N3}/gate?timeout=30",
                headers={"Authorization": f"Bearer {token}"},
            )
        )
        while not len(srv.ctx.rollout.waiters):
            await asyncio.sleep(0.02)
        async with client.get(srv.url + "/metrics", headers=admin) as r:  # [metrics] public
            text = await r.text()
    lines = set(text.splitlines())
    # counters are process-wide (other tests add to them): the series must exist, counting up
    assert any(
        line.startswith('netdeploy_http_responses_total{route="/api/nodes/{mac}",status="404"}')
        for line in lines
    )
    for line in [
        'netdeploy_nodes{state="held"} 2.0',
        'netdeploy_nodes{state="registered"} 6.0',  # 2 + issue 16's hvclu and haclu
        'netdeploy_nodes{state="failed"} 0.0',
        'netdeploy_cluster_nodes{cluster="sqlclu",state="held"} 2.0',
        'netdeploy_cluster_gate{cluster="sqlclu",gate="formed"} 1.0',
        'netdeploy_cluster_gate{cluster="sqlclu",gate="waiting"} 0.0',
        'netdeploy_images{status="unhashed"} 4.0',  # 2 + issue 16's w2k12r2-dc, rocky-9-ha
        "netdeploy_event_stream_clients 0.0",
        "netdeploy_gate_waiting_requests 1.0",
    ]:
        assert line in lines, line
    waiting.cancel()


@pytest.mark.parametrize("path", ["/api/events", "/api/events/log"])
async def test_event_routes_need_a_login_unless_public(tmp_path, path):
    async with running_server(tmp_path) as srv, ClientSession() as client:
        async with client.get(srv.url + path) as r:
            assert r.status == 401
        headers = {"Authorization": f"Bearer {srv.ctx.admin_token}"}
        async with client.get(srv.url + path, headers=headers) as r:
            assert r.status == 200
