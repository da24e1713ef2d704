"""facts: what the discovery and imaging agent report about each machine (issue 18)

Revision ID: 0008_facts
Revises: 0007_captures

One row per MAC, replaced by every report: SMBIOS, firmware, CPUs, memory, disks, NICs and
the storage controllers' PCI IDs (the boot decision checks those against the node's hardware
profile). Other branches add 0006_membership and 0007_captures on 0005 as well; whoever
merges them chains the three.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_facts"
down_revision = "0007_captures"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "node_facts",
        sa.Column("mac", sa.String(17), primary_key=True),
        sa.Column("facts", sa.JSON(), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ip", sa.String(45), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("node_facts")
