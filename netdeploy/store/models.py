"""SQLAlchemy 2.0 models. Nothing outside ``netdeploy.store`` writes SQL.

Inventory tables (images, hardware profiles, clusters, nodes) mirror the config and are
rewritten by :func:`netdeploy.store.sync.import_config`; the runtime columns of ``nodes``
(state, progress, token, ...) and ``clusters`` (gate) survive every import. ``events`` is
append-only: every state change is one row.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """A timestamp that is always timezone-aware UTC in Python, whatever the database keeps.

    SQLite stores no offset and hands back naive datetimes; comparing those with ``utcnow()``
    would raise. Everything is stored as UTC and read back as UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):  # type: ignore[no-untyped-def]
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value

    def process_result_value(self, value, dialect):  # type: ignore[no-untyped-def]
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Image(Base):
    __tablename__ = "images"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(16), default="raw")
    description: Mapped[str] = mapped_column(Text, default="")
    hardware: Mapped[list[Any]] = mapped_column(default=list)
    # catalog facts, filled by `netdeploy image add` (hashing) and checked before serving
    size: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    mtime_ns: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default="unhashed")  # unhashed|ok|bad|missing
    status_detail: Mapped[str] = mapped_column(Text, default="")
    facts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    added_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class HardwareProfile(Base):
    __tablename__ = "hardware_profiles"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    description: Mapped[str] = mapped_column(Text, default="")
    mass_storage: Mapped[list[Any]] = mapped_column(default=list)


class Cluster(Base):
    __tablename__ = "clusters"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    image: Mapped[str] = mapped_column(String(128))
    first_node: Mapped[str] = mapped_column(String(63))  # hostname
    release_policy: Mapped[str] = mapped_column(String(32), default="sequential")
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # runtime: waiting | formed | releasing | complete | stopped
    gate: Mapped[str] = mapped_column(String(16), default="waiting")
    gate_detail: Mapped[str] = mapped_column(Text, default="")
    formed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    rollout: Mapped[int] = mapped_column(Integer, default=1)  # bumped by `reset`
    # the cluster's own member list as last reported (rollout.membership.membership_record);
    # None until a report carried one in this rollout
    membership: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # an identity alarm (a second claim, a stolen credential in use): stops the gate until the
    # admin retries the node or resets the cluster (docs/security.md)
    alarm: Mapped[str] = mapped_column(Text, default="", server_default="")


class Node(Base):
    __tablename__ = "nodes"

    mac: Mapped[str] = mapped_column(String(17), primary_key=True)
    hostname: Mapped[str | None] = mapped_column(String(63), unique=True)
    cluster: Mapped[str | None] = mapped_column(
        ForeignKey("clusters.name", ondelete="SET NULL"), index=True
    )
    hardware: Mapped[str | None] = mapped_column(String(128))
    image: Mapped[str | None] = mapped_column(String(128))
    vars: Mapped[dict[str, Any]] = mapped_column(default=dict)
    in_config: Mapped[bool] = mapped_column(default=True)
    # runtime
    state: Mapped[str] = mapped_column(String(16), default="registered", index=True)
    state_since: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    progress: Mapped[float | None] = mapped_column()
    message: Mapped[str] = mapped_column(Text, default="")
    token: Mapped[str | None] = mapped_column(String(64))  # boot token digest: claims once
    # what the boot token is bound to: the rollout number and the phase it was issued for
    token_rollout: Mapped[int | None] = mapped_column(Integer)
    token_phase: Mapped[str | None] = mapped_column(String(16))
    # the agent's own secret (digest), claimed once per boot phase with the boot token
    claim: Mapped[str | None] = mapped_column(String(64))
    claim_ip: Mapped[str | None] = mapped_column(String(45))
    claim_prev: Mapped[str | None] = mapped_column(String(64))  # the last phase's: seen = alarm
    # the report token rendered into this node's secret answer files (digest): health/joined
    report_token: Mapped[str | None] = mapped_column(String(64))
    report_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # when it was handed out
    release_seq: Mapped[int | None] = mapped_column(Integer)
    # failed, and the admin has not decided yet: stops the cluster's automatic releases
    stops_rollout: Mapped[bool] = mapped_column(default=False, server_default=false())
    last_seen: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_ip: Mapped[str | None] = mapped_column(String(45))


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (Index("ix_events_mac_id", "mac", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(32))  # state|boot|tftp|http|auth|config|...
    mac: Mapped[str | None] = mapped_column(String(17))
    cluster: Mapped[str | None] = mapped_column(String(128), index=True)
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str | None] = mapped_column(String(16))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class RevokedSession(Base):
    """A dashboard session ended by logout: its signed cookie is refused until it expires."""

    __tablename__ = "revoked_sessions"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires: Mapped[int] = mapped_column(BigInteger)


class SecretFetch(Base):
    """One secret answer file served under one boot token: each (token, file) pair only once.

    The unique constraint makes "used" atomic even with several servers on one PostgreSQL.
    """

    __tablename__ = "secret_fetches"
    __table_args__ = (UniqueConstraint("token", "name", name="uq_secret_fetches_token_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    mac: Mapped[str] = mapped_column(String(17), index=True)
    token: Mapped[str] = mapped_column(String(64))  # digest, never the plain token
    name: Mapped[str] = mapped_column(String(255))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ip: Mapped[str | None] = mapped_column(String(45))


class Capture(Base):
    """A machine marked for network capture (`netdeploy image capture NAME --node MAC`): on its
    next PXE boot the agent streams its disk into image ``image``; one row per MAC.

    ``state``: requested → capturing → done | failed | refused (preflight). ``received`` is how
    far the partial upload is committed (the agent resumes there after a cut).
    """

    __tablename__ = "captures"

    mac: Mapped[str] = mapped_column(String(17), primary_key=True)
    image: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16), default="requested")
    detail: Mapped[str] = mapped_column(Text, default="")
    actor: Mapped[str] = mapped_column(String(128), default="")
    force_reason: Mapped[str | None] = mapped_column(Text)
    disk_size: Mapped[int | None] = mapped_column(BigInteger)
    received: Mapped[int] = mapped_column(BigInteger, default=0)
    wire_bytes: Mapped[int] = mapped_column(BigInteger, default=0)  # compressed, retries included
    data_bytes: Mapped[int] = mapped_column(BigInteger, default=0)  # non-zero blocks received
    sha256: Mapped[str | None] = mapped_column(String(64))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MachineFacts(Base):
    """What the agent found on one machine (issue 18): SMBIOS, firmware, CPUs, memory, disks,
    NICs and the PCI IDs of its storage controllers. Replaced by each report; kept apart from
    ``nodes`` so the rollout writer's per-batch node reads stay small."""

    __tablename__ = "node_facts"

    mac: Mapped[str] = mapped_column(String(17), primary_key=True)
    facts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ip: Mapped[str | None] = mapped_column(String(45))
