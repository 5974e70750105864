"""The audit schema as typed classes, for the readers: `audit verify`, `audit list`, `export`, `explain`.

Each class is mapped onto its Core table in tosengine/audit/tables.py, which holds the schema itself
(columns, constraints, indexes). Writing goes through those tables and never loads the ORM; reading
uses these classes to get typed rows.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import DeclarativeBase, Mapped

from tosengine.audit import tables

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


class Base(DeclarativeBase):
    """Declarative base on the schema's MetaData (tables.METADATA, with its naming convention)."""

    metadata = tables.METADATA


class ViolationRow(Base):
    """One violation, hash-chained to the previous one in `seq` order. Append-only."""

    __table__ = tables.VIOLATIONS

    seq: Mapped[int]
    id: Mapped[str]
    policy: Mapped[str]
    rule: Mapped[str]
    policy_version: Mapped[str]
    clause: Mapped[str]
    subject: Mapped[str]
    key: Mapped[str]
    severity: Mapped[str]
    action: Mapped[str]
    message: Mapped[str]
    time: Mapped[datetime]
    recorded_at: Mapped[datetime]
    evidence: Mapped[str]
    evidence_events: Mapped[str]
    causes: Mapped[str]
    detail: Mapped[str]
    engine_version: Mapped[str]
    prev_hash: Mapped[str]
    hash: Mapped[str]
    mode: Mapped[str]


class AcceptedEvent(Base):
    """Every accepted event, once per (source, id): evidence can be shown and state rebuilt."""

    __table__ = tables.EVENTS

    seq: Mapped[int]
    source: Mapped[str]
    event_id: Mapped[str]
    type: Mapped[str]
    subject: Mapped[str]
    time: Mapped[datetime]
    body: Mapped[str]
    recorded_at: Mapped[datetime]
    partition: Mapped[str]


class RejectedEvent(Base):
    """The dead letter: input that was not an acceptable event, with why and where it came from."""

    __table__ = tables.REJECTED_EVENTS

    seq: Mapped[int]
    origin: Mapped[str]
    line: Mapped[int | None]
    field: Mapped[str]
    reason: Mapped[str]
    raw: Mapped[str]
    recorded_at: Mapped[datetime]
    digest: Mapped[str | None]


class EvaluationErrorRow(Base):
    """An error raised while one rule judged one event. Once per (rule, source, event id)."""

    __table__ = tables.EVALUATION_ERRORS

    seq: Mapped[int]
    rule: Mapped[str]
    source: Mapped[str]
    event_id: Mapped[str]
    error: Mapped[str]
    recorded_at: Mapped[datetime]


class PolicyVersion(Base):
    """Each policy version seen: the exact file text a violation's `policy_version` refers to."""

    __table__ = tables.POLICY_VERSIONS

    seq: Mapped[int]
    policy: Mapped[str]
    version: Mapped[str]
    path: Mapped[str]
    text: Mapped[str]
    first_seen: Mapped[datetime]


class ChainHead(Base):
    """The last link of a chain: deleting the newest rows is then detectable too."""

    __table__ = tables.CHAIN_HEAD

    name: Mapped[str]
    count: Mapped[int]
    last_seq: Mapped[int]
    hash: Mapped[str]
    mac: Mapped[str]


class Meta(Base):
    """Settings of this audit database (the salt for masking sensitive values)."""

    __table__ = tables.META

    name: Mapped[str]
    value: Mapped[str]


class RepeatRow(Base):
    """What a once_per window suppressed after the violation `repeat_of`, hash-chained like violations."""

    __table__ = tables.REPEATS

    seq: Mapped[int]
    id: Mapped[str]
    repeat_of: Mapped[str]
    policy: Mapped[str]
    rule: Mapped[str]
    subject: Mapped[str]
    key: Mapped[str]
    count: Mapped[int]
    time: Mapped[datetime]
    first: Mapped[datetime]
    last: Mapped[datetime]
    evidence: Mapped[str]
    evidence_events: Mapped[str]
    recorded_at: Mapped[datetime]
    engine_version: Mapped[str]
    prev_hash: Mapped[str]
    hash: Mapped[str]


class Checkpoint(Base):
    """One partition's state (docs/state.md) as of `position`, the seq of its last recorded event."""

    __table__ = tables.CHECKPOINTS

    seq: Mapped[int]
    partition: Mapped[str]
    position: Mapped[int]
    format: Mapped[str]
    version: Mapped[int]
    rules: Mapped[str]
    policies: Mapped[str]
    state: Mapped[bytes]
    size: Mapped[int]
    engine_version: Mapped[str]
    recorded_at: Mapped[datetime]


class StateChange(Base):
    """Something that happened to a partition's state, with why: e.g. rules whose state was dropped."""

    __table__ = tables.STATE_CHANGES

    seq: Mapped[int]
    partition: Mapped[str]
    what: Mapped[str]
    detail: Mapped[str]
    recorded_at: Mapped[datetime]
