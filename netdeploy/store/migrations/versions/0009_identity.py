"""identity: boot tokens bound to rollout and phase, agent claims, report tokens, alarms,
revoked dashboard sessions (issue 22, docs/security.md)

Revision ID: 0009_identity
Revises: 0008_facts

Existing boot tokens are dropped: they were bound to nothing, so none of them can be trusted
under the new rules (a node PXE-boots again to get one). Secret vars are no longer stored:
the next config import rewrites every node's and cluster's vars without them.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_identity"
down_revision = "0008_facts"
branch_labels = None
depends_on = None

NODE_COLUMNS = (
    ("token_rollout", sa.Integer()),
    ("token_phase", sa.String(16)),
    ("claim", sa.String(64)),
    ("claim_ip", sa.String(45)),
    ("claim_prev", sa.String(64)),
    ("report_token", sa.String(64)),
    ("report_at", sa.DateTime(timezone=True)),
)


def upgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        for name, kind in NODE_COLUMNS:
            batch_op.add_column(sa.Column(name, kind, nullable=True))
    with op.batch_alter_table("clusters", schema=None) as batch_op:
        batch_op.add_column(sa.Column("alarm", sa.Text(), server_default="", nullable=False))
    op.execute("UPDATE nodes SET token = NULL")
    op.create_table(
        "revoked_sessions",
        sa.Column("nonce", sa.String(64), primary_key=True),
        sa.Column("expires", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("revoked_sessions")
    with op.batch_alter_table("clusters", schema=None) as batch_op:
        batch_op.drop_column("alarm")
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        for name, _ in reversed(NODE_COLUMNS):
            batch_op.drop_column(name)
