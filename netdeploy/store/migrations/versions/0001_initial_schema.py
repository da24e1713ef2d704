"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25 08:05:08.813389
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "clusters",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("image", sa.String(length=128), nullable=False),
        sa.Column("first_node", sa.String(length=63), nullable=False),
        sa.Column("release_policy", sa.String(length=32), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("gate", sa.String(length=16), nullable=False),
        sa.Column("gate_detail", sa.Text(), nullable=False),
        sa.Column("formed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rollout", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("mac", sa.String(length=17), nullable=True),
        sa.Column("cluster", sa.String(length=128), nullable=True),
        sa.Column("from_state", sa.String(length=16), nullable=True),
        sa.Column("to_state", sa.String(length=16), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_events_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_events_cluster"), ["cluster"], unique=False)
        batch_op.create_index("ix_events_mac_id", ["mac", "id"], unique=False)

    op.create_table(
        "hardware_profiles",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("mass_storage", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "images",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("hardware", sa.JSON(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("mtime_ns", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_detail", sa.Text(), nullable=False),
        sa.Column("facts", sa.JSON(), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "nodes",
        sa.Column("mac", sa.String(length=17), nullable=False),
        sa.Column("hostname", sa.String(length=63), nullable=True),
        sa.Column("cluster", sa.String(length=128), nullable=True),
        sa.Column("hardware", sa.String(length=128), nullable=True),
        sa.Column("image", sa.String(length=128), nullable=True),
        sa.Column("vars", sa.JSON(), nullable=False),
        sa.Column("in_config", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("state_since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("progress", sa.Double(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("token", sa.String(length=64), nullable=True),
        sa.Column("release_seq", sa.Integer(), nullable=True),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_ip", sa.String(length=45), nullable=True),
        sa.ForeignKeyConstraint(["cluster"], ["clusters.name"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("mac"),
        sa.UniqueConstraint("hostname"),
    )
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_nodes_cluster"), ["cluster"], unique=False)
        batch_op.create_index(batch_op.f("ix_nodes_state"), ["state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_nodes_state"))
        batch_op.drop_index(batch_op.f("ix_nodes_cluster"))

    op.drop_table("nodes")
    op.drop_table("images")
    op.drop_table("hardware_profiles")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_mac_id")
        batch_op.drop_index(batch_op.f("ix_events_cluster"))
        batch_op.drop_index(batch_op.f("ix_events_at"))

    op.drop_table("events")
    op.drop_table("clusters")
