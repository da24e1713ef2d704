"""The store: migrations agree with the models; config import is idempotent and atomic."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select

from netdeploy.config import load_config
from netdeploy.rollout.inventory import import_config
from netdeploy.store import Base, Cluster, Event, Image, Node, open_store
from tests.conftest import DEMO_CONFIG


@pytest.fixture
async def store(tmp_path):
    engine, sessions = await open_store(f"sqlite:///{tmp_path}/netdeploy.db")
    yield engine, sessions
    await engine.dispose()


async def test_migrations_create_exactly_the_models(store):
    engine, _ = store

    def diff(connection):
        return compare_metadata(MigrationContext.configure(connection), Base.metadata)

    async with engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_import_is_idempotent_and_keeps_runtime_state(store, tmp_path):
    _, sessions = store
    cfg = load_config(DEMO_CONFIG, state_dir=tmp_path)
    first = await import_config(sessions, cfg)
    assert "node 52:54:00:00:10:01 (sql-n1)" in first.added
    async with sessions() as session, session.begin():
        node = await session.get(Node, "52:54:00:00:10:02")
        node.state = "held"
    second = await import_config(sessions, cfg)
    assert not second.changed
    async with sessions() as session:
        assert (await session.get(Node, "52:54:00:00:10:02")).state == "held"
        count = await session.scalar(select(func.count()).select_from(Event))
    third = await import_config(sessions, cfg)
    assert not third.changed
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Event)) == count


async def test_config_changes_are_applied_and_recorded(store, tmp_path):
    _, sessions = store
    await import_config(sessions, load_config(DEMO_CONFIG, state_dir=tmp_path))
    text = DEMO_CONFIG.read_text()
    # drop web-1, swap two hostnames (the unique constraint must not trip)
    web1 = text.index('[[nodes]]\nmac = "52:54:00:00:20:01"')
    text = text[:web1] + text[text.index("\n\n", web1) :]
    text = (
        text.replace('hostname = "sql-n2"', 'hostname = "TMP"')
        .replace('hostname = "sql-n3"', 'hostname = "sql-n2"')
        .replace('hostname = "TMP"', 'hostname = "sql-n3"')
    )
    changed = tmp_path / "changed.toml"
    changed.write_text(
        text.replace('state_dir = "../var"', f'state_dir = "{tmp_path}"').replace(
            'templates_dir = "templates"', f'templates_dir = "{DEMO_CONFIG.parent}/templates"'
        )
    )
    result = await import_config(sessions, load_config(changed))
    assert result.removed == ["node 52:54:00:00:20:01 (web-1)"]
    async with sessions() as session:
        assert await session.get(Node, "52:54:00:00:20:01") is None
        assert (await session.get(Node, "52:54:00:00:10:02")).hostname == "sql-n3"
        assert (await session.get(Node, "52:54:00:00:10:03")).hostname == "sql-n2"
        removed = await session.scalar(
            select(Event).where(Event.mac == "52:54:00:00:20:01", Event.kind == "config")
        )
        assert removed.detail == {"removed": True}


async def test_a_failing_import_changes_nothing(store, tmp_path):
    _, sessions = store
    async with sessions() as session, session.begin():
        # a machine recorded earlier under the hostname the config gives another MAC
        session.add(
            Node(mac="52:54:00:99:99:99", hostname="sql-n2", in_config=False, state="discovered")
        )
    with pytest.raises(Exception, match=r"(?i)unique"):
        await import_config(sessions, load_config(DEMO_CONFIG, state_dir=tmp_path))
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Image)) == 0
        assert await session.scalar(select(func.count()).select_from(Cluster)) == 0
        assert await session.scalar(select(func.count()).select_from(Node)) == 1
        assert await session.scalar(select(func.count()).select_from(Event)) == 0


async def test_discovered_machine_adopted_by_config(store, tmp_path):
    _, sessions = store
    async with sessions() as session, session.begin():
        session.add(Node(mac="52:54:00:00:20:01", in_config=False, state="discovered"))
    await import_config(sessions, load_config(DEMO_CONFIG, state_dir=tmp_path))
    async with sessions() as session:
        node = await session.get(Node, "52:54:00:00:20:01")
        assert (node.state, node.hostname, node.in_config) == ("registered", "web-1", True)
        event = await session.scalar(
            select(Event).where(Event.mac == node.mac, Event.to_state == "registered")
        )
        assert event.from_state == "discovered"


async def test_timestamps_come_back_timezone_aware(store, tmp_path):
    _, sessions = store
    await import_config(sessions, load_config(DEMO_CONFIG, state_dir=tmp_path))
    async with sessions() as session:
        node = await session.get(Node, "52:54:00:00:10:01")
    assert node.state_since.tzinfo is not None
