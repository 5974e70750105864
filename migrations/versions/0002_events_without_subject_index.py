"""Drop the events table's subject index: every accepted event paid for it and no query used it.

Maintaining it was about 5 of the 15 microseconds SQLite spent inserting each event row (random
inserts into a B-tree of subjects). Violations keep their (subject, time) index; an investigator who
wants every event of one subject can scan, or create the index on their copy of the database.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_events_subject", table_name="events")


def downgrade() -> None:
    op.create_index("ix_events_subject", "events", ["subject"])
