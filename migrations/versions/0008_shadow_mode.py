"""Shadow mode: each violation's `mode`, `enforce` or `shadow`.

A shadow rule's violations (`mode: shadow` in its policy, docs/lifecycle.md) are recorded like any
other but acted on by no one; `audit list` and `audit export` leave them out unless asked. Rows
written before this column hold `enforce`, its default, and the hash chain covers `mode` only where
it is not the default (tosengine/audit/chain.py), so they verify as they did.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN with a constant default, on SQLite too: no table rebuild, so the append-only
    # triggers on `violations` stay in place and no row is rewritten.
    op.add_column("violations", sa.Column("mode", sa.String(10), nullable=False, server_default="enforce"))


def downgrade() -> None:
    # Not a batch (a table rebuild would drop the append-only triggers): SQLite drops a column since 3.35.
    op.execute("ALTER TABLE violations DROP COLUMN mode")
