"""Persistence: SQLAlchemy models, sessions, migrations and config import."""

from netdeploy.store.db import StoreError, create_engine, migrate, open_store
from netdeploy.store.models import Base, Cluster, Event, HardwareProfile, Image, Node, utcnow
from netdeploy.store.sync import ImportResult, import_config

__all__ = [
    "Base",
    "Cluster",
    "Event",
    "HardwareProfile",
    "Image",
    "ImportResult",
    "Node",
    "StoreError",
    "create_engine",
    "import_config",
    "migrate",
    "open_store",
    "utcnow",
]
