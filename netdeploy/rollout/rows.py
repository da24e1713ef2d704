"""Node rows for the rollout writer: read and written with SQLAlchemy Core, not the ORM.

Why (docs/decisions/0004): with 1,000 agents reporting, the ORM's per-object bookkeeping
(identity map, attribute events, unit of work) cost more than everything else the writer does.
A :class:`NodeRow` has the same attribute names as :class:`~netdeploy.store.models.Node`
(so ``set_state``, ``node_json`` and the dashboard read either), remembers which columns
changed, and a batch writes all changed rows with one ``executemany`` per column set.
The store stays the only truth: rows are read fresh in every batch and never cached across
batches, so changes made by other modules (the boot helper's ``pxe``, new boot tokens) are
always seen.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ColumnElement

from netdeploy.store.models import Event, Node

NODES = cast(Table, Node.__table__)
EVENTS = cast(Table, Event.__table__)
# every column but the config-owned JSON ones the rollout never needs
COLUMNS: tuple[str, ...] = tuple(c.name for c in NODES.c if c.name not in ("vars", "in_config"))


_set = object.__setattr__  # NodeRow's own __setattr__ marks a column changed


class NodeRow:
    """One node as the writer sees it inside one batch."""

    __slots__ = (*COLUMNS, "changed")

    mac: str
    hostname: str | None
    cluster: str | None
    hardware: str | None
    image: str | None
    state: str
    state_since: datetime
    progress: float | None
    message: str
    token: str | None
    token_rollout: int | None
    token_phase: str | None
    claim: str | None
    claim_ip: str | None
    claim_prev: str | None
    report_token: str | None
    report_at: datetime | None
    release_seq: int | None
    stops_rollout: bool
    last_seen: datetime | None
    last_ip: str | None
    changed: set[str]

    @classmethod
    def of_tuple(cls, values: tuple[Any, ...]) -> NodeRow:
        """A row of :func:`load_rows`'s SELECT (the columns in ``COLUMNS`` order): by
        position, without a name lookup per column (the writer loads ~250 rows a batch)."""
        row = cls.__new__(cls)
        for name, value in zip(COLUMNS, values, strict=True):
            _set(row, name, value)
        _set(row, "changed", set())
        return row

    def __setattr__(self, name: str, value: Any) -> None:
        self.changed.add(name)
        _set(self, name, value)

    def __repr__(self) -> str:
        return f"<NodeRow {self.mac} {self.hostname} {self.state}>"


# Statements built once, not per batch: building a SELECT or an UPDATE and its cache key is
# a fixed cost of every batch, and small batches pay it per few reports (docs/decisions/0018).
_SELECT = select(*(NODES.c[name] for name in COLUMNS))
_BY_MACS = _SELECT.where(NODES.c.mac.in_(bindparam("macs", expanding=True)))
_UPDATES: dict[frozenset[str], Any] = {}  # changed columns -> their UPDATE


async def load_rows(session: AsyncSession, where: ColumnElement[bool]) -> list[NodeRow]:
    result = await session.execute(_SELECT.where(where))
    return [NodeRow.of_tuple(row) for row in result]  # type: ignore[arg-type]


async def load_by_macs(session: AsyncSession, macs: list[str]) -> list[NodeRow]:
    """The rows of ``macs`` (a batch loads at most 500 at a time)."""
    result = await session.execute(_BY_MACS, {"macs": macs})
    return [NodeRow.of_tuple(row) for row in result]  # type: ignore[arg-type]


def _update(columns: frozenset[str]) -> Any:
    statement = _UPDATES.get(columns)
    if statement is None:
        statement = (
            update(NODES)
            .where(NODES.c.mac == bindparam("_mac"))
            .values({name: bindparam(name) for name in sorted(columns)})
        )
        if len(_UPDATES) < 1024:  # bounded: column sets come from the code, never from input
            _UPDATES[columns] = statement
    return statement


async def write_rows(session: AsyncSession, rows: Iterable[NodeRow]) -> int:
    """UPDATE every changed row; rows changing the same columns share one executemany."""
    groups: dict[frozenset[str], list[NodeRow]] = defaultdict(list)
    for row in rows:
        if row.changed:
            groups[frozenset(row.changed)].append(row)
    for columns, members in groups.items():
        statement = _update(columns)
        params = [{"_mac": r.mac, **{name: getattr(r, name) for name in columns}} for r in members]
        await session.execute(statement, params)
        for r in members:
            r.changed.clear()
    return sum(len(m) for m in groups.values())


async def insert_events(session: AsyncSession, events: list[Event], now: datetime) -> None:
    """INSERT the batch's event rows in one statement and hand each its id (for the bus)."""
    if not events:
        return
    for ev in events:
        if ev.at is None:
            ev.at = now
    params = [
        {
            "at": ev.at,
            "kind": ev.kind,
            "mac": ev.mac,
            "cluster": ev.cluster,
            "from_state": ev.from_state,
            "to_state": ev.to_state,
            "detail": ev.detail or {},
        }
        for ev in events
    ]
    if session.bind.dialect.name == "sqlite":
        ids = await _insert_sqlite(session, params)
    else:
        statement = insert(EVENTS).returning(EVENTS.c.id, sort_by_parameter_order=True)
        ids = list((await session.execute(statement, params)).scalars().all())
    for ev, event_id in zip(events, ids, strict=True):
        ev.id = event_id


async def _insert_sqlite(session: AsyncSession, params: list[dict[str, Any]]) -> list[int]:
    """One executemany and the last row id: the rows' ids are the ones before it.

    SQLAlchemy cannot return ids in parameter order from SQLite, so it sent one INSERT (one
    round trip to aiosqlite's thread) per row: 0.35 ms each, most of a 4,000-node release and
    a third of the writer's time under 1,000 reporting agents. This transaction holds
    SQLite's one write lock from its first write on, and each new row id is the largest plus
    one, so the rows of one executemany get consecutive ids ending at ``last_insert_rowid()``.
    """
    await session.execute(insert(EVENTS), params)
    last = (await session.execute(text("SELECT last_insert_rowid()"))).scalar_one()
    return list(range(last - len(params) + 1, last + 1))
