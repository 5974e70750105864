"""The audit schema as SQLAlchemy Core tables, with a constraint naming convention.

The engine writes through these tables alone, so writing (replay, serve, a Kafka worker) never loads
SQLAlchemy's ORM: about 0.1 s of every such process's start-up (docs/performance.md). The readers
(`audit verify`, `audit list`, `export`, `explain`) map classes onto the same tables
(tosengine/audit/models.py). Migrations create them (migrations/versions); tests/test_audit.py holds
this metadata equal to what the migrations build.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = [
    "CHAIN_HEAD",
    "CHECKPOINTS",
    "EVALUATION_ERRORS",
    "EVENTS",
    "KAFKA_OFFSETS",
    "META",
    "METADATA",
    "NAMING",
    "POLICY_VERSIONS",
    "REJECTED_EVENTS",
    "REPEATS",
    "STATE_CHANGES",
    "VIOLATIONS",
    "Seq",
]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
# Named as above, so migrations name constraints predictably.
METADATA = MetaData(naming_convention=NAMING)
# SQLite only autoincrements INTEGER PRIMARY KEY; BigInteger elsewhere.
Seq = BigInteger().with_variant(Integer(), "sqlite")


def _seq() -> Column[int]:
    return Column("seq", Seq, primary_key=True, autoincrement=True)


def _time(name: str) -> Column[datetime]:
    return Column(name, DateTime(timezone=True), nullable=False)


# One violation, hash-chained to the previous one in `seq` order. Append-only.
VIOLATIONS = Table(
    "violations",
    METADATA,
    _seq(),
    Column("id", String(32), nullable=False, unique=True),
    Column("policy", String(200), nullable=False, index=True),
    Column("rule", String(400), nullable=False),
    Column("policy_version", String(80), nullable=False),
    Column("clause", Text, nullable=False),
    Column("subject", String(1000), nullable=False),
    Column("key", String(1000), nullable=False),
    Column("severity", String(20), nullable=False),
    Column("action", String(40), nullable=False),
    Column("message", Text, nullable=False),
    Column("time", DateTime(timezone=True), nullable=False, index=True),
    _time("recorded_at"),
    Column("evidence", Text, nullable=False),  # JSON list of event ids
    Column("evidence_events", Text, nullable=False),  # JSON list of the events as seen (sensitive fields masked)
    Column("causes", Text, nullable=False),  # JSON list of fact ids (forward chaining)
    Column("detail", Text, nullable=False),  # JSON: rule kind, deadline, ...
    Column("engine_version", String(40), nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    # enforce, or shadow: a shadow rule's violation, acted on by no one (migration 0008; hashed only when
    # not the default, so rows from before the column verify as they did: audit/chain.py).
    Column("mode", String(10), nullable=False, server_default="enforce"),
)

# Every accepted event, once per (source, id): evidence can be shown and state rebuilt.
EVENTS = Table(
    "events",
    METADATA,
    _seq(),
    Column("source", String(1000), nullable=False),
    Column("event_id", String(1000), nullable=False),
    Column("type", String(400), nullable=False),
    Column("subject", String(1000), nullable=False),  # not indexed: see migration 0002
    _time("time"),
    Column("body", Text, nullable=False),  # the JSON text as received (or encoded from the object); masked
    _time("recorded_at"),
    Column("partition", String(200), nullable=False, server_default=""),  # whose state the event is in
    UniqueConstraint("source", "event_id"),
)

# The dead letter: input that was not an acceptable event, with why and where it came from.
REJECTED_EVENTS = Table(
    "rejected_events",
    METADATA,
    _seq(),
    Column("origin", String(1000), nullable=False),  # file name, "<stdin>" or "api"
    Column("line", Integer, nullable=True),
    Column("field", String(1000), nullable=False),
    Column("reason", Text, nullable=False),
    Column("raw", Text, nullable=False),
    _time("recorded_at"),
    Column("digest", String(64), nullable=True, unique=True),  # of origin, line, raw, reason
)

# An error raised while one rule judged one event; the other rules judged it as usual. Once per
# (rule, source, event id).
EVALUATION_ERRORS = Table(
    "evaluation_errors",
    METADATA,
    _seq(),
    Column("rule", String(400), nullable=False),
    Column("source", String(1000), nullable=False),
    Column("event_id", String(1000), nullable=False),
    Column("error", Text, nullable=False),
    _time("recorded_at"),
    UniqueConstraint("rule", "source", "event_id"),
)

# Each policy version seen: the exact file text a violation's `policy_version` refers to.
POLICY_VERSIONS = Table(
    "policy_versions",
    METADATA,
    _seq(),
    Column("policy", String(200), nullable=False),
    Column("version", String(80), nullable=False),
    Column("path", String(2000), nullable=False),
    Column("text", Text, nullable=False),
    _time("first_seen"),
    UniqueConstraint("policy", "version"),
)

# The last link of each chain (violations, repeats): deleting the newest rows is then detectable too.
CHAIN_HEAD = Table(
    "chain_head",
    METADATA,
    Column("name", String(40), primary_key=True),
    Column("count", BigInteger, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    # HMAC of (name, count, last_seq, hash) under the audit key; "" when the log is written without one.
    Column("mac", String(64), nullable=False, server_default=""),
)

# Settings of this audit database (the salt for masking sensitive values, the audit key's check).
META = Table(
    "meta",
    METADATA,
    Column("name", String(80), primary_key=True),
    Column("value", Text, nullable=False),
)

# What a once_per window suppressed after the violation `repeat_of`, hash-chained like violations (its
# own chain, `repeats` in chain_head). Append-only.
REPEATS = Table(
    "repeats",
    METADATA,
    _seq(),
    Column("id", String(32), nullable=False, unique=True),
    Column("repeat_of", String(32), nullable=False, index=True),
    Column("policy", String(200), nullable=False),
    Column("rule", String(400), nullable=False),
    Column("subject", String(1000), nullable=False),
    Column("key", String(1000), nullable=False),
    Column("count", BigInteger, nullable=False),
    _time("time"),  # when the window closed
    _time("first"),  # the first suppressed match
    _time("last"),  # the last one
    Column("evidence", Text, nullable=False),  # JSON list of event ids, one or more per suppressed match
    Column("evidence_events", Text, nullable=False),  # JSON list of the events (sensitive fields masked)
    _time("recorded_at"),
    Column("engine_version", String(40), nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

# One partition's state (docs/state.md) as of `position`, the seq of its last recorded event.
CHECKPOINTS = Table(
    "checkpoints",
    METADATA,
    _seq(),
    Column("partition", String(200), nullable=False),
    Column("position", BigInteger, nullable=False),
    Column("format", String(40), nullable=False),
    Column("version", Integer, nullable=False),
    Column("rules", Text, nullable=False),  # JSON: rule id -> fingerprint of what shapes its state
    Column("policies", Text, nullable=False),  # JSON: [[policy, version], ...] the state was built with
    Column("state", LargeBinary, nullable=False),  # zlib-compressed JSON, the format docs/state.md gives
    Column("size", BigInteger, nullable=False),  # bytes of the JSON before compression
    Column("engine_version", String(40), nullable=False),
    _time("recorded_at"),
)

# Something that happened to a partition's state, with why: e.g. rules whose state was dropped.
STATE_CHANGES = Table(
    "state_changes",
    METADATA,
    _seq(),
    Column("partition", String(200), nullable=False),
    Column("what", String(40), nullable=False),
    Column("detail", Text, nullable=False),  # JSON
    _time("recorded_at"),
)

# A Kafka worker's partitions: where each reads next, under which claim (tosengine/kafka/offsets.py;
# migration 0007). The writer updates these rows in place (audit/roles.py).
KAFKA_OFFSETS = Table(
    "kafka_offsets",
    METADATA,
    Column("partition", String(200), primary_key=True),  # the partition's name: <group>/<stage>/<n>
    Column("topic", String(400), nullable=False),
    Column("kafka_partition", Integer, nullable=False),
    Column("next_offset", BigInteger, nullable=True),  # where to read next; NULL: from the beginning
    Column("epoch", BigInteger, nullable=False),  # bumped by each claim; writes must hold the latest
    Column("checkpoint_seq", BigInteger, nullable=True),  # the checkpoint written with next_offset
    Column("topology", String(40), nullable=False),  # the stages' fingerprint (tosengine/kafka/topology.py)
    Column("owner", String(200), nullable=False),  # the worker that claimed it last (host:pid)
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

Index("ix_violations_subject_time", VIOLATIONS.c.subject, VIOLATIONS.c.time)
Index("ix_checkpoints_partition_seq", CHECKPOINTS.c.partition, CHECKPOINTS.c.seq)
Index("ix_repeats_subject_time", REPEATS.c.subject, REPEATS.c.time)
