"""The audit schema: typed declarative models with a constraint naming convention."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Index, Integer, LargeBinary, MetaData, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "AcceptedEvent",
    "Base",
    "ChainHead",
    "Checkpoint",
    "EvaluationErrorRow",
    "Meta",
    "PolicyVersion",
    "RejectedEvent",
    "RepeatRow",
    "StateChange",
    "ViolationRow",
]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
# SQLite only autoincrements INTEGER PRIMARY KEY; BigInteger elsewhere.
Seq = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    """Declarative base with the naming convention, so migrations name constraints predictably."""

    metadata = MetaData(naming_convention=NAMING)


class ViolationRow(Base):
    """One violation, hash-chained to the previous one in `seq` order. Append-only."""

    __tablename__ = "violations"

    seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(32), unique=True)
    policy: Mapped[str] = mapped_column(String(200), index=True)
    rule: Mapped[str] = mapped_column(String(400))
    policy_version: Mapped[str] = mapped_column(String(80))
    clause: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(String(1000))
    key: Mapped[str] = mapped_column(String(1000))
    severity: Mapped[str] = mapped_column(String(20))
    action: Mapped[str] = mapped_column(String(40))
    message: Mapped[str] = mapped_column(Text)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    evidence: Mapped[str] = mapped_column(Text)  # JSON list of event ids
    evidence_events: Mapped[str] = mapped_column(Text)  # JSON list of the events as seen (sensitive fields masked)
    causes: Mapped[str] = mapped_column(Text)  # JSON list of fact ids (forward chaining)
    detail: Mapped[str] = mapped_column(Text)  # JSON: rule kind, deadline, ...
    engine_version: Mapped[str] = mapped_column(String(40))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    # enforce, or shadow: a shadow rule's violation, acted on by no one (migration 0008; hashed only when
    # not the default, so rows from before the column verify as they did: audit/chain.py).
    mode: Mapped[str] = mapped_column(String(10), server_default="enforce")


class AcceptedEvent(Base):
    """Every accepted event, once per (source, id): evidence can be shown and state rebuilt."""

    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("source", "event_id"),)

    seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(1000))
    event_id: Mapped[str] = mapped_column(String(1000))
    type: Mapped[str] = mapped_column(String(400))
    subject: Mapped[str] = mapped_column(String(1000))  # not indexed: see migration 0002
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    body: Mapped[str] = mapped_column(Text)  # the JSON text as received (or encoded from the object); masked
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    partition: Mapped[str] = mapped_column(String(200), server_default="")  # whose state the event is in


class RejectedEvent(Base):
    """The dead letter: input that was not an acceptable event, with why and where it came from."""

    __tablename__ = "rejected_events"

    seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=True)
    origin: Mapped[str] = mapped_column(String(1000))  # file name, "<stdin>" or "api"
    line: Mapped[int | None] = mapped_column(Integer, nullable=True)
    field: Mapped[str] = mapped_column(String(1000))
    reason: Mapped[str] = mapped_column(Text)
    raw: Mapped[str] = mapped_column(Text)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    digest: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)  # of origin, line, raw, reason


class EvaluationErrorRow(Base):
    """An error raised while one rule judged one event; the other rules judged it as usual. Once per
    (rule, source, event id)."""

    __tablename__ = "evaluation_errors"
    __table_args__ = (UniqueConstraint("rule", "source", "event_id"),)

    seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=True)
    rule: Mapped[str] = mapped_column(String(400))
    source: Mapped[str] = mapped_column(String(1000))
    event_id: Mapped[str] = mapped_column(String(1000))
    error: Mapped[str] = mapped_column(Text)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PolicyVersion(Base):
    """Each policy version seen: the exact file text a violation's `policy_version` refers to."""

    __tablename__ = "policy_versions"
    __table_args__ = (UniqueConstraint("policy", "version"),)

    seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=True)
    policy: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(80))
    path: Mapped[str] = mapped_column(String(2000))
    text: Mapped[str] = mapped_column(Text)
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ChainHead(Base):
    """The last link of the violation chain: deleting the newest rows is then detectable too."""

    __tablename__ = "chain_head"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    # HMAC of (name, count, last_seq, hash) under the audit key; "" when the log is written without one.
    mac: Mapped[str] = mapped_column(String(64), server_default="")


class Meta(Base):
    """Settings of this audit database (the salt for masking sensitive values)."""

    __tablename__ = "meta"

    name: Mapped[str] = mapped_column(String(80), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class RepeatRow(Base):
    """What a once_per window suppressed after the violation `repeat_of`, hash-chained like violations
    (its own chain, `repeats` in chain_head). Append-only."""

    __tablename__ = "repeats"

    seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(32), unique=True)
    repeat_of: Mapped[str] = mapped_column(String(32), index=True)
    policy: Mapped[str] = mapped_column(String(200))
    rule: Mapped[str] = mapped_column(String(400))
    subject: Mapped[str] = mapped_column(String(1000))
    key: Mapped[str] = mapped_column(String(1000))
    count: Mapped[int] = mapped_column(BigInteger)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # when the window closed
    first: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # the first suppressed match
    last: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # the last one
    evidence: Mapped[str] = mapped_column(Text)  # JSON list of event ids, one or more per suppressed match
    evidence_events: Mapped[str] = mapped_column(Text)  # JSON list of the events (sensitive fields masked)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    engine_version: Mapped[str] = mapped_column(String(40))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class Checkpoint(Base):
    """One partition's state (docs/state.md) as of `position`, the seq of its last recorded event."""

    __tablename__ = "checkpoints"

    seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=True)
    partition: Mapped[str] = mapped_column(String(200))
    position: Mapped[int] = mapped_column(BigInteger)
    format: Mapped[str] = mapped_column(String(40))
    version: Mapped[int] = mapped_column(Integer)
    rules: Mapped[str] = mapped_column(Text)  # JSON: rule id -> fingerprint of what shapes its state
    policies: Mapped[str] = mapped_column(Text)  # JSON: [[policy, version], ...] the state was built with
    state: Mapped[bytes] = mapped_column(LargeBinary)  # zlib-compressed JSON, the format docs/state.md gives
    size: Mapped[int] = mapped_column(BigInteger)  # bytes of the JSON before compression
    engine_version: Mapped[str] = mapped_column(String(40))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class StateChange(Base):
    """Something that happened to a partition's state, with why: e.g. rules whose state was dropped."""

    __tablename__ = "state_changes"

    seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=True)
    partition: Mapped[str] = mapped_column(String(200))
    what: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str] = mapped_column(Text)  # JSON
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


Index("ix_violations_subject_time", ViolationRow.subject, ViolationRow.time)
Index("ix_checkpoints_partition_seq", Checkpoint.partition, Checkpoint.seq)
Index("ix_repeats_subject_time", RepeatRow.subject, RepeatRow.time)
