"""Kafka workers' offsets: each owned partition's next offset and owner epoch.

`kafka_offsets` holds, per repartition partition a worker owns (tosengine/kafka/offsets.py), the offset
to read from next, the checkpoint written with it, and the owner's epoch. They are written in the
transaction of the partition's violations, so the audit log is the consumer's checkpoint; the epoch
fences out a worker that lost the partition without noticing (docs/scale-out.md).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

# The table's model, on the audit schema's MetaData: importing it here keeps the models and the
# migrations in agreement for whoever compares them (tests/test_audit.py), as migrations always load.
import tosengine.kafka.offsets  # noqa: F401

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kafka_offsets",
        sa.Column("partition", sa.String(200), nullable=False),
        sa.Column("topic", sa.String(400), nullable=False),
        sa.Column("kafka_partition", sa.Integer(), nullable=False),
        sa.Column("next_offset", sa.BigInteger(), nullable=True),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("checkpoint_seq", sa.BigInteger(), nullable=True),
        sa.Column("topology", sa.String(40), nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("partition", name=op.f("pk_kafka_offsets")),
    )


def downgrade() -> None:
    op.drop_table("kafka_offsets")
