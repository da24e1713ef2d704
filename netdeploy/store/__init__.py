"""Persistence: SQLAlchemy models, sessions, migrations and config import."""

from netdeploy.store.db import StoreError, create_engine, migrate, open_store
from netdeploy.store.models import Base, Cluster, Event, HardwareProfile, Image, Node, utcnow

__all__ = [
    "Base",
    "Cluster",
    "Event",
    "HardwareProfile",
    "Image",
    "Node",
    "StoreError",
    "create_engine",
    "migrate",
    "open_store",
    "utcnow",
]
