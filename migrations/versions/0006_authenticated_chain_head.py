"""An authenticated chain head.

`chain_head.mac` is an HMAC, under the audit key, of each chain's head (name, count, last seq, hash):
with TOSENGINE_AUDIT_KEY set, whoever can write the database but does not hold the key cannot delete
the newest rows and rewrite the head to match. Empty on a log written without a key (then `audit
head` prints the head for anchoring elsewhere and `audit verify --head` checks against it).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("chain_head") as batch:
        batch.add_column(sa.Column("mac", sa.String(64), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("chain_head") as batch:
        batch.drop_column("mac")
