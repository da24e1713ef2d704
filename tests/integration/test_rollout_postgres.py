"""The agent API over HTTP with PostgreSQL as the store: in-process, as `netdeploy serve
--db postgresql://...` across a crash, and as two servers sharing one database.

The HTTP rollout tests written for SQLite run here unchanged (imported below; this module's
``lab`` fixture serves them from a PostgreSQL database).
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import func, select

from netdeploy.store import open_store
from netdeploy.store.models import Event, Node
from tests import pgserver
from tests.conftest import start_server
from tests.integration import test_rollout_api as api_suite
from tests.integration.rollout_support import (
    Agent,
    in_process_server,
    lab_config,
    mac_of,
    prepare_nodes,
    releases,
)
from tests.pgserver import pg_server, pg_url  # noqa: F401  (fixtures)

pytestmark = pytest.mark.postgres


@pytest.fixture
async def lab(tmp_path: Path, pg_url: str):  # noqa: F811
    config = lab_config(tmp_path, 3, database=pg_url)
    tokens = await prepare_nodes(config)
    async with in_process_server(config) as srv, aiohttp.ClientSession() as http:
        yield srv, http, tokens


test_bad_input_is_refused_recorded_and_changes_nothing = (
    api_suite.test_bad_input_is_refused_recorded_and_changes_nothing
)
test_unknown_and_malformed_macs = api_suite.test_unknown_and_malformed_macs
test_wrong_tokens_are_refused_and_recorded = api_suite.test_wrong_tokens_are_refused_and_recorded
test_repeated_reports_never_advance_twice = api_suite.test_repeated_reports_never_advance_twice
test_admin_actions_over_http = api_suite.test_admin_actions_over_http


async def _store(url: str) -> tuple[dict[str, str], dict[str, int], int]:
    """Node states, release events per host name, and all event rows, straight from PG."""
    engine, sessions = await open_store(url)
    try:
        async with sessions() as session:
            nodes = list(await session.scalars(select(Node)))
            by_mac = dict(await releases(session))
            total = await session.scalar(select(func.count()).select_from(Event))
    finally:
        await engine.dispose()
    names = {n.mac: n.hostname for n in nodes}
    return (
        {n.hostname: n.state for n in nodes},
        {names[mac]: count for mac, count in by_mac.items()},
        total,
    )


async def test_four_hundred_http_reports_at_once_lose_nothing(tmp_path: Path, pg_url: str) -> None:  # noqa: F811
    """100 agents post imaging 0/50/100 % and imaged all at once (400 requests)."""
    config = lab_config(tmp_path, 100, release="manual", database=pg_url)
    tokens = await prepare_nodes(config)
    async with in_process_server(config) as srv, aiohttp.ClientSession() as http:
        agents = [Agent(http, srv.url, mac_of(i), tokens[mac_of(i)]) for i in range(1, 101)]
        _, _, before = await _store(pg_url)
        await asyncio.gather(*(agent.image(steps=2) for agent in agents))
    states, released, total = await _store(pg_url)
    assert states.pop("n1") == "released" and released == {"n1": 1}
    assert set(states.values()) == {"held"}
    # per node: pxe→imaging, imaging→imaged, imaged→held|released; progress adds no row
    assert total - before == 300


async def test_serve_on_postgresql_keeps_held_nodes_held_across_a_crash(
    tmp_path: Path,
    pg_url: str,  # noqa: F811
) -> None:
    config = lab_config(tmp_path / "lab", 4)  # no database in the file: --db decides
    tokens = await prepare_nodes(config, database=pg_url)
    state_dir = tmp_path / "state"
    server = start_server(state_dir, config=config, extra=("--db", pg_url))
    try:
        async with aiohttp.ClientSession() as http:
            n1, n2, n3, n4 = (
                Agent(http, server.url, mac_of(i), tokens[mac_of(i)]) for i in (1, 2, 3, 4)
            )
            await asyncio.gather(n1.image(), n2.image(), n3.image(), n4.image())
            await n1.event("starting")
            status, body = await n1.health()
            assert status == 200 and body["gate"] == "releasing"
            assert (await n2.gate(timeout=5))[1]["released"]
            await n2.event("starting")
            server.stop(signal.SIGKILL)  # a crash: nothing is flushed on the way out

            states, released, _ = await _store(pg_url)
            assert states == {"n1": "joined", "n2": "starting", "n3": "held", "n4": "held"}

            server = start_server(
                state_dir, config=config, extra=("--db", pg_url), http_port=server.http_port
            )
            await asyncio.sleep(0.5)  # the new process's first sweep settles every gate
            for agent in (n3, n4):
                status, view = await agent.gate(timeout=0)
                assert status == 200 and view["state"] == "held" and not view["released"]
            assert (await _store(pg_url))[:2] == (states, released)

            poll = asyncio.create_task(n3.gate(timeout=20))
            await n2.event("joined")  # sequential: n3 is next, woken on this server
            assert (await poll)[1]["released"]
            await n3.event("starting")
            await n3.event("joined")
            assert (await n4.gate(timeout=5))[1]["released"]
            await n4.event("starting")
            status, body = await n4.event("joined")
            assert status == 200 and body["gate"] == "complete"
    finally:
        server.stop()
    states, released, _ = await _store(pg_url)
    assert set(states.values()) == {"joined"}
    assert released == {"n1": 1, "n2": 1, "n3": 1, "n4": 1}  # each exactly once
    assert not (state_dir / "netdeploy.db").exists()  # the state lives in PostgreSQL


async def test_two_servers_on_one_database_release_each_node_once(
    tmp_path: Path,
    pg_url: str,  # noqa: F811
) -> None:
    """Agents split between two `netdeploy serve` processes sharing one PostgreSQL.

    Both start at once on an empty database: schema upgrade and config import take turns
    (store.db.STARTUP_LOCK). Agents long-poll for 30 s: a release decided by one server
    wakes long-polls on the other at once (LISTEN/NOTIFY, netdeploy/fanout.py), so the
    rollout takes as long as on one server; the gate itself stays exact (the writers'
    cluster lock).
    """
    config = lab_config(tmp_path / "lab", 12, release="waves:3")
    started = await asyncio.gather(
        *(
            asyncio.to_thread(
                start_server, tmp_path / f"state{i}", config=config, extra=("--db", pg_url)
            )
            for i in (1, 2)
        ),
        return_exceptions=True,
    )
    servers = [s for s in started if not isinstance(s, BaseException)]
    try:
        assert len(servers) == 2, [str(s) for s in started if isinstance(s, BaseException)]
        tokens = await prepare_nodes(config, database=pg_url)
        async with aiohttp.ClientSession() as http:
            agents = [
                Agent(http, servers[i % 2].url, mac_of(i), tokens[mac_of(i)]) for i in range(1, 13)
            ]
            in_flight, peak = 0, 0

            async def follower(agent: Agent) -> None:
                nonlocal in_flight, peak
                await agent.image(steps=1)
                view = {"released": False}
                while not view["released"]:
                    _, view = await agent.gate(timeout=30)
                in_flight += 1
                peak = max(peak, in_flight)
                await agent.event("starting")
                await asyncio.sleep(0.05)
                in_flight -= 1
                assert (await agent.event("joined"))[0] == 200

            async def first(agent: Agent) -> None:
                await agent.image(steps=1)
                await agent.event("starting")
                assert (await agent.health())[0] == 200

            await asyncio.wait_for(
                asyncio.gather(first(agents[0]), *(follower(a) for a in agents[1:])), 60
            )
    finally:
        for server in servers:
            server.stop()
    states, released, _ = await _store(pg_url)
    assert set(states.values()) == {"joined"}
    assert set(released.values()) == {1} and len(released) == 12
    assert peak <= 3


async def test_postgresql_restarting_under_the_server_loses_no_report(tmp_path: Path) -> None:
    """While PostgreSQL is down agents get 503 "retry" (their retry loop covers it); after it
    is back, the next report is stored: the pool reconnects (pool_pre_ping)."""
    try:
        private = pgserver.start()  # its own server: the shared one must not go away
    except pgserver.NoPostgres as exc:
        pytest.skip(str(exc))
    try:
        url = await private.create_database()
        config = lab_config(tmp_path, 2, database=url)
        tokens = await prepare_nodes(config)
        async with in_process_server(config) as srv, aiohttp.ClientSession() as http:
            n2 = Agent(http, srv.url, mac_of(2), tokens[mac_of(2)])
            assert (await n2.event("imaging", 10))[0] == 200
            private.shutdown()
            status, body = await n2.event("imaging", 20)
            assert status == 503 and "retry" in body["error"]
            private.launch()
            status, body = await n2.event("imaging", 30)
            assert status == 200 and body["progress"] == 30
            status, body = await n2.event("imaged")
            assert status == 200 and body["state"] == "held"
        states, _, _ = await _store(url)
        assert states == {"n1": "pxe", "n2": "held"}
    finally:
        private.stop()
