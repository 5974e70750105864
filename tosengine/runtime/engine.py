"""The library's entry point: Engine.process(event) -> violations, written to the audit log.

An Engine is a Program (the compiled policies, runtime/program.py), a Pipeline over it
(runtime/pipeline.py) and the state of the one partition it runs (runtime/partition.py), behind one
lock, with an optional audit log. validate -> route -> match -> decide -> audit reads top to bottom in
`process`: events.py validates, the pipeline routes each item to its rules' keys, matches and decides,
and the audit log records.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import secrets
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from tosengine.errors import AuditError, EventError, TosEngineError
from tosengine.events import MAX_EVENT, EventRecord, parse_record, validate_record
from tosengine.masking import Masker
from tosengine.policy.check import check_policy_set, check_sources
from tosengine.policy.compile import Plan
from tosengine.policy.model import CheckedPolicySet
from tosengine.policy.sources import Source, read_schemas, read_sources
from tosengine.runtime.kinds import StateOptions
from tosengine.runtime.matcher import BATCH
from tosengine.runtime.partition import PartitionState, identity
from tosengine.runtime.pipeline import Outcome, Pipeline
from tosengine.runtime.program import Program
from tosengine.runtime.snapshot import FORMAT, VERSION, load_state, pack, save_state, unpack
from tosengine.violation import Repeat, Violation

if TYPE_CHECKING:
    # Imported when an audit log is opened (tosengine/audit/log.py): SQLAlchemy is most of the start-up
    # of a run without one (`replay --dry-run`, `tosengine test`, eval), so it is not loaded for them.
    from tosengine.audit.claim import PartitionClaim
    from tosengine.audit.log import AuditLog, Checkpoint

    # pydantic's model, loaded where an Event is used (tosengine/event_model.py): not by the engine itself.
    from tosengine.event_model import Event

LOG = logging.getLogger("tosengine")

__all__ = ["MAX_CLOCK_LEAD", "SMOKE_TEST_TIMEOUT", "Engine", "EventInput", "Judgement", "ruleset_hash"]

# Seconds the load-time smoke test of the compiled rulesets may take before the set is refused.
SMOKE_TEST_TIMEOUT = 30.0
# How far ahead of the event-time clock an event may be (Engine(max_clock_lead=...)): a quarter of a
# year of silence is allowed; a date in another century is not.
MAX_CLOCK_LEAD = timedelta(days=90)

# What process() takes: an Event, a decoded JSON object, or one event's JSON text. A type for the checker
# (a string at run time), so that importing the engine does not load pydantic.
EventInput: TypeAlias = "Event | dict[str, Any] | str"


def validate_input(event: EventInput, max_size: int = MAX_EVENT) -> EventRecord:
    """The validated record of an event given as an Event, a decoded JSON object or its JSON text (of at
    most `max_size` characters)."""
    return parse_record(event, max_size=max_size) if isinstance(event, str) else validate_record(event)


def _open_audit(url: str, partition: str) -> AuditLog:
    """The audit log at `url`, its module loaded on first use (see the TYPE_CHECKING import above)."""
    from tosengine.audit.log import AuditLog

    return AuditLog(url, partition=partition)


def ruleset_hash(policies: CheckedPolicySet) -> str:
    """The one name of a set of policies: a hash of each policy's id and version (the content hash of its
    file), in id order. Any change to any policy file gives another name; the audit log's policy versions
    hold the texts behind it. Responses of `tosengine serve` and its metrics name the ruleset with it."""
    blob = json.dumps(sorted((p.id, p.version) for p in policies.policies), separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Judgement:
    """What became of one event given to `Engine.judge_many`.

    `status` is "accepted" (processed; `violations` are the ones it caused, deadlines it passed
    included), "duplicate" (a redelivered (source, id), not processed again; `conflict` when its body
    differs from the copy processed, which the dead letter then records) or "rejected" (`error` names
    the field and the problem). `ruleset` is the `ruleset_hash` of the policies that judged it.
    """

    status: Literal["accepted", "duplicate", "rejected"]
    ruleset: str
    violations: tuple[Violation, ...] = ()
    error: EventError | None = None
    conflict: bool = False


class Engine:
    """Runs checked policies over events. Thread-safe: calls are serialized by one lock.

    With an audit log, what `process` returns is already durable in it, with the event and the state
    it changes (concurrent callers share commits), and the engine resumes the state the log holds: its
    latest checkpoint, then the events recorded after it (docs/state.md).

    Options: `audit` (a database URL or an AuditLog; None for no audit log), `dedupe_window` (how long,
    in event time, a (source, id) pair is remembered to drop redeliveries), `max_partials_per_key`
    (the cap on open partial matches of a sequence without `within`), `smoke_test` (timeout in seconds
    of the load-time check of the compiled rulesets in a subprocess; None skips it), `partition` (the
    name of the partition whose state this engine runs, in the audit log), `checkpoint_every` (events
    between checkpoints, at least; a larger state is checkpointed less often, in proportion).

    >>> engine = Engine.from_directory("policies")          # doctest: +SKIP
    >>> violations = engine.process({"id": "e1", ...})      # doctest: +SKIP
    """

    def __init__(
        self,
        policies: CheckedPolicySet,
        *,
        audit: AuditLog | str | None = None,
        dedupe_window: timedelta = timedelta(days=7),
        max_partials_per_key: int = 10_000,
        smoke_test: float | None = None,
        partition: str | None = None,
        checkpoint_every: int = 20_000,
        on_repeat: Callable[[Repeat], None] | None = None,
        max_clock_lead: timedelta | None = MAX_CLOCK_LEAD,
        max_event_size: int = MAX_EVENT,
        program: Program | None = None,
    ) -> None:
        self._smoke_timeout = smoke_test
        self._options = StateOptions(dedupe_window, max_partials_per_key)
        # A Program compiled for these policies may be shared by many engines (`tosengine test` runs every
        # case on one); the engine then leaves closing it to its owner.
        self._owns_program = program is None
        # An audit log given as a URL is this engine's own: a failure while opening releases it.
        owns_audit = isinstance(audit, str)
        # The partition this engine runs: as given, else the AuditLog's, else "" (the only one).
        if partition is None:
            partition = "" if audit is None or isinstance(audit, str) else audit.partition
        self.partition = partition
        if program is None and smoke_test is not None and isinstance(audit, str):
            # Opening the audit log (SQLAlchemy's import, the connection, the schema) takes longer than the
            # smoke test's subprocess: the two run side by side, and no ruleset is created before the verdict.
            smoke = Program.start_smoke_test(policies, smoke_test)
            try:
                audit = _open_audit(audit, partition)
            except BaseException:
                smoke.cancel()
                raise
            try:
                program = Program(policies, smoke_test=smoke_test, smoke=smoke)
            except BaseException:
                audit.release()  # as any failure to open does below: nothing of it is written
                raise
        self._program = program if program is not None else Program(policies, smoke_test=smoke_test)
        self._ruleset = ruleset_hash(self._program.policies)
        # Without an audit log, values rendered from sensitive fields are masked with a salt of this engine's.
        self._masker = Masker(secrets.token_bytes(16), policies.sensitive)
        self._pipeline = Pipeline(self._program, self._masker)
        self._state = PartitionState(self._options)
        self._lock = threading.RLock()  # the state and the audit log's queue
        self._commit = threading.Lock()  # one transaction at a time, in order (group commit)
        self._closed = False
        # An event further ahead of the clock than this is refused: one mistyped year would lapse every
        # obligation of every subject at once (docs/reliability.md). None: no bound.
        self.max_clock_lead = max_clock_lead
        self.max_event_size = max_event_size
        self.checkpoint_every = checkpoint_every
        self._queued = 0  # rows handed to the audit log so far
        self._durable = 0  # rows known to be written
        self._changed = 0  # events (and clock moves) since the last checkpoint
        self._checkpoint_items = 0  # how big the last checkpoint was, in events and items
        # Rules whose state could not carry over (changed or removed) when the engine opened or reloaded.
        self.dropped_rules: tuple[str, ...] = ()
        self.resumed_events = 0  # events replayed from the audit log after its checkpoint, when opening
        # Called with each repeat record (a once_per window that suppressed matches closed); the record is
        # durable once the call that closed the window returns.
        self.on_repeat: Callable[[Repeat], None] | None = on_repeat
        self._audit: AuditLog | None = None
        self._claim: PartitionClaim | None = None
        try:
            self._audit = _open_audit(audit, self.partition) if isinstance(audit, str) else audit
            if self._audit is not None:
                # Before anything is read or written: one engine at a time runs a partition's state.
                self._claim = self._audit.claim(self.partition)
                self._audit.partition = self.partition
                self._audit.register_policies(policies)
                # With one, the log's salt: masks are stable across processes (keys in checkpoints, chains).
                self._masker = self._audit.masker
                self._pipeline = Pipeline(self._program, self._masker)
                if self._resume():
                    # The log now says which policies the events recorded from here on are processed with.
                    self.checkpoint()
        except BaseException:
            if self._owns_program:
                self._program.close()
            if self._claim is not None:
                self._claim.release()
            if owns_audit and self._audit is not None:
                # Without writing: the failure (a checkpoint refused, the database gone) may be the log's.
                self._audit.release()
            raise

    @classmethod
    def from_directory(
        cls,
        directory: str | Path,
        *,
        audit: AuditLog | str | None = None,
        smoke_test: float | None = SMOKE_TEST_TIMEOUT,
        **options: Any,
    ) -> Engine:
        """Load, check and compile every policy under `directory`; raises PolicyError with diagnostics.

        `audit` is a database URL (e.g. ``sqlite:///tosengine.db``) or an AuditLog; None: no audit log.
        `smoke_test` is the timeout (seconds) of the load-time check that durable_rules neither crashes
        nor hangs on the compiled rulesets (run in a subprocess); None skips it.
        """
        return cls(
            check_policy_set(read_sources(directory), read_schemas(directory)),
            audit=audit,
            smoke_test=smoke_test,
            **options,
        )

    def reload(self, policies: CheckedPolicySet | str | Path) -> None:
        """Switch to new policies. If they fail to check, compile or pass the smoke test, raise and keep
        running the current ones. The state of a rule whose definition (kind and key) is unchanged is
        kept; the state of a changed or removed rule is dropped and reported (`dropped_rules`, a logged
        warning, a record in the audit log); new rules start empty. With an audit log, the switch is
        checkpointed."""
        if not isinstance(policies, CheckedPolicySet):
            policies = check_policy_set(read_sources(policies), read_schemas(policies))
        program = Program(policies, smoke_test=self._smoke_timeout, reuse=self._program)
        with self._lock:
            doc = save_state(self._state, self._program, self.partition)
            state, dropped = load_state(doc, program, self._options)
            if self._audit is not None:
                self._audit.register_policies(policies)
                self._masker = self._audit.masker
            else:
                self._masker = Masker(self._masker.salt, policies.sensitive)
            pipeline = Pipeline(program, self._masker)
            old, self._program, self._pipeline, self._state = self._program, program, pipeline, state
            self._ruleset = ruleset_hash(policies)
            self._changed += 1
            self._report_dropped(dropped, "reload")
        if self._owns_program:
            old.close()
        self._owns_program = True  # the new program is this engine's own
        self.checkpoint()

    # ------------------------------------------------------------------ what it runs and holds

    @property
    def policies(self) -> CheckedPolicySet:
        """The policies being run."""
        return self._program.policies

    @property
    def ruleset_hash(self) -> str:
        """The `ruleset_hash` of the policies being run."""
        return self._ruleset

    @property
    def plan(self) -> Plan:
        """The compiled plan of the policies (triggers and durable_rules rulesets)."""
        return self._program.plan

    @property
    def clock(self) -> datetime | None:
        """The largest event time seen (or given to advance_to)."""
        return self._state.clock.now

    @property
    def stats(self) -> dict[str, int]:
        """Counters: events, duplicates, facts, violations, skipped_no_key, partials_dropped."""
        with self._lock:
            return self._state.stats()

    @property
    def fired(self) -> Counter[str]:
        """How often each rule fired (a violation, or its fact for emit-only rules)."""
        return self._state.fired

    def state_size(self) -> dict[str, int]:
        """How much state is held, for memory tests and monitoring."""
        with self._lock:
            return self._state.size()

    # ------------------------------------------------------------------ public API

    def process(self, event: EventInput) -> list[Violation]:
        """Process one event -- an Event, a decoded JSON object, or the JSON text itself -- and return the
        violations it caused (deadlines it passed included).

        Raises EventError (a TosEngineError) if the event is invalid; the engine is unchanged then, and
        the input is recorded in the audit log's dead letter. Given as JSON text, the event is stored in
        the audit log as that text (unless a policy marks a path sensitive, when it is masked).
        """
        try:
            record = validate_input(event, self.max_event_size)
            with self._lock:
                self._check_open()
                out = self._accept(record, None)
                ticket = self._queued
        except EventError as exc:
            self.reject(event, exc)
            self._make_durable()
            raise
        self._make_durable(ticket)
        return out

    def process_many(
        self,
        events: Iterable[EventInput],
        *,
        on_error: Callable[[int, EventInput, EventError], None] | None = None,
        durable: bool = True,
    ) -> list[Violation]:
        """Process events in order; the same results as calling process() on each, faster: events are
        matched by durable_rules in batches of up to matcher.BATCH.

        An invalid event raises EventError, after the events before it were processed (their violations
        are in the audit log), unless `on_error` is given: then it is called with the event's position
        in `events`, the input and the error, nothing is recorded for it, and processing goes on.

        `durable=False` returns before the rows are committed: they go with the next full batch of the
        audit log, or with `flush()`, `checkpoint()` or `close()`. For a caller that acts on the
        violations only after its own `flush()` (Ingest): a commit per call of a few hundred events
        would cost it a transaction each.
        """
        out: list[Violation] = []

        def refuse(pos: int, event: EventInput, exc: EventError) -> None:
            if on_error is None:
                self.reject(event, exc)
                self._make_durable()
                raise exc
            on_error(pos, event, exc)

        self._in_batches(events, lambda batch: out.extend(self._accept_batch(batch, on_error)), refuse)
        if durable or (self._audit is not None and self._audit.queued() >= self._audit.batch_size):
            self._make_durable()
        return out

    def judge_many(
        self,
        events: Sequence[EventInput],
        *,
        on_error: Callable[[int, EventInput, EventError], None] | None = None,
    ) -> list[Judgement]:
        """Process events in order as process_many does (matched in batches, committed together) and say
        what became of each: one Judgement per event, in order. Returns once all of it is durable.

        An invalid event does not stop the others: it is recorded in the dead letter, or, if `on_error`
        is given, handed to it as process_many does (it may record it with `reject`: that row is then
        committed with the rest).
        """
        out: list[Judgement | None] = [None] * len(events)

        def refuse(pos: int, event: EventInput, exc: EventError) -> None:
            if on_error is None:
                self.reject(event, exc)
            else:
                on_error(pos, event, exc)
            out[pos] = Judgement("rejected", self._ruleset, error=exc)

        self._in_batches(events, lambda batch: self._judge_batch(batch, out, refuse), refuse)
        self._make_durable()
        judged = [j for j in out if j is not None]
        assert len(judged) == len(events)
        return judged

    def restore(self) -> int:
        """How many events were replayed from the audit log when the engine opened.

        The engine resumes the state its audit log holds when it opens (the latest checkpoint, then the
        events recorded after it), so there is nothing left to do here; this stays for callers written
        before that, who called it after opening.
        """
        with self._lock:
            self._check_open()
            if self._audit is None:
                raise TosEngineError("restore() needs an audit log")
            return self.resumed_events

    def advance_to(self, t: datetime) -> list[Violation]:
        """Move the clock to `t` without an event; return the violations of deadlines it passed."""
        if t.tzinfo is None:
            raise TosEngineError("advance_to() needs an aware datetime (with a UTC offset)")
        with self._lock:
            self._check_open()
            out = self._hand_over(None, self._pipeline.advance_to(self._state, t))
            self._changed += 1
        # A clock move is no event in the log, so the checkpoint is what keeps it.
        self.checkpoint()
        return out

    def due(self, t: datetime) -> bool:
        """Whether moving the clock to `t` would lapse an obligation or close a once_per window. Cheap (the
        heads of the deadline heaps): a ticker asks it before calling advance_to, which checkpoints."""
        with self._lock:
            return self._state.due(t)

    def reject(self, raw: Any, error: EventError, origin: str = "api") -> None:
        """Record input that was not a valid event in the audit log's dead letter (no-op without one)."""
        if self._audit is None:
            return
        text = raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False, default=str)
        with self._lock:
            self._audit.reject(text, error, origin)
            self._queued += 1

    def flush(self) -> None:
        """Write everything queued to the audit log now; raises AuditError if the database fails."""
        self._make_durable()

    def checkpoint(self) -> bool:
        """Write what is queued and the partition's state, with the input position it covers, in one
        transaction; False (nothing done) without an audit log. Raises AuditError if the database fails."""
        if self._audit is None:
            return False
        self._make_durable(checkpoint=True)
        return True

    def close(self) -> None:
        """Write what is queued and checkpoint the state (if it changed), release durable_rules."""
        with self._lock:
            if self._closed:
                return
        try:
            if self._audit is not None:
                self._make_durable(checkpoint=self._changed > 0)
        finally:
            with self._lock:
                self._closed = True
                if self._owns_program:
                    self._program.close()
                try:
                    if self._audit is not None:
                        self._audit.close()
                finally:
                    if self._claim is not None:
                        self._claim.release()  # another engine may run the partition now

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------------ accept, then audit

    def _in_batches(
        self,
        events: Iterable[EventInput],
        handle: Callable[[list[tuple[int, EventInput, EventRecord]]], None],
        refuse: Callable[[int, EventInput, EventError], None],
    ) -> None:
        """Validate events in order and hand them to `handle` in batches of up to matcher.BATCH, with
        their positions; an invalid one goes to `refuse` after the events before it were handled."""
        batch: list[tuple[int, EventInput, EventRecord]] = []
        for pos, event in enumerate(events):
            try:
                batch.append((pos, event, validate_input(event, self.max_event_size)))
            except EventError as exc:
                handle(batch)  # in order: what came before, then the error
                batch = []
                refuse(pos, event, exc)
                continue
            if len(batch) == BATCH:
                handle(batch)
                batch = []
                if self._audit is not None and self._audit.queued() >= self._audit.batch_size:
                    self._make_durable()  # commit as the batch fills: memory stays bounded
        handle(batch)

    def _accept_batch(
        self,
        batch: list[tuple[int, EventInput, EventRecord]],
        on_error: Callable[[int, EventInput, EventError], None] | None,
    ) -> list[Violation]:
        """Accept validated events in order, matching them all first: the matcher is stateless, so an
        event's matches do not depend on the events before it (a redelivery's are simply unused)."""
        if not batch:
            return []
        out: list[Violation] = []
        with self._lock:
            self._check_open()
            fired, known = self._matched(batch)
            for (pos, event, record), tids in zip(batch, fired, strict=True):
                try:
                    out.extend(self._accept(record, tids, known))
                except EventError as exc:  # refused by the engine (too far ahead of the clock)
                    if on_error is None:
                        self.reject(event, exc)
                        raise
                    on_error(pos, event, exc)
        return out

    def _judge_batch(
        self,
        batch: list[tuple[int, EventInput, EventRecord]],
        out: list[Judgement | None],
        refuse: Callable[[int, EventInput, EventError], None],
    ) -> None:
        """Accept validated events in order as _accept_batch does, writing what became of each into `out`:
        the partition's duplicate and conflict counters tell a redelivery from an event without violations."""
        if not batch:
            return
        with self._lock:
            self._check_open()
            fired, known = self._matched(batch)
            for (pos, event, record), tids in zip(batch, fired, strict=True):
                counts = self._state.counts
                duplicates, conflicts = counts["duplicates"], counts["conflicts"]
                try:
                    violations = self._accept(record, tids, known)
                except EventError as exc:  # refused by the engine (too far ahead of the clock)
                    refuse(pos, event, exc)
                    continue
                if counts["duplicates"] != duplicates:
                    out[pos] = Judgement("duplicate", self._ruleset, conflict=counts["conflicts"] != conflicts)
                else:
                    out[pos] = Judgement("accepted", self._ruleset, tuple(violations))

    def _accept(
        self, record: EventRecord, fired: list[int] | None, known: set[tuple[str, str]] | None = None
    ) -> list[Violation]:
        """One valid event through the pipeline (the lock is held), its results queued for the audit log.
        EventError if the event is too far ahead of the clock (then nothing changed). `known`: see
        `_known_old`; an event accepted here joins it."""
        now = self._state.clock.now
        if now is not None and self.max_clock_lead is not None and record.time - now > self.max_clock_lead:
            raise EventError(
                "time",
                f"{record.time_text} is more than {self.max_clock_lead.days} days ahead of the "
                f"event-time clock ({now.isoformat()}): refused, so it cannot lapse every open "
                "deadline at once (Engine(max_clock_lead=...) allows more)",
            )
        if self._audit is not None and self._recorded_before(record, known):
            self._state.counts["duplicates"] += 1
            return []
        try:
            outcome = self._pipeline.accept(self._state, record, fired)
        except TosEngineError:
            raise
        except Exception as exc:  # a defect of tosengine's own: say so, never a bare Python error
            raise TosEngineError(
                f"internal error processing event {record.id!r} from {record.source!r}: {type(exc).__name__}: {exc}"
            ) from exc
        if outcome is None:
            return []
        if outcome.conflict:
            if self._audit is not None:
                text = record.text if record.text is not None else json.dumps(record.evidence(), default=str)
                self._audit.reject(
                    text,
                    EventError(
                        "id",
                        "a copy of an event already processed (same source and "
                        "id) with a different body: not processed again",
                    ),
                )
                self._queued += 1
            return []
        self._changed += 1
        if known is not None:  # a copy later in the batch is then found, as the log would find it
            known.add((record.source, record.id))
        return self._hand_over(record, outcome)

    def _hand_over(self, record: EventRecord | None, outcome: Outcome) -> list[Violation]:
        """Queue what one call produced for the audit log (the lock is held); repeat records also go to
        `on_repeat`. The violations are returned to the caller once the rows are durable."""
        if self._audit is not None:
            self._audit.record(record, outcome.violations, outcome.repeats, outcome.errors)
            self._queued += (record is not None) + len(outcome.violations) + len(outcome.repeats) + len(outcome.errors)
        if self.on_repeat is not None:
            for r in outcome.repeats:
                self.on_repeat(r)
        return outcome.violations

    def _recorded_before(self, record: EventRecord, known: set[tuple[str, str]] | None = None) -> bool:
        """With an audit log, the log is the redelivery memory beyond the window: an event older than the
        clock minus the window, that the memory has forgotten, is a redelivery if the log holds it (so
        reading an input again after a crash adds nothing; docs/semantics.md). `known`: what the log held
        of the batch's events, read at once (`_known_old`); without it, the log is asked now."""
        now = self._state.clock.now
        if now is None or record.time >= now - self._options.dedupe_window:
            return False
        if self._state.redelivery.is_duplicate(identity(record.source, record.id), now):
            return False  # the pipeline drops it
        if known is not None:
            return (record.source, record.id) in known
        assert self._audit is not None
        return bool(self._audit.recorded([(record.source, record.id)]))

    def _matched(
        self, batch: list[tuple[int, EventInput, EventRecord]]
    ) -> tuple[list[list[int]], set[tuple[str, str]] | None]:
        """A batch's matched triggers, event by event, and what the log already holds of its old events
        (`_known_old`): what `_accept` needs for each of them."""
        records = [r for _, _, r in batch]
        return self._program.matcher.match_many("event", [r.fields for r in records]), self._known_old(records)

    def _known_old(self, records: list[EventRecord]) -> set[tuple[str, str]] | None:
        """With an audit log, which of a batch's events the log already holds, among those old enough that
        `_recorded_before` may ask (older than the window, counted from the latest time the clock can reach
        in this batch); None when the batch has none, the usual case. One query for the batch, not one per
        event: reading an input again (after a crash, or by mistake) makes almost every event such a one."""
        if self._audit is None or not records:
            return None
        now = self._state.clock.now
        latest = max(r.time for r in records)
        horizon = (latest if now is None or latest > now else now) - self._options.dedupe_window
        old = [(r.source, r.id) for r in records if r.time < horizon]
        return self._audit.recorded(old) if old else None

    # ------------------------------------------------------------------ durable: commits and checkpoints

    def _make_durable(self, ticket: int | None = None, *, checkpoint: bool = False) -> None:
        """Return once the rows up to `ticket` (default: all queued) are written. One caller writes what
        every waiting caller queued (group commit); a checkpoint goes with it when asked or when due."""
        if self._audit is None:
            return
        with self._commit:
            with self._lock:
                want = self._queued if ticket is None else ticket
                if self._durable >= want and not checkpoint:
                    return
                batch = self._audit.take()
                upto = self._queued
                snapshot = self._snapshot() if checkpoint or self._checkpoint_due() else None
                changed = self._changed
                if snapshot is not None:
                    self._changed = 0
            try:
                self._audit.write(batch, snapshot)
            except AuditError:
                with self._lock:
                    self._audit.put_back(batch)
                    if snapshot is not None:
                        self._changed += changed
                raise
            self._durable = max(self._durable, upto)

    def _checkpoint_due(self) -> bool:
        # Saving costs what the state holds: a big state is saved less often, so the cost per event stays
        # bounded, and the events to replay after the latest checkpoint stay about checkpoint_every.
        return self._changed >= max(self.checkpoint_every, self._checkpoint_items)

    def _snapshot(self) -> Checkpoint:
        """The state as a checkpoint (the lock is held): sensitive paths masked as in the events table."""
        assert self._audit is not None
        doc = save_state(self._state, self._program, self.partition, self._audit.mask if self._audit.masks else None)
        self._checkpoint_items = len(doc["records"]) + len(doc["items"])
        blob, size = pack(doc)
        from tosengine.audit.log import Checkpoint  # loaded with the audit log, which this engine has

        return Checkpoint(
            self.partition,
            FORMAT,
            VERSION,
            blob,
            size,
            dict(self._program.fingerprints),
            [(p.id, p.version) for p in self._program.policies.policies],
        )

    # ------------------------------------------------------------------ resume

    def _resume(self) -> bool:
        """Resume the partition's state from the audit log: its latest checkpoint, then its events after it.

        The events after the checkpoint are replayed with the policies that first processed them (kept
        in the log), and the state then carries over to the current policies as a reload does. True if a
        checkpoint should be written now: there was none, events were replayed, or the policies changed.
        """
        audit = self._audit
        assert audit is not None
        stored = audit.latest_checkpoint()
        tail = audit.iter_events(stored.position if stored is not None else 0)
        first = next(tail, None)
        state = PartitionState(self._options)
        program = self._program
        dropped: list[str] = []
        if stored is not None:
            doc = unpack(stored.state)
            if stored.rules != self._program.fingerprints and first is not None:
                program = self._program_of(stored.policies) or self._program
            state, dropped = load_state(doc, program, self._options)
        pipeline = Pipeline(program, self._masker) if program is not self._program else self._pipeline
        n = 0
        if first is not None:
            for body in itertools.chain([first], tail):
                pipeline.accept(state, validate_record(body, recorded=True))
                n += 1
        if program is not self._program:
            state, dropped = load_state(save_state(state, program, self.partition), self._program, self._options)
            program.close()
        self._state = state
        self.resumed_events = n
        self._changed = n
        self._report_dropped(dropped, "resume")
        return stored is None or n > 0 or stored.rules != self._program.fingerprints

    def _program_of(self, versions: list[tuple[str, str]]) -> Program | None:
        """The program of the policy versions a checkpoint was made with, from their texts in the log."""
        assert self._audit is not None
        texts = self._audit.policy_texts(versions)
        if len(texts) != len(versions):
            return None
        checked, _ = check_sources([Source(path, text) for path, text in texts.values()])
        return Program(checked) if checked is not None else None

    def _report_dropped(self, dropped: list[str], when: str) -> None:
        self.dropped_rules = tuple(dropped)
        if not dropped:
            return
        LOG.warning(
            "state of %s dropped on %s: their definition changed or they were removed", ", ".join(dropped), when
        )
        if self._audit is not None:
            self._audit.note_state_change(
                "state-dropped", {"rules": dropped, "on": when, "reason": "definition changed or rule removed"}
            )
            self._queued += 1

    def _check_open(self) -> None:
        if self._closed:
            raise TosEngineError("the engine is closed")
