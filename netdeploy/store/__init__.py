"""Persistence: SQLAlchemy models, sessions, migrations and config import."""

from netdeploy.store.db import (
    StoreError,
    StoreHeld,
    create_engine,
    hold_store,
    migrate,
    open_store,
)
from netdeploy.store.models import Base, Cluster, Event, HardwareProfile, Image, Node, utcnow

__all__ = [
    "Base",
    "Cluster",
    "Event",
    "HardwareProfile",
    "Image",
    "Node",
    "StoreError",
    "StoreHeld",
    "create_engine",
    "hold_store",
    "migrate",
    "open_store",
    "utcnow",
]
