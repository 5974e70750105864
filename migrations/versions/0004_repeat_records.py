"""Repeat records: what a once_per window suppressed after a violation, hash-chained like violations.

Append-only as the violations are: triggers refuse UPDATE and DELETE (and TRUNCATE on PostgreSQL).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "repeats",
        sa.Column("seq", Seq, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("repeat_of", sa.String(32), nullable=False),
        sa.Column("policy", sa.String(200), nullable=False),
        sa.Column("rule", sa.String(400), nullable=False),
        sa.Column("subject", sa.String(1000), nullable=False),
        sa.Column("key", sa.String(1000), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("time", TZ, nullable=False),
        sa.Column("first", TZ, nullable=False),
        sa.Column("last", TZ, nullable=False),
        sa.Column("evidence", sa.Text(), nullable=False),
        sa.Column("evidence_events", sa.Text(), nullable=False),
        sa.Column("recorded_at", TZ, nullable=False),
        sa.Column("engine_version", sa.String(40), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_repeats"),
        sa.UniqueConstraint("id", name="uq_repeats_id"),
    )
    op.create_index("ix_repeats_repeat_of", "repeats", ["repeat_of"])
    op.create_index("ix_repeats_subject_time", "repeats", ["subject", "time"])
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute(
            "CREATE TRIGGER repeats_append_only BEFORE UPDATE OR DELETE ON repeats "
            "FOR EACH ROW EXECUTE FUNCTION tosengine_append_only()"
        )
        op.execute(
            "CREATE TRIGGER repeats_no_truncate BEFORE TRUNCATE ON repeats "
            "FOR EACH STATEMENT EXECUTE FUNCTION tosengine_append_only()"
        )
    elif bind.dialect.name == "sqlite":
        for what in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER repeats_no_{what.lower()} BEFORE {what} ON repeats "
                f"BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: {what} refused'); END"
            )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS repeats_append_only ON repeats")
        op.execute("DROP TRIGGER IF EXISTS repeats_no_truncate ON repeats")
    op.drop_index("ix_repeats_subject_time", table_name="repeats")
    op.drop_index("ix_repeats_repeat_of", table_name="repeats")
    op.drop_table("repeats")
