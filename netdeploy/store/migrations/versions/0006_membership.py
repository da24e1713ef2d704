"""membership: clusters.membership (the member list the cluster itself last reported)

Revision ID: 0006_membership
Revises: 0005_pgnotify
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_membership"
down_revision = "0005_pgnotify"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("clusters", schema=None) as batch_op:
        batch_op.add_column(sa.Column("membership", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("clusters", schema=None) as batch_op:
        batch_op.drop_column("membership")
