"""pgnotify: NOTIFY netdeploy_events on every insert into events (PostgreSQL only)

Revision ID: 0005_pgnotify
Revises: 0004

One statement-level trigger, so every transaction that writes event rows tells the other
servers on the same database, whatever code wrote them (netdeploy/store/notify.py has the
payload format; decision 0008 the why). SQLite has one server by definition: nothing to do.
"""

from alembic import op

revision = "0005_pgnotify"
down_revision = "0004"
branch_labels = None
depends_on = None

# Payload: '<ids> <origin>' — the inserted ids ('17,18,21'), or 'low-high' when the list would
# pass 7,000 characters (NOTIFY's limit is 8,000 bytes); origin = the writer's
# application_name ('?' when it has none). PostgreSQL sends it only if the transaction commits.
FUNCTION = """
CREATE OR REPLACE FUNCTION netdeploy_notify_events() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    ids text;
    low bigint;
    high bigint;
BEGIN
    SELECT string_agg(id::text, ',' ORDER BY id), min(id), max(id)
      INTO ids, low, high FROM inserted;
    IF ids IS NULL THEN
        RETURN NULL;
    END IF;
    IF length(ids) > 7000 THEN
        ids := low || '-' || high;
    END IF;
    PERFORM pg_notify(
        'netdeploy_events',
        ids || ' ' || coalesce(nullif(current_setting('application_name', true), ''), '?'));
    RETURN NULL;
END
$$
"""

TRIGGER = """
CREATE TRIGGER events_notify AFTER INSERT ON events
REFERENCING NEW TABLE AS inserted
FOR EACH STATEMENT EXECUTE FUNCTION netdeploy_notify_events()
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(FUNCTION)
    op.execute("DROP TRIGGER IF EXISTS events_notify ON events")
    op.execute(TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS events_notify ON events")
    op.execute("DROP FUNCTION IF EXISTS netdeploy_notify_events()")
