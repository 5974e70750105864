"""The library's entry point: Engine.process(event) -> violations, written to the audit log.

An Engine is a Program (the compiled policies, runtime/program.py), a Pipeline over it
(runtime/pipeline.py) and the state of the one partition it runs (runtime/partition.py), behind one
lock, with an optional audit log. validate -> route -> match -> decide -> audit reads top to bottom in
`process`: events.py validates, the pipeline routes each item to its rules' keys, matches and decides,
and the audit log records.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from tosengine.audit.log import AuditLog
from tosengine.errors import EventError, TosEngineError
from tosengine.events import Event, EventRecord, parse_record, validate_record
from tosengine.policy.check import check_policy_set
from tosengine.policy.compile import Plan
from tosengine.policy.model import CheckedPolicySet
from tosengine.policy.sources import read_schemas, read_sources
from tosengine.runtime.kinds import StateOptions
from tosengine.runtime.matcher import BATCH
from tosengine.runtime.partition import PartitionState
from tosengine.runtime.pipeline import Pipeline
from tosengine.runtime.program import Program
from tosengine.violation import Violation

__all__ = ["SMOKE_TEST_TIMEOUT", "Engine", "EventInput"]

# Seconds the load-time smoke test of the compiled rulesets may take before the set is refused.
SMOKE_TEST_TIMEOUT = 30.0

# What process() takes: an Event, a decoded JSON object, or one event's JSON text.
EventInput = Event | dict[str, Any] | str


def validate_input(event: EventInput) -> EventRecord:
    """The validated record of an event given as an Event, a decoded JSON object or its JSON text."""
    return parse_record(event) if isinstance(event, str) else validate_record(event)


class Engine:
    """Runs checked policies over events. Thread-safe: calls are serialized by one lock.

    Options: `audit` (a database URL or an AuditLog; None for no audit log), `dedupe_window` (how long,
    in event time, a (source, id) pair is remembered to drop redeliveries), `max_partials_per_key`
    (the cap on open partial matches of a sequence without `within`), `smoke_test` (timeout in seconds
    of the load-time check of the compiled rulesets in a subprocess; None skips it).

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
    ) -> None:
        self._smoke_timeout = smoke_test
        self._program = Program(policies, smoke_test=smoke_test)
        self._pipeline = Pipeline(self._program)
        self._state = PartitionState(StateOptions(dedupe_window, max_partials_per_key))
        self._lock = threading.RLock()
        self._closed = False
        self._audit = AuditLog(audit) if isinstance(audit, str) else audit
        if self._audit is not None:
            self._audit.register_policies(policies)

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
        running the current ones. The clock and redelivery memory are kept; the state of the old rules
        (windows, partial matches, obligations, ladder) is dropped -- use a new Engine and restore() to
        rebuild state under the new policies."""
        if not isinstance(policies, CheckedPolicySet):
            policies = check_policy_set(read_sources(policies), read_schemas(policies))
        program = Program(policies, smoke_test=self._smoke_timeout)
        with self._lock:
            old, self._program, self._pipeline = self._program, program, Pipeline(program)
            self._state.drop_rule_state()
            if self._audit is not None:
                self._audit.register_policies(policies)
        old.close()

    # ------------------------------------------------------------------ what it runs and holds

    @property
    def policies(self) -> CheckedPolicySet:
        """The policies being run."""
        return self._program.policies

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
            record = validate_input(event)
        except EventError as exc:
            self.reject(event, exc)
            raise
        with self._lock:
            self._check_open()
            return self._accept(record, None)

    def process_many(
        self, events: Iterable[EventInput], *, on_error: Callable[[int, EventInput, EventError], None] | None = None
    ) -> list[Violation]:
        """Process events in order; the same results as calling process() on each, faster: events are
        matched by durable_rules in batches of up to matcher.BATCH.

        An invalid event raises EventError, after the events before it were processed (their violations
        are in the audit log), unless `on_error` is given: then it is called with the event's position
        in `events`, the input and the error, nothing is recorded for it, and processing goes on.
        """
        out: list[Violation] = []
        batch: list[EventRecord] = []
        for pos, event in enumerate(events):
            try:
                batch.append(validate_input(event))
            except EventError as exc:
                out.extend(self._accept_batch(batch))  # in order: what came before, then the error
                batch = []
                if on_error is None:
                    self.reject(event, exc)
                    raise
                on_error(pos, event, exc)
                continue
            if len(batch) == BATCH:
                out.extend(self._accept_batch(batch))
                batch = []
        out.extend(self._accept_batch(batch))
        return out

    def restore(self) -> int:
        """Rebuild open windows, partial matches, obligations and the clock from the audit log.

        For an embedding service after a restart: the accepted events are replayed, in the order they
        were recorded, without writing anything (their violations are already stored). Returns how many
        events were replayed. Deadlines passed by `advance_to` in an earlier run are passed again by the
        next clock move; their violations keep their ids, so the audit log adds no row.
        """
        with self._lock:
            self._check_open()
            audit = self._audit
            if audit is None:
                raise TosEngineError("restore() needs an audit log")
            audit.flush()
            n = 0
            for body in audit.iter_events():
                self._pipeline.accept(self._state, validate_record(body))
                n += 1
            return n

    def advance_to(self, t: datetime) -> list[Violation]:
        """Move the clock to `t` without an event; return the violations of deadlines it passed."""
        if t.tzinfo is None:
            raise TosEngineError("advance_to() needs an aware datetime (with a UTC offset)")
        with self._lock:
            self._check_open()
            out = self._pipeline.advance_to(self._state, t)
            if self._audit is not None:
                self._audit.record(None, out)
            return out

    def reject(self, raw: Any, error: EventError, origin: str = "api") -> None:
        """Record input that was not a valid event in the audit log's dead letter (no-op without one)."""
        if self._audit is None:
            return
        text = raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False, default=str)
        with self._lock:
            self._audit.reject(text, error, origin)

    def flush(self) -> None:
        """Write everything queued to the audit log now; raises AuditError if the database fails."""
        with self._lock:
            if self._audit is not None:
                self._audit.flush()

    def close(self) -> None:
        """Release durable_rules resources and flush the audit log."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._program.close()
            if self._audit is not None:
                self._audit.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------------ accept, then audit

    def _accept_batch(self, batch: list[EventRecord]) -> list[Violation]:
        """Accept validated events in order, matching them all first: the matcher is stateless, so an
        event's matches do not depend on the events before it (a redelivery's are simply unused)."""
        if not batch:
            return []
        out: list[Violation] = []
        with self._lock:
            self._check_open()
            fired = self._program.matcher.match_many("event", [r.fields for r in batch])
            for record, tids in zip(batch, fired, strict=True):
                out.extend(self._accept(record, tids))
        return out

    def _accept(self, record: EventRecord, fired: list[int] | None) -> list[Violation]:
        """One valid event through the pipeline (the lock is held), its results queued for the audit log."""
        violations = self._pipeline.accept(self._state, record, fired)
        if violations is None:
            return []
        if self._audit is not None:
            self._audit.record(record, violations)
        return violations

    def _check_open(self) -> None:
        if self._closed:
            raise TosEngineError("the engine is closed")
