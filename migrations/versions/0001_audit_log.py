"""The audit log: violations (hash-chained, append-only), events, rejected events, policy versions.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TZ = sa.DateTime(timezone=True)

REFUSE_PG = """
CREATE OR REPLACE FUNCTION tosengine_append_only() RETURNS trigger AS $$
BEGIN
  RAISE EXCEPTION 'the audit log table % is append-only: % refused', TG_TABLE_NAME, TG_OP;
END
$$ LANGUAGE plpgsql
"""


def upgrade() -> None:
    op.create_table(
        "violations",
        sa.Column("seq", Seq, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("policy", sa.String(200), nullable=False),
        sa.Column("rule", sa.String(400), nullable=False),
        sa.Column("policy_version", sa.String(80), nullable=False),
        sa.Column("clause", sa.Text(), nullable=False),
        sa.Column("subject", sa.String(1000), nullable=False),
        sa.Column("key", sa.String(1000), nullable=False),
        sa.Column("severity", sa.String(20), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("time", TZ, nullable=False),
        sa.Column("recorded_at", TZ, nullable=False),
        sa.Column("evidence", sa.Text(), nullable=False),
        sa.Column("evidence_events", sa.Text(), nullable=False),
        sa.Column("causes", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("engine_version", sa.String(40), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_violations"),
        sa.UniqueConstraint("id", name="uq_violations_id"),
    )
    op.create_index("ix_violations_policy", "violations", ["policy"])
    op.create_index("ix_violations_time", "violations", ["time"])
    op.create_index("ix_violations_subject_time", "violations", ["subject", "time"])
    op.create_table(
        "events",
        sa.Column("seq", Seq, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(1000), nullable=False),
        sa.Column("event_id", sa.String(1000), nullable=False),
        sa.Column("type", sa.String(400), nullable=False),
        sa.Column("subject", sa.String(1000), nullable=False),
        sa.Column("time", TZ, nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("recorded_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_events"),
        sa.UniqueConstraint("source", "event_id", name="uq_events_source"),
    )
    op.create_index("ix_events_subject", "events", ["subject"])
    op.create_table(
        "rejected_events",
        sa.Column("seq", Seq, primary_key=True, autoincrement=True),
        sa.Column("origin", sa.String(1000), nullable=False),
        sa.Column("line", sa.Integer(), nullable=True),
        sa.Column("field", sa.String(1000), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("recorded_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_rejected_events"),
    )
    op.create_table(
        "policy_versions",
        sa.Column("seq", Seq, primary_key=True, autoincrement=True),
        sa.Column("policy", sa.String(200), nullable=False),
        sa.Column("version", sa.String(80), nullable=False),
        sa.Column("path", sa.String(2000), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("first_seen", TZ, nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_policy_versions"),
        sa.UniqueConstraint("policy", "version", name="uq_policy_versions_policy"),
    )
    op.create_table(
        "chain_head",
        sa.Column("name", sa.String(40), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_chain_head"),
    )
    op.create_table(
        "meta",
        sa.Column("name", sa.String(80), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_meta"),
    )
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # Every role, the owner included, is refused UPDATE, DELETE and TRUNCATE on the violations.
        op.execute(REFUSE_PG)
        op.execute(
            "CREATE TRIGGER violations_append_only BEFORE UPDATE OR DELETE ON violations "
            "FOR EACH ROW EXECUTE FUNCTION tosengine_append_only()"
        )
        op.execute(
            "CREATE TRIGGER violations_no_truncate BEFORE TRUNCATE ON violations "
            "FOR EACH STATEMENT EXECUTE FUNCTION tosengine_append_only()"
        )
    elif bind.dialect.name == "sqlite":
        for what in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER violations_no_{what.lower()} BEFORE {what} ON violations "
                f"BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: {what} refused'); END"
            )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS violations_no_truncate ON violations")
        op.execute("DROP TRIGGER IF EXISTS violations_append_only ON violations")
        op.execute("DROP FUNCTION IF EXISTS tosengine_append_only()")
    for t in ("meta", "chain_head", "policy_versions", "rejected_events", "events", "violations"):
        op.drop_table(t)
