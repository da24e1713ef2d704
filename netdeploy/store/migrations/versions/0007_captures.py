"""captures: machines marked for network capture and their partial uploads (issue 17)

Revision ID: 0007_captures
Revises: 0006_membership
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_captures"
down_revision = "0006_membership"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "captures",
        sa.Column("mac", sa.String(17), primary_key=True),
        sa.Column("image", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("force_reason", sa.Text(), nullable=True),
        sa.Column("disk_size", sa.BigInteger(), nullable=True),
        sa.Column("received", sa.BigInteger(), nullable=False),
        sa.Column("wire_bytes", sa.BigInteger(), nullable=False),
        sa.Column("data_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("captures")
