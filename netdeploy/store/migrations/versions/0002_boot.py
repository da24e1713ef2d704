"""boot: secret answer-file fetches (each file once per boot token)

Revision ID: 0002_boot
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_boot"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "secret_fetches",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("mac", sa.String(length=17), nullable=False),
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ip", sa.String(length=45), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token", "name", name="uq_secret_fetches_token_name"),
    )
    with op.batch_alter_table("secret_fetches", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_secret_fetches_mac"), ["mac"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("secret_fetches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_secret_fetches_mac"))
    op.drop_table("secret_fetches")
