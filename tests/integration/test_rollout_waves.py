"""A release wave is one change, whatever its size (docs/decisions/0014), at the API.

The first node's healthy report releases every held node of a ``waves:N`` cluster in one
writer batch: one UPDATE of the nodes, one event row (so one NOTIFY on PostgreSQL), the same
statements for 5 held nodes as for 40. Every parked long-poll still wakes, each node's
timeline (explain, the event log filtered by node) still shows its release, and on two
servers sharing PostgreSQL the long-polls parked on the other server wake too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from sqlalchemy import event, func, select

from netdeploy.store.models import Event
from netdeploy.store.notify import CHANNEL, decode
from tests.conftest import start_server
from tests.integration.rollout_support import (
    ADMIN,
    Agent,
    in_process_server,
    lab_config,
    mac_of,
    prepare_nodes,
    releases,
)
from tests.integration.test_postgres_notify import _parked
from tests.pgserver import pg_server, pg_url  # noqa: F401  (fixtures)


@contextlib.contextmanager
def statements(engine: Any) -> Iterator[list[tuple[str, int]]]:
    """Every SQL statement the engine sends meanwhile: (its first words, parameter sets)."""
    seen: list[tuple[str, int]] = []

    def heard(_conn, _cursor, statement, parameters, _context, executemany) -> None:  # type: ignore[no-untyped-def]
        head = " ".join(statement.split()[:3])
        seen.append((head, len(parameters) if executemany else 1))

    event.listen(engine.sync_engine, "before_cursor_execute", heard)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", heard)


async def _held_lab(
    http: aiohttp.ClientSession, url: str, tokens: dict[str, str], held: int
) -> tuple[Agent, list[asyncio.Task[tuple[int, dict]]]]:
    """n1 imaged and started; n2.. imaged, held and parked on the gate."""
    agents = [Agent(http, url, mac_of(i), tokens[mac_of(i)]) for i in range(1, held + 2)]
    await asyncio.gather(*(a.image(steps=1) for a in agents))
    first = agents[0]
    assert (await first.event("starting"))[0] == 200
    polls = [asyncio.create_task(a.gate(timeout=30)) for a in agents[1:]]
    await _parked(http, url, held)
    return first, polls


async def _release(tmp_path: Path, held: int, database: str | None) -> list[tuple[str, int]]:
    """Release ``held`` nodes in one wave; check every poll, timeline and the record; return
    the statements of the releasing batch."""
    config = lab_config(tmp_path, held + 1, release=f"waves:{held}", database=database)
    tokens = await prepare_nodes(config)
    async with in_process_server(config) as srv, aiohttp.ClientSession() as http:
        first, polls = await _held_lab(http, srv.url, tokens, held)
        async with srv.ctx.sessions() as session:
            before = await session.scalar(select(func.max(Event.id)))
        await srv.ctx.rollout.run(_nothing)  # the polls' own batch (last_seen) is written
        with statements(srv.ctx.engine) as sent:
            status, body = await first.health()
            assert status == 200 and body["gate"] == "releasing", body
            views = [view for _, view in await asyncio.gather(*polls)]
        # every parked long-poll woke with its own node released
        assert sorted(v["mac"] for v in views) == [mac_of(i) for i in range(2, held + 2)]
        assert all(v["released"] and v["state"] == "released" for v in views)
        assert {v["hostname"] for v in views} == {f"n{i}" for i in range(2, held + 2)}
        async with srv.ctx.sessions() as session:
            rows = list(await session.scalars(select(Event).where(Event.id > before)))
            assert dict(await releases(session)) == {mac_of(i): 1 for i in range(1, held + 2)}
        # one row for the whole wave, naming every node; no row per node
        wave = [e for e in rows if e.kind == "state" and e.to_state == "released"]
        assert len(wave) == 1 and wave[0].mac is None and wave[0].detail["count"] == held
        assert wave[0].detail["macs"] == [mac_of(i) for i in range(2, held + 2)]
        # the node's timeline shows its release: explain and the event log by node
        last = f"n{held + 1}"
        async with http.get(f"{srv.url}/api/nodes/{last}/explain", headers=ADMIN) as resp:
            steps = (await resp.json())["steps"]
        assert any("held → released" in s["text"] for s in steps), steps
        async with http.get(
            f"{srv.url}/api/events/log", params={"node": last, "kind": "state"}, headers=ADMIN
        ) as resp:
            log = (await resp.json())["events"]
        assert [e["to"] for e in log][:2] == ["released", "held"]
        assert f"policy waves:{held}" in log[0]["text"] and "wave 1" in log[0]["text"]
    return sent


async def _nothing(batch: Any) -> None:
    """A writer action that changes nothing: once it ran, everything queued before it did."""


def _writes(sent: list[tuple[str, int]]) -> list[tuple[str, int]]:
    return [s for s in sent if s[0].split()[0] in ("UPDATE", "INSERT", "DELETE")]


@pytest.mark.parametrize(
    "store", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
async def test_a_wave_is_one_update_and_one_event_row_whatever_its_size(
    tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    small, large = 5, 40
    urls = (
        [await request.getfixturevalue("pg_server").create_database() for _ in range(2)]
        if store == "postgresql"
        else [None, None]
    )
    few = await _release(tmp_path / "few", small, urls[0])
    many = await _release(tmp_path / "many", large, urls[1])
    # the same statements, with as many parameter sets, for 5 held nodes as for 40
    assert few == many, (few, many)
    updates = [s for s in _writes(many) if s[0].startswith("UPDATE nodes")]
    inserts = [s for s in _writes(many) if s[0].startswith("INSERT INTO events")]
    assert len(inserts) == 1  # one statement: the health report, the gate, the wave
    assert len(updates) <= 3  # the first node (its own row), the wave, nothing per node


@pytest.mark.postgres
async def test_a_wave_is_one_notify_and_wakes_long_polls_on_the_other_server(
    tmp_path: Path,
    pg_url: str,  # noqa: F811
) -> None:
    held = 30
    config = lab_config(tmp_path / "lab", held + 1, release=f"waves:{held}", sweep_interval=60)
    async with _two_servers(tmp_path, config, pg_url) as (a, b):
        tokens = await prepare_nodes(config, database=pg_url)
        listener = await asyncpg.connect(pg_url)
        heard: list[str] = []
        try:
            async with aiohttp.ClientSession() as http:
                # n1 reports to A; every held node waits on B
                agents = [Agent(http, b.url, mac_of(i), tokens[mac_of(i)]) for i in range(2, 32)]
                first = Agent(http, a.url, mac_of(1), tokens[mac_of(1)])
                await asyncio.gather(first.image(steps=1), *(x.image(steps=1) for x in agents))
                await first.event("starting")
                polls = [asyncio.create_task(x.gate(timeout=30)) for x in agents]
                await _parked(http, b.url, held)
                await listener.add_listener(CHANNEL, lambda *args: heard.append(args[3]))
                status, body = await first.health()
                assert status == 200, body
                views = [view for _, view in await asyncio.gather(*polls)]
                assert all(v["released"] for v in views), views
                await asyncio.sleep(0.3)  # a notification sent later would be here by now
        finally:
            await listener.close()
    # A's releasing batch: one INSERT of its rows (health, gate, the wave), one NOTIFY
    notices = [decode(p) for p in heard]
    assert len(notices) == 1, heard
    engine_rows = await _rows_named(pg_url, notices[0])
    assert [e.detail["count"] for e in engine_rows if e.to_state == "released"] == [held]


async def _rows_named(url: str, notice: Any) -> list[Event]:
    from netdeploy.store import open_store  # test helper: the store the servers wrote

    engine, sessions = await open_store(url)
    try:
        async with sessions() as session:
            where = Event.id.between(*notice.span) if notice.span else Event.id.in_(notice.ids)
            return list(await session.scalars(select(Event).where(where)))
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def _two_servers(tmp_path: Path, config: Path, url: str) -> AsyncIterator[tuple[Any, ...]]:
    started = await asyncio.gather(
        *(
            asyncio.to_thread(start_server, tmp_path / f"s{i}", config=config, extra=("--db", url))
            for i in "ab"
        ),
        return_exceptions=True,
    )
    servers = tuple(s for s in started if not isinstance(s, BaseException))
    try:
        assert len(servers) == 2, [str(s) for s in started if isinstance(s, BaseException)]
        yield servers
    finally:
        for server in servers:
            server.stop()


async def test_event_rows_get_the_ids_they_were_stored_under(tmp_path: Path) -> None:
    """SQLite: one executemany and last_insert_rowid() name every row (rollout/rows.py)."""
    from netdeploy.rollout.rows import insert_events  # the function under test
    from netdeploy.store import open_store
    from netdeploy.store.models import utcnow

    engine, sessions = await open_store(f"sqlite+aiosqlite:///{tmp_path / 'nd.db'}")
    try:
        async with sessions() as session:
            first = [Event(kind="report", detail={"n": i}) for i in range(3)]
            await insert_events(session, first, utcnow())
            await session.commit()
        async with sessions() as session:
            more = [Event(kind="health", detail={"n": i}) for i in range(5)]
            await insert_events(session, more, utcnow())
            await session.commit()
            for ev in first + more:
                stored = await session.get(Event, ev.id)
                assert (stored.kind, stored.detail) == (ev.kind, ev.detail)
            assert [ev.id for ev in first + more] == list(range(first[0].id, first[0].id + 8))
    finally:
        await engine.dispose()
