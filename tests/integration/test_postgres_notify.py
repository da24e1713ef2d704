"""Several `netdeploy serve` processes on one PostgreSQL act as one (DESIGN "Scale").

The real pieces: a private PostgreSQL (tests/pgserver.py), its ``events_notify`` trigger, two
server processes, agents and an SSE client over HTTP. What is checked: the trigger's payloads
(committed ids only, their writer named), a release decided on server A waking a long-poll
parked on server B at once, B's event stream carrying A's events once each and in order, and
B's listener connection killed under it: it reconnects and publishes what was written
meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from sqlalchemy import func, select, text

from netdeploy.eventlog import macs_of
from netdeploy.rollout.rows import insert_events
from netdeploy.store import open_store
from netdeploy.store.db import origin_of
from netdeploy.store.models import Event, utcnow
from netdeploy.store.notify import CHANNEL, decode
from tests.conftest import ServerProcess, start_server
from tests.integration.rollout_support import ADMIN, Agent, lab_config, mac_of, prepare_nodes
from tests.pgserver import pg_server, pg_url  # noqa: F401  (fixtures)

pytestmark = pytest.mark.postgres

KILL_LISTENERS = (
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
    "WHERE application_name LIKE 'netdeploy-%-listen' AND datname = current_database()"
)

RAW_INSERT = (
    "INSERT INTO events (at, kind, detail) "
    "SELECT now(), 'raw', '{}'::json FROM generate_series(1, 2000)"
)
RAW_SPAN = "SELECT min(id), max(id) FROM events WHERE kind = 'raw'"


async def _drain(queue: asyncio.Queue[str], quiet: float = 0.3) -> list[str]:
    """Every notification until none arrives for ``quiet`` seconds."""
    got = []
    with contextlib.suppress(TimeoutError):
        while True:
            got.append(await asyncio.wait_for(queue.get(), quiet))
    return got


async def test_the_trigger_notifies_committed_event_ids_with_their_writer(pg_url: str) -> None:  # noqa: F811
    engine, sessions = await open_store(pg_url)
    listener = await asyncpg.connect(pg_url)
    heard: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener(CHANNEL, lambda *args: heard.put_nowait(args[3]))
    origin = origin_of(engine)
    try:
        assert origin and origin.startswith("netdeploy-")
        # the ORM path (session.add, as most modules write events)
        async with sessions() as session, session.begin():
            orm = [Event(kind="test", detail={"n": i}) for i in range(3)]
            session.add_all(orm)
        notices = [decode(p) for p in await _drain(heard)]
        assert {n.origin for n in notices} == {origin}
        assert sorted(i for n in notices for i in n.ids) == sorted(ev.id for ev in orm)

        # rolled back: PostgreSQL sends nothing
        async with sessions() as session:
            session.add(Event(kind="test"))
            await session.flush()
            await session.rollback()
        assert await _drain(heard) == []

        # the rollout writer's Core INSERT (SQLAlchemy sends 1,000 rows per statement)
        async with sessions() as session, session.begin():
            core = [Event(kind="test") for _ in range(1500)]
            await insert_events(session, core, utcnow())
        notices = [decode(p) for p in await _drain(heard)]
        assert {n.origin for n in notices} == {origin}
        assert sorted(i for n in notices for i in n.ids) == [ev.id for ev in core]

        # raw SQL is covered too; 2,000 ids in one statement are too long a list: a range
        async with sessions() as session, session.begin():
            await session.execute(text(RAW_INSERT))
            low, high = (await session.execute(text(RAW_SPAN))).one()
        (payload,) = await _drain(heard)
        assert len(payload) < 8000
        notice = decode(payload)
        assert notice.origin == origin and notice.ids == () and notice.span == (low, high)
    finally:
        await listener.close()
        await engine.dispose()


class SseClient:
    """Reads ``GET /api/events`` in the background; ``events`` are the frames' data."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.events: list[dict[str, Any]] = []
        self.cursors: list[str] = []  # each event's `id:` field
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.response.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("id: "):
                self.cursors.append(line[4:])
            if line.startswith("data: "):
                self.events.append(json.loads(line[6:]))

    @property
    def ids(self) -> list[int]:
        return [ev["id"] for ev in self.events if ev.get("id") is not None]

    async def wait_for_ids(self, wanted: set[int], timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not wanted <= set(self.ids):
            assert time.monotonic() < deadline, f"never streamed {sorted(wanted - set(self.ids))}"
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def sse(
    http: aiohttp.ClientSession, url: str, last_event_id: str | None = None
) -> AsyncIterator[SseClient]:
    headers = {**ADMIN, **({"Last-Event-ID": last_event_id} if last_event_id else {})}
    async with http.get(f"{url}/api/events", headers=headers) as response:
        assert response.status == 200
        client = SseClient(response)
        try:
            yield client
        finally:
            client.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await client.task


@contextlib.asynccontextmanager
async def two_servers(tmp_path: Path, pg_url: str) -> AsyncIterator[tuple[ServerProcess, ...]]:  # noqa: F811
    config = lab_config(tmp_path / "lab", 3, sweep_interval=60)
    started = await asyncio.gather(
        *(
            asyncio.to_thread(
                start_server, tmp_path / f"s{i}", config=config, extra=("--db", pg_url)
            )
            for i in "ab"
        ),
        return_exceptions=True,
    )
    servers = tuple(s for s in started if isinstance(s, ServerProcess))
    try:
        assert len(servers) == 2, [str(s) for s in started if not isinstance(s, ServerProcess)]
        yield servers
    finally:
        for server in servers:
            server.stop()


async def _event_ids(url: str, after: int = 0) -> dict[int, str | None]:
    engine, sessions = await open_store(url)
    try:
        async with sessions() as session:
            rows = await session.execute(select(Event.id, Event.mac).where(Event.id > after))
            return {event_id: mac for event_id, mac in rows}
    finally:
        await engine.dispose()


async def _last_id(url: str) -> int:
    engine, sessions = await open_store(url)
    try:
        async with sessions() as session:
            return await session.scalar(select(func.coalesce(func.max(Event.id), 0))) or 0
    finally:
        await engine.dispose()


async def _parked(http: aiohttp.ClientSession, url: str, count: int) -> None:
    """Wait until ``count`` long-polls wait at the gate on that server (its /metrics)."""
    for _ in range(200):
        async with http.get(f"{url}/metrics", headers=ADMIN) as response:  # [metrics] public
            text = await response.text()
        if re.search(rf"^netdeploy_rollout_gate_waiters {count}\.0$", text, re.M):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {count} long-polls parked on {url}")


async def _release_across(
    http: aiohttp.ClientSession, a: ServerProcess, b: ServerProcess, tokens: dict[str, str]
) -> float:
    """n1 (first node) reports to A; n2 long-polls on B (30 s): seconds until B answers."""
    n1 = Agent(http, a.url, mac_of(1), tokens[mac_of(1)])
    n2 = Agent(http, b.url, mac_of(2), tokens[mac_of(2)])
    await n1.image(steps=1)
    await n2.image(steps=1)
    await n1.event("starting")
    poll = asyncio.create_task(n2.gate(timeout=30))
    await _parked(http, b.url, 1)
    started = time.monotonic()
    status, body = await n1.health()  # A's writer forms the cluster and releases n2
    assert status == 200 and body["gate"] == "releasing", body
    status, view = await poll
    waited = time.monotonic() - started
    assert status == 200 and view["released"] and view["state"] == "released", view
    # a notification, not the poll's 30 s timeout (margin for a loaded machine)
    assert waited < 15, f"B's long-poll answered after {waited:.1f} s"
    return waited


async def test_a_release_on_one_server_wakes_a_long_poll_and_streams_on_the_other(
    tmp_path: Path,
    pg_url: str,  # noqa: F811
) -> None:
    async with two_servers(tmp_path, pg_url) as (a, b):
        tokens = await prepare_nodes(tmp_path / "lab" / "netdeploy.toml", database=pg_url)
        async with aiohttp.ClientSession() as http, sse(http, b.url) as stream:
            before = await _last_id(pg_url)
            waited = await _release_across(http, a, b, tokens)
            print(f"release on A → long-poll on B answered in {waited * 1000:.0f} ms")
            written = await _event_ids(pg_url, before)
            await stream.wait_for_ids(set(written))
            await asyncio.sleep(0.3)  # anything published twice would arrive by now
    assert len(stream.ids) == len(set(stream.ids)), "an event was streamed twice"
    # (older ids may come too: prepare_nodes' rows, heard by B after the stream opened)
    ids = [i for i in stream.ids if i > before]
    assert set(ids) == set(written)
    n1_ids = [i for i in ids if written[i] == mac_of(1)]  # written through A only
    assert n1_ids == sorted(n1_ids) and len(n1_ids) >= 4
    released = [e for e in stream.events if mac_of(2) in macs_of(e) and e["to"] == "released"]
    assert len(released) == 1


async def test_a_killed_listener_reconnects_and_catches_up(
    tmp_path: Path,
    pg_url: str,  # noqa: F811
) -> None:
    async with two_servers(tmp_path, pg_url) as (a, b):
        tokens = await prepare_nodes(tmp_path / "lab" / "netdeploy.toml", database=pg_url)
        admin = await asyncpg.connect(pg_url)
        killing = True

        async def kill_listeners() -> int:
            killed = 0
            while killing:
                killed += await admin.fetchval(KILL_LISTENERS)
                await asyncio.sleep(0.03)
            return killed

        try:
            async with aiohttp.ClientSession() as http, sse(http, b.url) as stream:
                before = await _last_id(pg_url)
                killer = asyncio.create_task(kill_listeners())
                await asyncio.sleep(0.2)
                # written through A while B cannot listen
                n3 = Agent(http, a.url, mac_of(3), tokens[mac_of(3)])
                await n3.image(steps=2)
                await asyncio.sleep(0.3)
                killing = False
                assert await killer >= 2  # both servers' listeners, at least once
                written = await _event_ids(pg_url, before)
                await stream.wait_for_ids(set(written), timeout=20)
                assert len(stream.ids) == len(set(stream.ids))
                # and B listens again: a release on A wakes B's long-poll at once
                await _release_across(http, a, b, tokens)
        finally:
            await admin.close()
    log = b.log.read_text()
    assert "lost the connection that listens for other servers' events" in log
    caught = [int(n) for n in re.findall(r"caught up (\d+) written meanwhile", log)]
    assert sum(caught) >= 1, log[-3000:]
    assert "Traceback" not in log


async def test_an_sse_client_resuming_gets_an_event_that_committed_out_of_id_order(
    tmp_path: Path,
    pg_url: str,  # noqa: F811
) -> None:
    """Event ``late`` gets the lower id but commits after ``early``, which is streamed first:
    the cursor in ``id:`` says ``late`` is still missing, and a resume replays it."""
    config = lab_config(tmp_path / "lab", 1)
    server = start_server(tmp_path / "s", config=config, extra=("--db", pg_url))
    engine, sessions = await open_store(pg_url)
    try:
        async with aiohttp.ClientSession() as http, sessions() as slow:
            async with sse(http, server.url) as stream:
                late = Event(kind="test", detail={"n": "late"})
                slow.add(late)
                await slow.flush()  # id drawn, not committed
                async with sessions() as fast, fast.begin():
                    early = Event(kind="test", detail={"n": "early"})
                    fast.add(early)
                await stream.wait_for_ids({early.id})
                assert late.id < early.id and late.id not in stream.ids
                cursor = stream.cursors[-1]
                assert cursor == f"{early.id}/{late.id}"
            await slow.commit()  # while no client listens
            await asyncio.sleep(0.3)  # the server has heard of it (and has nobody to tell)
            # the old id field (just the highest id) would have lost it for good
            async with sse(http, server.url, str(early.id)) as plain:
                await asyncio.sleep(0.5)
            assert late.id not in plain.ids
            async with sse(http, server.url, cursor) as resumed:
                await resumed.wait_for_ids({late.id})
                await asyncio.sleep(0.2)
            assert resumed.ids == [late.id] and resumed.cursors == [str(early.id)]
    finally:
        await engine.dispose()
        server.stop()
