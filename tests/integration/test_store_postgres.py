"""The store and the rollout core on a real PostgreSQL server (tests/pgserver.py).

The SQLite store and rollout-service tests run here unchanged against PostgreSQL (imported
below; this module's ``store`` and ``lab`` fixtures hand them a PostgreSQL database), plus
what only a real server can show: the schema PostgreSQL really has, timestamps through a
server whose time zone is not UTC, and the cluster lock that keeps two writers apart.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import func, select, text

from netdeploy.config import load_config
from netdeploy.eventlog import macs_of
from netdeploy.inventory import NodeState as S
from netdeploy.rollout.engine import Batch
from netdeploy.rollout.inventory import import_config
from netdeploy.rollout.machine import IllegalTransition
from netdeploy.rollout.state import set_state
from netdeploy.store import Event, Node, open_store
from netdeploy.store.db import MIGRATIONS
from netdeploy.store.models import Base, Cluster, SecretFetch, utcnow
from tests.conftest import DEMO_CONFIG
from tests.integration import test_rollout_service as rollout_suite
from tests.integration import test_store as store_suite
from tests.integration.rollout_support import mac_of
from tests.integration.test_rollout_service import Lab, make_lab
from tests.pgserver import pg_server, pg_url  # noqa: F401  (fixtures)

pytestmark = pytest.mark.postgres

# ---------------------------------------------------------------- the SQLite suites, on PG


@pytest.fixture
async def store(pg_url: str):  # noqa: F811
    engine, sessions = await open_store(pg_url)
    yield engine, sessions
    await engine.dispose()


@pytest.fixture
async def lab(tmp_path: Path, pg_url: str):  # noqa: F811
    lab = await make_lab(tmp_path, database=pg_url)
    yield lab
    await lab.engine.stop()
    await lab.ctx.close()


test_migrations_create_exactly_the_models = store_suite.test_migrations_create_exactly_the_models
test_import_is_idempotent_and_keeps_runtime_state = (
    store_suite.test_import_is_idempotent_and_keeps_runtime_state
)
test_config_changes_are_applied_and_recorded = (
    store_suite.test_config_changes_are_applied_and_recorded
)
test_a_failing_import_changes_nothing = store_suite.test_a_failing_import_changes_nothing
test_discovered_machine_adopted_by_config = store_suite.test_discovered_machine_adopted_by_config

test_three_nodes_sequential_with_an_event_row_per_transition = (
    rollout_suite.test_three_nodes_sequential_with_an_event_row_per_transition
)
test_health_twice_forms_the_cluster_once = rollout_suite.test_health_twice_forms_the_cluster_once
test_a_held_node_rebooting_stays_held = rollout_suite.test_a_held_node_rebooting_stays_held
test_first_node_failing_stops_everything_until_retried = (
    rollout_suite.test_first_node_failing_stops_everything_until_retried
)
test_reset_starts_a_new_rollout = rollout_suite.test_reset_starts_a_new_rollout
test_wrong_tokens_and_unknown_nodes_are_refused_and_recorded = (
    rollout_suite.test_wrong_tokens_and_unknown_nodes_are_refused_and_recorded
)
test_one_broken_action_does_not_lose_the_batch = (
    rollout_suite.test_one_broken_action_does_not_lose_the_batch
)


async def test_concurrent_joins_never_release_past_the_wave(tmp_path: Path, pg_url: str) -> None:  # noqa: F811
    lab = await make_lab(tmp_path, 8, release="waves:3", database=pg_url)
    try:
        await lab.image(*range(1, 9))
        await lab.health(1)
        wave = sorted(h for h, s in (await lab.states()).items() if s == "released")
        assert wave == ["n2", "n3", "n4"]
        await asyncio.gather(*(lab.report(int(h[1:]), "joined") for h in wave))
        states = await lab.states()
        assert sorted(h for h, s in states.items() if s == "released") == ["n5", "n6", "n7"]
        assert await lab.releases() == 7
    finally:
        await lab.engine.stop()
        await lab.ctx.close()


# ---------------------------------------------------------------- schema on the real server


async def test_the_schema_postgresql_has(store) -> None:
    """Real column types (timestamptz, json, a sequence for event ids) and the newest revision."""
    engine, _ = store
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT table_name, column_name, data_type, column_default "
                "FROM information_schema.columns WHERE table_schema = 'public'"
            )
        )
        columns = {(r.table_name, r.column_name): (r.data_type, r.column_default) for r in rows}
        version = await conn.scalar(text("SELECT version_num FROM alembic_version"))
    for table in Base.metadata.sorted_tables:
        for column in table.columns:
            data_type, _ = columns[(table.name, column.name)]
            python_type = column.type.python_type
            if python_type is datetime:
                assert data_type == "timestamp with time zone", (table.name, column.name)
            elif python_type in (dict, list):
                assert data_type == "json", (table.name, column.name)
    assert columns[("events", "id")][1].startswith("nextval(")
    assert columns[("nodes", "stops_rollout")][1] == "false"
    heads = {s.revision for s in _script().get_revisions("heads")}
    assert heads == {version}


def _script():
    from alembic.script import ScriptDirectory

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg)


async def test_migrations_go_down_and_up_again(store) -> None:
    engine, _ = store

    def down_and_up(connection) -> list[str]:  # type: ignore[no-untyped-def]
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, "base")
        left = connection.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ).scalars()
        tables = sorted(left)
        command.upgrade(cfg, "head")
        return tables

    async with engine.begin() as conn:
        assert await conn.run_sync(down_and_up) == ["alembic_version"]
    await engine.dispose()
    # upgrading an up-to-date schema again (every server start does) is a no-op
    engine, _ = await open_store(str(engine.url.render_as_string(hide_password=False)))
    await engine.dispose()


# ---------------------------------------------------------------- values through the server


async def test_timestamps_round_trip_as_utc_through_a_non_utc_server(store, tmp_path) -> None:
    _, sessions = store
    await import_config(sessions, load_config(DEMO_CONFIG, state_dir=tmp_path))
    india = timezone(timedelta(hours=5, minutes=30))
    when = datetime(2026, 3, 29, 7, 45, 12, 345678, tzinfo=india)  # Berlin's DST night
    async with sessions() as session, session.begin():
        node = await session.get(Node, "52:54:00:00:10:01")
        node.state_since = when
        node.last_seen = when
        cluster = await session.get(Cluster, "sqlclu")
        cluster.formed_at = when
        session.add(SecretFetch(mac=node.mac, token="d" * 64, name="sysprep.inf", at=when))
        session.add(Event(kind="test", at=when, detail={}))
    async with sessions() as session:
        zone = await session.scalar(text("SHOW TimeZone"))
        node = await session.get(Node, "52:54:00:00:10:01")
        cluster = await session.get(Cluster, "sqlclu")
        fetch = await session.scalar(select(SecretFetch))
        event = await session.scalar(select(Event).where(Event.kind == "test"))
        epoch = await session.scalar(
            text("SELECT extract(epoch FROM state_since) FROM nodes WHERE mac = :m"),
            {"m": node.mac},
        )
    assert zone == "Europe/Berlin"
    for value in (node.state_since, node.last_seen, cluster.formed_at, fetch.at, event.at):
        assert value == when  # the same instant ...
        assert value.utcoffset() == timedelta(0)  # ... handed back in UTC
    assert float(epoch) == pytest.approx(when.timestamp(), abs=1e-6)
    # what the rollout sweep compares: aware minus aware, no TypeError
    assert utcnow() - node.state_since > timedelta(0)


async def test_json_columns_keep_nested_values(store, tmp_path) -> None:
    _, sessions = store
    await import_config(sessions, load_config(DEMO_CONFIG, state_dir=tmp_path))
    value = {"domain": "lab.example", "ñame": "ünïcode ✓", "n": 3, "f": 2.5, "list": [1, None]}
    async with sessions() as session, session.begin():
        node = await session.get(Node, "52:54:00:00:20:01")
        node.vars = value
        session.add(Event(kind="test", detail={"nested": value}))
    async with sessions() as session:
        assert (await session.get(Node, "52:54:00:00:20:01")).vars == value
        event = await session.scalar(select(Event).where(Event.kind == "test"))
        assert event.detail == {"nested": value}


async def test_set_state_moves_legally_and_records_one_row(store, tmp_path) -> None:
    _, sessions = store
    await import_config(sessions, load_config(DEMO_CONFIG, state_dir=tmp_path))
    mac = "52:54:00:00:10:02"
    async with sessions() as session, session.begin():
        node = await session.get(Node, mac)
        event = set_state(session, node, S.PXE, reason="test: PXE boot")
    assert event.id is not None and event.from_state == "registered"
    with pytest.raises(IllegalTransition):
        async with sessions() as session, session.begin():
            node = await session.get(Node, mac)
            set_state(session, node, S.JOINED, reason="test: skips the gate")
    async with sessions() as session:
        assert (await session.get(Node, mac)).state == "pxe"
        rows = await session.scalars(
            select(Event.to_state).where(Event.mac == mac).order_by(Event.id)
        )
        assert list(rows) == ["registered", "pxe"]


async def test_an_overlong_value_is_refused_by_postgresql(store, tmp_path) -> None:
    """SQLite ignores VARCHAR lengths; PostgreSQL enforces them and the change rolls back."""
    _, sessions = store
    await import_config(sessions, load_config(DEMO_CONFIG, state_dir=tmp_path))
    with pytest.raises(Exception, match="too long"):
        async with sessions() as session, session.begin():
            node = await session.get(Node, "52:54:00:00:10:01")
            node.message = "fine, TEXT has no limit " * 100
            node.state = "x" * 17  # String(16)
    async with sessions() as session:
        node = await session.get(Node, "52:54:00:00:10:01")
        assert (node.state, node.message) == ("registered", "")


# ---------------------------------------------------------------- two writers, one database


async def test_two_writers_settling_one_cluster_release_a_node_once(
    tmp_path: Path,
    pg_url: str,  # noqa: F811
) -> None:
    """Two servers on one PostgreSQL each run a rollout writer. Both settling the same gate
    at once must not both release the same held node: the second waits for the first."""
    lab = await make_lab(tmp_path, 3, release="manual", database=pg_url)
    try:
        await lab.image(1, 2, 3)
        await lab.report(1, "starting")
        await lab.health(1)
        assert await lab.states() == {"n1": "joined", "n2": "held", "n3": "held"}
        # the admin switches the policy (a config reload): the next settle releases n2
        async with lab.ctx.sessions() as session, session.begin():
            (await session.get(Cluster, "clu")).release_policy = "sequential"
        first = await _settling(lab)
        second_task = asyncio.create_task(_settle_and_commit(lab))
        await asyncio.sleep(0.5)
        assert not second_task.done()  # waits for the first writer's cluster lock
        await first.session.commit()
        await first.session.close()
        released_by_second = await asyncio.wait_for(second_task, 10)
        assert released_by_second == []  # n2 is in flight: sequential releases no one
        assert await lab.states() == {"n1": "joined", "n2": "released", "n3": "held"}
        assert await lab.releases(mac_of(2)) == 1
    finally:
        await lab.engine.stop()
        await lab.ctx.close()


async def _settling(lab: Lab) -> Batch:
    """A writer's batch that settled cluster ``clu`` and wrote, but has not committed."""
    batch = Batch(lab.ctx.sessions(), utcnow())
    await batch.prefetch([])
    batch.dirty.add("clu")
    await batch.settle()
    await batch.write()
    return batch


async def _settle_and_commit(lab: Lab) -> list[str]:
    batch = await _settling(lab)
    try:
        await batch.session.commit()
    finally:
        await batch.session.close()
    return [mac for e in batch.events if e.to_state == "released" for mac in macs_of(e)]


async def test_reports_from_many_agents_at_once_lose_nothing(tmp_path: Path, pg_url: str) -> None:  # noqa: F811
    """300 reports from 100 agents at once through group commit: every one is applied."""
    lab = await make_lab(tmp_path, 100, release="waves:100", database=pg_url)
    try:
        reports = []
        for i in range(1, 101):
            reports += [lab.report(i, "imaging", 0), lab.report(i, "imaging", 50)]
        await asyncio.gather(*reports)
        await asyncio.gather(*(lab.report(i, "imaged") for i in range(1, 101)))
        states = await lab.states()
        assert states.pop("n1") == "released"
        assert set(states.values()) == {"held"}
        # per node: pxe→imaging, imaging→imaged, imaged→held/released; progress adds no row
        assert await lab.count(kind="state", to_state="imaging") == 100
        assert await lab.count(kind="state", to_state="imaged") == 100
        assert await lab.count(kind="state", to_state="held") == 99
        async with lab.ctx.sessions() as session:
            ids = list(await session.scalars(select(Event.id).order_by(Event.id)))
            progress = await session.scalar(
                select(func.count()).select_from(Node).where(Node.progress.is_not(None))
            )
        assert len(ids) == len(set(ids))
        assert progress == 0  # imaged clears progress
    finally:
        await lab.engine.stop()
        await lab.ctx.close()
