"""The audit writer: batches violations, accepted and rejected events, commits each batch atomically.

Batches are Core `insert` executemany statements (about 5x the ORM); one transaction holds a batch's
violations, events and rejections together, so either all of it is written or none. Violation ids
are deterministic and UNIQUE, so replays and redeliveries add nothing; new violations are linked into
the hash chain under a lock (BEGIN IMMEDIATE on SQLite, an advisory lock on PostgreSQL).

On SQLite the writer keeps one connection open, and a batch of accepted events alone (what a single
`Engine.process()` usually commits) goes straight to the driver: SQLAlchemy's transaction cost as much
as the commit's sync there (docs/performance.md, "fourth round").
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import DataError, DBAPIError, SQLAlchemyError

from tosengine._json import to_json
from tosengine._version import __version__
from tosengine.audit.chain import GENESIS, HASHED, HASHED_REPEATS, head_mac, key_check, link_hash
from tosengine.audit.claim import PartitionClaim, claim_partition
from tosengine.audit.connect import begin_immediate, connect, database_errors, masked
from tosengine.audit.migrate import upgrade_database
from tosengine.audit.tables import (
    CHAIN_HEAD,
    CHECKPOINTS,
    EVALUATION_ERRORS,
    EVENTS,
    META,
    POLICY_VERSIONS,
    REJECTED_EVENTS,
    REPEATS,
    STATE_CHANGES,
    VIOLATIONS,
)
from tosengine.errors import AuditError, EventError
from tosengine.events import EventRecord
from tosengine.masking import Masker
from tosengine.policy.model import CheckedPolicySet
from tosengine.violation import Repeat, RuleFailure, Violation, format_time

LOG = logging.getLogger("tosengine")

__all__ = [
    "AuditError",
    "AuditLog",
    "Batch",
    "Checkpoint",
    "InTransaction",
    "StoredCheckpoint",
    "audit_key",
    "insert_checkpoint",
]

ENGINE_VERSION = f"tosengine {__version__}"

# The PostgreSQL advisory lock that serializes writers of one audit database ("tos" "audit" in ASCII).
WRITER_LOCK = 0x746F735F6175

# Work to run inside a batch's transaction, on its connection (see AuditLog.write).
InTransaction = Callable[[Connection], None]


def audit_key() -> bytes | None:
    """The optional secret that turns chain hashes into HMACs (env TOSENGINE_AUDIT_KEY)."""
    k = os.environ.get("TOSENGINE_AUDIT_KEY")
    return k.encode("utf-8") if k else None


def _utc(t: datetime) -> datetime:
    return t.astimezone(UTC)


# The events table takes one row per accepted event, so its rows skip SQLAlchemy's per-value bind
# processing (half the cost of an insert): plain tuples in this column order go to the driver's
# executemany. Times are UTC; SQLite gets them as the text SQLAlchemy's DateTime would have written.
_EVENT_COLUMNS = ("source", "event_id", "type", "subject", "time", "body", "partition", "recorded_at")
# Their PostgreSQL types, for COPY's binary format (tables.EVENTS; a test holds the two together).
_EVENT_TYPES = ("varchar", "varchar", "varchar", "varchar", "timestamptz", "text", "varchar", "timestamptz")
# Fewer rows than this go in by INSERT: COPY's savepoint and set-up cost more than it saves on a few.
_COPY_FROM = 20


@dataclass
class Batch:
    """What one transaction writes: everything queued since the last one, and maybe a checkpoint."""

    policies: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)  # _EVENT_COLUMNS but the last
    violations: list[dict[str, Any]] = field(default_factory=list)
    repeats: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    state_changes: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.policies
            or self.events
            or self.violations
            or self.repeats
            or self.rejected
            or self.state_changes
            or self.errors
        )

    def events_only(self) -> bool:
        """Whether the batch holds accepted events and nothing else."""
        return bool(self.events) and not (
            self.policies or self.violations or self.repeats or self.rejected or self.state_changes or self.errors
        )

    def extend(self, later: Batch) -> None:
        """Put `later` after this batch (a failed batch goes back in front of what was queued since)."""
        self.policies += later.policies
        self.events += later.events
        self.violations += later.violations
        self.repeats += later.repeats
        self.rejected += later.rejected
        self.state_changes += later.state_changes
        self.errors += later.errors


class _ChainStatements:
    """The statements that append to one chained table (violations or repeats), built once."""

    def __init__(self, table: Table) -> None:
        self.stored = select(table.c.id).where(table.c.id.in_(bindparam("ids", expanding=True)))
        self.head = select(CHAIN_HEAD.c.hash, CHAIN_HEAD.c.last_seq, CHAIN_HEAD.c.count).where(
            CHAIN_HEAD.c.name == bindparam("chain")
        )
        self.insert = insert(table)
        self.move = (
            update(CHAIN_HEAD)
            .where(CHAIN_HEAD.c.name == bindparam("chain"))
            .values(
                count=bindparam("to_count"),
                last_seq=bindparam("to_last_seq"),
                hash=bindparam("to_hash"),
                mac=bindparam("to_mac"),
            )
        )


@dataclass(frozen=True)
class Checkpoint:
    """A partition's state to save with a batch (tosengine/runtime/snapshot.py made `state`)."""

    partition: str
    format: str
    version: int
    state: bytes
    size: int
    rules: dict[str, str]  # rule id -> fingerprint
    policies: list[tuple[str, str]]  # (policy, version) the state was built with


@dataclass(frozen=True)
class StoredCheckpoint:
    """The latest checkpoint of a partition, as read back."""

    seq: int
    position: int
    state: bytes
    rules: dict[str, str]
    policies: list[tuple[str, str]]


def _sqlite_time(t: datetime, text: str = "") -> str:
    """A datetime in SQLAlchemy's SQLite DATETIME storage format: naive UTC, with microseconds.

    `text` is the time as the producer wrote it (validated RFC 3339): in UTC with "Z", as producers
    mostly write it, the result is a re-slicing of it, about 4x cheaper than formatting the datetime.
    """
    n = len(text)
    if n and text[-1] == "Z" and text[10] == "T" and (n == 20 or (22 <= n <= 27 and text[19] == ".")):
        return f"{text[:10]} {text[11:19]}.{text[20:-1].ljust(6, '0')}"
    if t.tzinfo is not UTC:
        t = t.astimezone(UTC)
    return t.isoformat(" ", "microseconds")[:26]  # without the "+00:00"


# The canonical JSON of the audit log's columns; built once (json.dumps with options builds one per call).
_CANONICAL = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def _json(v: Any) -> str:
    return _CANONICAL.encode(v)


def _text(v: str) -> str:
    """Text as it can be stored anywhere: NUL (which PostgreSQL holds in no text) written as the escape
    \\u0000, and a lone surrogate (which is no UTF-8: a str given as an event's JSON text can hold one) as
    its escape, \\ud800 say."""
    if "\x00" in v:
        v = v.replace("\x00", "\\u0000")
    if not v.isascii():
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            v = v.encode("utf-8", "backslashreplace").decode("utf-8")
    return v


def _fit(v: str, size: int = 1000) -> str:
    """Text for a column of `size` characters: NUL escaped, and a longer value cut, with a hash of the
    whole so that different values stay different (the full value is in the row's evidence or raw)."""
    v = _text(v)
    if len(v) <= size:
        return v
    digest = hashlib.sha256(v.encode("utf-8", "surrogatepass")).hexdigest()[:24]
    return f"{v[: size - 34]}...sha256:{digest}"


def insert_checkpoint(conn: Connection, cp: Checkpoint, now: datetime) -> int:
    """Insert a partition's checkpoint in the writer's transaction (the chain lock held), drop the
    partition's older ones, and return its seq.

    The position is the last event seq in the table: writers are serialized by the lock, so every
    event of this partition recorded so far has a seq at or below it, and none later will.

    Only a partition's latest checkpoint is ever read (an engine's resume, a worker's claim), and each
    holds the whole live state: kept, they grew the log by about the state's size every
    `checkpoint_every` events. A checkpoint is state, not evidence: the events and the chained records
    stay. The new one commits with the deletion or neither does, so a partition always has one."""
    position = conn.execute(select(func.max(EVENTS.c.seq))).scalar() or 0
    done = conn.execute(
        insert(CHECKPOINTS).values(
            partition=cp.partition,
            position=position,
            format=cp.format,
            version=cp.version,
            rules=_json(cp.rules),
            policies=_json(cp.policies),
            state=cp.state,
            size=cp.size,
            engine_version=ENGINE_VERSION,
            recorded_at=now,
        )
    )
    key = done.inserted_primary_key
    assert key is not None  # a single-row insert
    seq = int(key[0])
    _drop_older_checkpoints(conn, cp.partition, seq)
    return seq


def _drop_older_checkpoints(conn: Connection, partition: str, seq: int) -> None:
    stmt = delete(CHECKPOINTS).where(CHECKPOINTS.c.partition == partition, CHECKPOINTS.c.seq < seq)
    if conn.dialect.name != "postgresql":
        conn.execute(stmt)
        return
    # A writer role granted by a tosengine before this one may not delete (docs/audit.md, "Roles"). Its
    # checkpoints are then kept, as they were, rather than every write that carries one refused: the
    # savepoint keeps the refusal from aborting the transaction.
    try:
        with conn.begin_nested():
            conn.execute(stmt)
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != "42501":  # insufficient privilege
            raise
        LOG.warning(
            "older checkpoints of partition %r kept: this role may not delete them; run "
            "`tosengine db upgrade --writer-role ROLE` as the tables' owner to grant it",
            partition,
        )


class AuditLog:
    """Writes to the audit database at `url`; migrates it to the latest schema when opened.

    Rows are queued by `record`, `reject` and `note_state_change` and written by `write` (or `flush`)
    in one transaction per batch; the Engine decides when (docs/reliability.md, "Durable returns").
    `partition` names whose state the recorded events are in.
    """

    # A batch of 5,000 rows spreads a transaction's cost (one fsync) to about 2 us per event.
    def __init__(
        self, url: str, *, batch_size: int = 5000, upgrade: bool = True, key: bytes | None = None, partition: str = ""
    ) -> None:
        self.url = url
        self.engine = connect(url)
        self.key = key if key is not None else audit_key()
        with database_errors(url, "open"):
            if upgrade:
                upgrade_database(self.engine)
            self.salt = self._load_meta()
        self.batch_size = batch_size
        self.partition = partition
        # Masks the policies' sensitive paths (register_policies sets the paths) with this log's salt.
        self.masker = Masker(self.salt)
        self._queued = Batch()
        self._sqlite = self.engine.dialect.name == "sqlite"
        # SQLite's writes go through one connection kept open: taking one from the pool and giving it back
        # costs about 0.1 ms a transaction, as much again as the transaction's own work when process() commits
        # a single event (docs/performance.md). PostgreSQL's come from the pool, which checks each one first
        # (pool_pre_ping), so a server restart costs one failed batch at most.
        self._writer: Connection | None = None
        self._writing = threading.Lock()
        # The chained tables' statements, built once: building them per batch cost more than running them.
        self._chained = {table.name: _ChainStatements(table) for table in (VIOLATIONS, REPEATS)}
        mark = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        self._insert_events = (
            f"INSERT INTO {EVENTS.name} ({', '.join(_EVENT_COLUMNS)}) "
            f"VALUES ({', '.join([mark] * len(_EVENT_COLUMNS))}) "
            "ON CONFLICT (source, event_id) DO NOTHING"
        )
        # PostgreSQL through psycopg 3: accepted events go in by COPY, about half the server's work per row
        # of an INSERT each (see _copy_event_rows). Another driver inserts them.
        self._copy_events: str | None = None
        if self.engine.dialect.name == "postgresql" and self.engine.dialect.driver == "psycopg":
            self._copy_events = f"COPY {EVENTS.name} ({', '.join(_EVENT_COLUMNS)}) FROM STDIN (FORMAT BINARY)"

    # ------------------------------------------------------------------ what the engine hands over

    def register_policies(self, policies: CheckedPolicySet) -> None:
        """Remember the policy versions in use (with their file text) and the paths to mask."""
        self.masker = Masker(self.salt, policies.sensitive)
        now = datetime.now(UTC)
        for p in policies.policies:
            self._queued.policies.append(
                {"policy": p.id, "version": p.version, "path": p.path, "text": p.text, "first_seen": now}
            )

    def mask(self, body: dict[str, Any]) -> dict[str, Any]:
        """A copy of an event with every sensitive path replaced by a salted hash of its value."""
        return self.masker.event(body)

    @property
    def masks(self) -> bool:
        """Whether any path is sensitive (then stored events are masked)."""
        return bool(self.masker.paths)

    def queued(self) -> int:
        """How many rows are waiting to be written."""
        q = self._queued
        return len(q.events) + len(q.violations) + len(q.repeats) + len(q.rejected)

    def record(
        self,
        event: EventRecord | None,
        violations: Iterable[Violation],
        repeats: Iterable[Repeat] = (),
        errors: Iterable[RuleFailure] = (),
    ) -> None:
        """Queue an accepted event (stored as the JSON text it came as, if any), the violations it caused and
        the repeat records of the once_per windows it closed."""
        if event is not None:
            text = event.text
            if text is None or self.masker.paths:
                # Not hashed, so not canonical: pydantic-core's encoder is ~4x json.dumps.
                text = to_json(self.mask(event.evidence())).decode()
            time = event.time
            self._queued.events.append(
                (
                    event.source,
                    event.id,
                    event.type,
                    event.subject,
                    _sqlite_time(time, event.time_text) if self._sqlite else _utc(time),
                    text,
                    self.partition,
                )
            )
        for v in violations:
            self._queued.violations.append(
                {
                    "id": v.id,
                    "policy": v.policy,
                    "rule": v.rule,
                    "policy_version": v.policy_version,
                    "clause": v.clause,
                    "subject": _fit(v.subject),
                    "key": _fit(v.key or v.subject),
                    "severity": v.severity,
                    "action": v.action,
                    "message": _text(v.message),
                    "time": _utc(v.time),
                    "evidence": _json(list(v.evidence)),
                    "evidence_events": _json([self.mask(e) for e in v.evidence_events]),
                    "causes": _json(list(v.causes)),
                    "detail": _json(
                        {
                            "kind": v.kind,
                            "deadline": format_time(v.deadline) if v.deadline else None,
                            "facts": list(v.facts),
                            "ladder_step": v.ladder_step,
                        }
                    ),
                    "engine_version": ENGINE_VERSION,
                    "mode": v.mode,
                }
            )
        for e in errors:
            self._queued.errors.append(
                {"rule": e.rule, "source": _fit(e.source), "event_id": _fit(e.event_id), "error": _text(e.error)}
            )
        for r in repeats:
            self._queued.repeats.append(
                {
                    "id": r.id,
                    "repeat_of": r.repeat_of,
                    "policy": r.policy,
                    "rule": r.rule,
                    "subject": _fit(r.subject),
                    "key": _fit(r.key),
                    "count": r.count,
                    "time": _utc(r.time),
                    "first": _utc(r.first),
                    "last": _utc(r.last),
                    "evidence": _json(list(r.evidence)),
                    "evidence_events": _json([self.mask(e) for e in r.evidence_events]),
                    "engine_version": ENGINE_VERSION,
                }
            )

    def reject(self, raw: str, error: EventError, origin: str = "api") -> None:
        """Queue a rejected input line (the dead letter) with its reason; the same rejection again (a replay
        of the same file) adds no row."""
        row = {
            "origin": _fit(origin),
            "line": error.line,
            "field": _fit(error.field),
            "reason": _text(error.problem),
            "raw": _text(self.masker.text(raw)[:1_000_000]),
        }
        blob = _json([row["origin"], row["line"], row["field"], row["reason"], row["raw"]])
        row["digest"] = hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()
        self._queued.rejected.append(row)

    def note_state_change(self, what: str, detail: dict[str, Any]) -> None:
        """Queue a record of something that happened to the partition's state (e.g. rules dropped)."""
        self._queued.state_changes.append({"partition": self.partition, "what": what, "detail": _json(detail)})

    # ------------------------------------------------------------------ writing

    def take(self) -> Batch:
        """Everything queued, as a batch to `write`; the queue starts again empty."""
        batch, self._queued = self._queued, Batch()
        return batch

    def put_back(self, batch: Batch) -> None:
        """A batch that failed to write goes back in front of what was queued since."""
        batch.extend(self._queued)
        self._queued = batch

    def flush(self) -> None:
        """Write everything queued in one transaction; raise AuditError (keeping the batch) on failure."""
        batch = self.take()
        try:
            self.write(batch)
        except AuditError:
            self.put_back(batch)
            raise

    def write(self, batch: Batch, checkpoint: Checkpoint | None = None, also: InTransaction | None = None) -> None:
        """Write a batch, and the checkpoint that covers it, in one transaction; AuditError on failure
        (nothing of it is written then). `also` runs last inside that transaction, for rows that must
        commit with the batch or not at all (a Kafka worker's next offset and owner epoch); whatever it
        raises rolls the whole transaction back.

        A row the database refuses for its data (DataError: validation should let none through) must not
        block the others: the batch is then written row by row, and a refused row goes to the dead letter
        with the database's reason."""
        try:
            self._write(batch, checkpoint, also)
        except AuditError as exc:
            if not isinstance(exc.__cause__, DataError):
                raise
            self._write_apart(batch, checkpoint, also)

    def _write_apart(self, batch: Batch, checkpoint: Checkpoint | None, also: InTransaction | None) -> None:
        parts = ("policies", "events", "rejected", "errors", "violations", "repeats", "state_changes")
        for part in parts:
            for row in getattr(batch, part):
                one = Batch(**{part: [row]})
                try:
                    self._write(one, None)
                except AuditError as exc:
                    if not isinstance(exc.__cause__, DataError):
                        raise
                    reason = f"the database refused this {part} row: {str(exc.__cause__).splitlines()[0]}"
                    raw = _json(row if isinstance(row, dict) else list(row))
                    refused = EventError("", reason)
                    self.reject(raw, refused, origin=f"audit:{part}")
                    self._write(Batch(rejected=[self._queued.rejected.pop()]), None)
        self._write(Batch(), checkpoint, also)

    def _write(self, batch: Batch, checkpoint: Checkpoint | None, also: InTransaction | None = None) -> None:
        if not batch and checkpoint is None and also is None:
            return
        now = datetime.now(UTC)
        try:
            if self._sqlite and checkpoint is None and also is None and batch.events_only():
                self._write_events(batch.events, _sqlite_time(now))
                return
            with self._writing, self._transaction() as conn:
                self._lock(conn)
                if batch.policies:
                    conn.execute(self._insert_ignore(POLICY_VERSIONS, ["policy", "version"]), batch.policies)
                if batch.events:
                    at = _sqlite_time(now) if self._sqlite else now
                    self._insert_event_rows(conn, [(*e, at) for e in batch.events])
                if batch.rejected:
                    conn.execute(
                        self._insert_ignore(REJECTED_EVENTS, ["digest"]),
                        [{**r, "recorded_at": now} for r in batch.rejected],
                    )
                if batch.errors:
                    conn.execute(
                        self._insert_ignore(EVALUATION_ERRORS, ["rule", "source", "event_id"]),
                        [{**r, "recorded_at": now} for r in batch.errors],
                    )
                if batch.violations:
                    self._append_chained(conn, VIOLATIONS, HASHED, batch.violations, now)
                if batch.repeats:
                    self._append_chained(conn, REPEATS, HASHED_REPEATS, batch.repeats, now)
                if batch.state_changes:
                    conn.execute(insert(STATE_CHANGES), [{**c, "recorded_at": now} for c in batch.state_changes])
                if checkpoint is not None:
                    self._save_checkpoint(conn, checkpoint, now)
                if also is not None:
                    also(conn)
        except SQLAlchemyError as exc:
            raise AuditError(f"could not write to the audit log ({masked(self.url)}): {exc}") from exc

    def _write_events(self, events: list[tuple[Any, ...]], at: str) -> None:
        """SQLite: a batch of accepted events alone (what process() usually commits), in one transaction on
        the kept connection's driver. SQLAlchemy's transaction and execution cost about 0.15 ms here, as much
        as the insert and half the commit's sync (docs/performance.md). A driver error is raised as
        SQLAlchemy wraps it, so _write reports it as for any batch, and a refused row (DataError) still sends
        the batch to _write_apart."""
        with self._writing:
            raw: Any = self._kept().connection.driver_connection
            begin_immediate(raw)
            try:
                try:
                    raw.executemany(self._insert_events, [(*e, at) for e in events])
                    raw.commit()
                except BaseException:
                    raw.rollback()
                    raise
            except sqlite3.Error as exc:  # of the insert, the commit or the rollback
                raise DBAPIError.instance(self._insert_events, (), exc, sqlite3.Error) from exc

    def _insert_event_rows(self, conn: Connection, rows: list[tuple[Any, ...]]) -> None:
        """Insert accepted events' rows in the write transaction on `conn`; one already recorded is skipped."""
        if self._copy_events is None or len(rows) < _COPY_FROM:
            conn.exec_driver_sql(self._insert_events, rows)
            return
        self._copy_event_rows(conn, rows)

    def _copy_event_rows(self, conn: Connection, rows: list[tuple[Any, ...]]) -> None:
        """PostgreSQL: the rows by COPY, under a savepoint; if the server refuses it, by INSERT.

        An INSERT per row costs the server a statement's execution each: 20 us a row here, against 9 us for
        COPY (docs/performance.md). COPY cannot skip a row already recorded, but the engine queues only
        events it has not seen, so that happens only when another writer recorded one first. Then, or if
        the server refuses anything else, the savepoint is rolled back and the same rows go in as before,
        INSERT ... ON CONFLICT DO NOTHING: a conflict is skipped, and any other refusal is raised as the
        INSERT raises it (a row's DataError still sends the batch to _write_apart)."""
        dbapi_error: type[Exception] = self.engine.dialect.loaded_dbapi.Error
        driver: Any = conn.connection.driver_connection
        try:
            with conn.begin_nested(), driver.cursor() as cur, cur.copy(self._copy_events) as copy:
                copy.set_types(_EVENT_TYPES)
                for row in rows:
                    copy.write_row(row)
        except dbapi_error as exc:
            LOG.debug("COPY of %d event rows refused (%s); inserting them instead", len(rows), exc)
            conn.exec_driver_sql(self._insert_events, rows)

    def _kept(self) -> Connection:
        """SQLite: the connection kept for writing, opened on first use (the caller holds `_writing`)."""
        if self._writer is None:
            self._writer = self.engine.connect()
        return self._writer

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """A write transaction: on SQLite on the connection kept for writing, elsewhere on a pooled one."""
        if not self._sqlite:
            with self.engine.begin() as conn:
                yield conn
            return
        conn = self._kept()
        with conn.begin():
            yield conn

    def _save_checkpoint(self, conn: Connection, cp: Checkpoint, now: datetime) -> None:
        insert_checkpoint(conn, cp, now)

    def _lock(self, conn: Connection) -> None:
        # One writer at a time extends the chains. On PostgreSQL an advisory lock for the transaction: it
        # needs no privilege, so the writer role (docs/audit.md) holds no UPDATE, DELETE or TRUNCATE
        # right on the chained tables, which LOCK TABLE in this mode would require.
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({WRITER_LOCK})")

    def _insert_ignore(self, table: Table, cols: list[str]) -> Any:
        # Each dialect's module is imported here, where it is used: on SQLite, PostgreSQL's costs start-up.
        dialect = self.engine.dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects import postgresql

            return postgresql.insert(table).on_conflict_do_nothing(index_elements=cols)
        if dialect == "sqlite":
            from sqlalchemy.dialects import sqlite

            return sqlite.insert(table).on_conflict_do_nothing(index_elements=cols)
        raise AuditError(f"unsupported database {dialect}: use SQLite or PostgreSQL")

    def _append_chained(
        self,
        conn: Connection,
        table: Table,
        columns: tuple[str, ...],
        records: list[dict[str, Any]],
        now: datetime,
    ) -> None:
        """Append the records not stored yet (ids are deterministic) to `table`, each linked by its hash to
        the one before it, and move the chain's head (the chain is named as the table)."""
        batch: dict[str, dict[str, Any]] = {}
        for v in records:
            batch.setdefault(v["id"], v)
        ids = list(batch)
        chain = table.name
        stmt = self._chained[chain]
        for i in range(0, len(ids), 500):
            for (existing,) in conn.execute(stmt.stored, {"ids": ids[i : i + 500]}):
                batch.pop(existing, None)
        if not batch:
            return
        head = conn.execute(stmt.head, {"chain": chain}).first()
        prev, last_seq, count = (str(head[0]), int(head[1]), int(head[2])) if head else (GENESIS, 0, 0)
        rows = []
        for v in batch.values():
            last_seq += 1
            row = {**v, "seq": last_seq, "recorded_at": now, "prev_hash": prev}
            row["hash"] = prev = link_hash(row, self.key, columns)
            rows.append(row)
        conn.execute(stmt.insert, rows)
        values = {"count": count + len(rows), "last_seq": last_seq, "hash": prev}
        values["mac"] = head_mac(self.key, chain, count + len(rows), last_seq, prev) if self.key else ""
        if head is None:
            conn.execute(insert(CHAIN_HEAD), [{"name": chain, **values}])
        else:
            conn.execute(stmt.move, {"chain": chain, **{f"to_{k}": v for k, v in values.items()}})

    # ------------------------------------------------------------------ reading back (resume)

    def iter_events(self, after: int = 0, chunk: int = 5000) -> Iterator[dict[str, Any]]:
        """The partition's accepted events recorded after seq `after`, in the order they were recorded
        (masked as stored)."""
        last = after
        while True:
            with database_errors(self.url, "read"), self.engine.connect() as conn:
                rows = conn.execute(
                    select(EVENTS.c.seq, EVENTS.c.body)
                    .where(EVENTS.c.seq > last, EVENTS.c.partition == self.partition)
                    .order_by(EVENTS.c.seq)
                    .limit(chunk)
                ).all()
            if not rows:
                return
            for _, body in rows:
                yield json.loads(body)
            last = rows[-1][0]

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        """The partition's latest checkpoint, if it has one."""
        with database_errors(self.url, "read"), self.engine.connect() as conn:
            row = conn.execute(
                select(
                    CHECKPOINTS.c.seq,
                    CHECKPOINTS.c.position,
                    CHECKPOINTS.c.state,
                    CHECKPOINTS.c.rules,
                    CHECKPOINTS.c.policies,
                )
                .where(CHECKPOINTS.c.partition == self.partition)
                .order_by(CHECKPOINTS.c.seq.desc())
                .limit(1)
            ).first()
        if row is None:
            return None
        return StoredCheckpoint(
            int(row[0]),
            int(row[1]),
            bytes(row[2]),
            json.loads(row[3]),
            [(str(p), str(v)) for p, v in json.loads(row[4])],
        )

    def policy_texts(self, versions: Iterable[tuple[str, str]]) -> dict[tuple[str, str], tuple[str, str]]:
        """(policy, version) -> (path, text) of the policy versions the log holds."""
        wanted = set(versions)
        out: dict[tuple[str, str], tuple[str, str]] = {}
        with database_errors(self.url, "read"), self.engine.connect() as conn:
            for policy, version, path, body in conn.execute(
                select(
                    POLICY_VERSIONS.c.policy, POLICY_VERSIONS.c.version, POLICY_VERSIONS.c.path, POLICY_VERSIONS.c.text
                )
            ):
                if (policy, version) in wanted:
                    out[(policy, version)] = (path, body)
        return out

    def recorded(self, identities: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these (source, id) pairs the log holds as accepted events (queued ones included)."""
        wanted = set(identities)
        found = {(e[0], e[1]) for e in self._queued.events} & wanted
        # Asked per source, so the (source, event_id) index finds each one: by event_id alone, each query
        # read the whole index, and reading an input again took minutes (an event at a time).
        by_source: dict[str, list[str]] = {}
        for src, ident in wanted - found:
            by_source.setdefault(src, []).append(ident)
        with database_errors(self.url, "read"), self.engine.connect() as conn:
            for src, ids in by_source.items():
                ids.sort()
                for start in range(0, len(ids), 500):
                    rows = conn.execute(
                        select(EVENTS.c.event_id).where(
                            EVENTS.c.source == src, EVENTS.c.event_id.in_(ids[start : start + 500])
                        )
                    )
                    found.update((src, str(i)) for (i,) in rows)
        return found

    def _load_meta(self) -> bytes:
        """The log's masking salt (made on first use); and refuse a key that is not the log's own.

        A log written with TOSENGINE_AUDIT_KEY holds a check of that key: a writer without it, or with
        another, would append rows whose hashes no one could verify, so it is refused. A key given to a
        log that already holds rows written without one is refused too (its chain would change kind).
        """
        with self.engine.begin() as conn:
            self._lock(conn)
            meta = dict(
                conn.execute(select(META.c.name, META.c.value).where(META.c.name.in_(("mask_salt", "key_check")))).all()
            )
            stored = meta.get("key_check")
            if stored is not None and self.key is None:
                raise AuditError(
                    f"the audit log at {masked(self.url)} is keyed (its chain is an HMAC chain): set "
                    "TOSENGINE_AUDIT_KEY to the key it was written with; nothing was written"
                )
            if stored is not None and self.key is not None and stored != key_check(self.key):
                raise AuditError(
                    f"TOSENGINE_AUDIT_KEY is not the key the audit log at {masked(self.url)} was written with; "
                    "nothing was written"
                )
            if stored is None and self.key is not None:
                if conn.execute(select(func.count()).select_from(CHAIN_HEAD)).scalar():
                    raise AuditError(
                        f"the audit log at {masked(self.url)} was written without TOSENGINE_AUDIT_KEY: a keyed "
                        "writer cannot continue its chain (start a new log to use a key); nothing was written"
                    )
                conn.execute(insert(META), [{"name": "key_check", "value": key_check(self.key)}])
            if "mask_salt" in meta:
                return bytes.fromhex(meta["mask_salt"])
            salt = secrets.token_hex(16)
            conn.execute(insert(META), [{"name": "mask_salt", "value": salt}])
            return bytes.fromhex(salt)

    def claim(self, partition: str) -> PartitionClaim:
        """Claim `partition` for the engine that runs it (tosengine/audit/claim.py); AuditError if another
        engine holds it."""
        with database_errors(self.url, "open"):
            return claim_partition(self.engine, self.url, partition)

    def close(self) -> None:
        """Flush what is queued and release the connections."""
        try:
            self.flush()
        finally:
            self.release()

    def release(self) -> None:
        """Release the connections without writing what is queued (close() writes it first): for a caller
        whose rows must commit with something else or not at all (a Kafka worker's offsets)."""
        with self._writing:
            if self._writer is not None:
                self._writer.close()  # dispose() closes only the pool's connections, not one held out of it
                self._writer = None
        self.engine.dispose()
