"""Evaluation errors, and a dead letter that a replay does not fill twice.

`evaluation_errors` records an error raised while one rule judged one event (the event itself was
processed by every other rule); once per (rule, source, event id). `rejected_events.digest` is a hash
of what was rejected and where, unique, so rejecting the same line again adds no row.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "evaluation_errors",
        sa.Column("seq", Seq, primary_key=True, autoincrement=True),
        sa.Column("rule", sa.String(400), nullable=False),
        sa.Column("source", sa.String(1000), nullable=False),
        sa.Column("event_id", sa.String(1000), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("recorded_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_evaluation_errors"),
        sa.UniqueConstraint("rule", "source", "event_id", name="uq_evaluation_errors_rule"),
    )
    with op.batch_alter_table("rejected_events") as batch:
        batch.add_column(sa.Column("digest", sa.String(64), nullable=True))
        batch.create_unique_constraint("uq_rejected_events_digest", ["digest"])


def downgrade() -> None:
    with op.batch_alter_table("rejected_events") as batch:
        batch.drop_constraint("uq_rejected_events_digest", type_="unique")
        batch.drop_column("digest")
    op.drop_table("evaluation_errors")
