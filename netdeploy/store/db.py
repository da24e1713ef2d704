"""Engine and session factory; schema upgrades through Alembic at start-up."""

from __future__ import annotations

import contextlib
import fcntl
import os
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import event, func, select, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from netdeploy.store.models import Event
from netdeploy.store.notify import new_origin

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

# Several servers may start at once on one PostgreSQL (DESIGN "Scale"). Two schema upgrades at
# once collide (both CREATE TABLE: duplicate key in pg_type), and two config imports both
# INSERT the same rows. An advisory lock held to the end of the upgrade's (or import's)
# transaction makes them take turns; the second then finds nothing left to do. SQLite takes
# one writer at a time anyway. The key is an arbitrary constant of ours: "nddploy".
STARTUP_LOCK = 0x6E6464706C6F79
_TAKE_STARTUP_LOCK = text("SELECT pg_advisory_xact_lock(:key)").bindparams(key=STARTUP_LOCK)


# Each engine's PostgreSQL connections carry its own application_name, which the events
# trigger puts into every notification: a server knows its own (store/notify.py).
_ORIGINS: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()


def origin_of(engine: AsyncEngine) -> str | None:
    """The ``application_name`` of ``engine``'s PostgreSQL connections (None on SQLite)."""
    return _ORIGINS.get(engine.sync_engine)


class StoreError(Exception):
    """The database cannot be opened or upgraded; the message says which and why."""


def _async_url(url: str) -> str:
    """Accept plain ``sqlite:///`` and ``postgresql://`` URLs and pick the async driver."""
    parsed = make_url(url)
    if parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; safe with WAL
    cursor.execute("PRAGMA foreign_keys=ON")
    # a writer waits up to 30 s for the lock before SQLite answers "database is locked";
    # with one writer task and short batches that wait is rare and brief (issue 15)
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA secure_delete=ON")  # replaced secrets do not linger in free pages
    cursor.close()


@dataclass(frozen=True)
class PoolSize:
    """Connections kept open (``size``) and opened on demand (``overflow``).

    Sized from the configured limits (:func:`pool_for`): requests hold a connection only
    for their queries, but a boot storm, every image slot finishing at once and the
    dashboards together must not wait out ``timeout`` for one.
    """

    size: int = 5
    overflow: int = 10
    timeout: float = 30.0


def pool_for(max_image_streams: int, *, postgresql: bool) -> PoolSize:
    if postgresql:  # several servers share PostgreSQL's max_connections (100 by default)
        return PoolSize(size=5, overflow=15, timeout=60.0)
    # SQLite connections are cheap file handles: one per image slot on top, so a rack's
    # streams ending together (each records its transfer) never wait out the pool timeout
    return PoolSize(size=10, overflow=min(256, 8 + max_image_streams), timeout=60.0)


def _private_file(path: Path) -> None:
    """Create the SQLite file 0600 before SQLite does (it would use the umask, 0644); SQLite
    gives its -wal and -shm files the database file's mode."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    if path.stat().st_uid == os.getuid():
        path.chmod(0o600)


def create_engine(url: str, pool: PoolSize | None = None) -> AsyncEngine:
    try:
        return _create_engine(url, pool)
    except (ArgumentError, NoSuchModuleError) as exc:
        try:
            shown = make_url(url).render_as_string(hide_password=True)
        except ArgumentError:
            shown = url
        raise StoreError(
            f"database URL {shown!r} is not usable ({exc}); use sqlite:///PATH or "
            "postgresql://USER@HOST/DATABASE"
        ) from None


def _create_engine(url: str, pool: PoolSize | None = None) -> AsyncEngine:
    url = _async_url(url)
    sizing = (
        {"pool_size": pool.size, "max_overflow": pool.overflow, "pool_timeout": pool.timeout}
        if pool is not None
        else {}
    )
    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite") and parsed.database not in (None, "", ":memory:"):
        try:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            _private_file(Path(parsed.database))
        except OSError as exc:
            raise StoreError(
                f"cannot open or upgrade database {url!r}: cannot create "
                f"it or its directory: {exc.strerror or exc}"
            ) from None
    if parsed.drivername.startswith("sqlite"):
        in_memory = parsed.database in (None, "", ":memory:")
        engine = create_async_engine(url, **({} if in_memory else sizing))
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    origin = new_origin()
    engine = create_async_engine(
        url,
        pool_pre_ping=True,
        connect_args={"server_settings": {"application_name": origin}},
        **sizing,  # type: ignore[arg-type]
    )
    _ORIGINS[engine.sync_engine] = origin
    return engine


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(_TAKE_STARTUP_LOCK)
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


async def take_startup_lock(session: AsyncSession) -> None:
    """Wait for any other server's schema upgrade or config import (PostgreSQL; see above)."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(_TAKE_STARTUP_LOCK)


async def newest_event_id(session: AsyncSession) -> int:
    """The highest event id stored, 0 when there is none: where live readers start."""
    return await session.scalar(select(func.coalesce(func.max(Event.id), 0))) or 0


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision (a no-op when it already is)."""
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade)
    except Exception as exc:  # report which database and why, not a driver traceback
        raise StoreError(f"cannot open or upgrade database {engine.url!r}: {exc}") from exc


async def open_store(
    url: str, pool: PoolSize | None = None
) -> tuple[AsyncEngine, async_sessionmaker]:
    engine = create_engine(url, pool)
    await migrate(engine)
    return engine, async_sessionmaker(engine, expire_on_commit=False)


# A running `netdeploy serve` holds this lock (shared: several servers may share a state dir
# and a PostgreSQL) for as long as it runs. A command that would write the store without a
# server takes it exclusively, so it refuses while any server holds the store (DESIGN: the
# running server owns the store; nothing writes behind it).
STORE_LOCK_FILE = "store.lock"


class StoreHeld(StoreError):
    """Another process (a running server) holds the store."""


@contextlib.contextmanager
def hold_store(state_dir: Path, *, exclusive: bool) -> Iterator[None]:
    """Hold the store lock of ``state_dir`` (shared for a server, exclusive for a writer
    without one) or raise :class:`StoreHeld` at once; released when the block ends."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / STORE_LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreHeld(
            f"a running netdeploy server holds the store ({path}): it owns it, so this command "
            "goes through it; pass --url if it is not found, or stop it first"
        ) from None
    try:
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
