"""State that outlives the process: checkpoints of each partition's state, and what happened to it.

`checkpoints` holds each partition's state (docs/state.md) with the input position it covers: the
`seq` of the last event of the partition recorded in `events`, written in the same transaction.
`events.partition` says which partition an accepted event belongs to, so an engine resumes from its
latest checkpoint plus its own events after it. `state_changes` records when state was dropped
(the rules whose definition changed between runs) and why.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("partition", sa.String(200), nullable=False, server_default=""))
    op.create_table(
        "checkpoints",
        sa.Column("seq", Seq, primary_key=True, autoincrement=True),
        sa.Column("partition", sa.String(200), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("format", sa.String(40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("rules", sa.Text(), nullable=False),
        sa.Column("policies", sa.Text(), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("engine_version", sa.String(40), nullable=False),
        sa.Column("recorded_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_checkpoints"),
    )
    op.create_index("ix_checkpoints_partition_seq", "checkpoints", ["partition", "seq"])
    op.create_table(
        "state_changes",
        sa.Column("seq", Seq, primary_key=True, autoincrement=True),
        sa.Column("partition", sa.String(200), nullable=False),
        sa.Column("what", sa.String(40), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("recorded_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_state_changes"),
    )


def downgrade() -> None:
    op.drop_table("state_changes")
    op.drop_index("ix_checkpoints_partition_seq", table_name="checkpoints")
    op.drop_table("checkpoints")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("partition")
