"""The pipeline: event -> validate -> route -> match -> decide -> (audit). Read it top to bottom.

`Engine.process` validates an event, de-duplicates redeliveries, moves the event-time clock (lapsing
overdue obligations), asks the matcher (durable_rules) which triggers an item satisfies, and runs
each rule's decision logic over per-(rule, key) state kept here in Python. Violations become facts
that go round the same loop (forward chaining). The semantics are in docs/semantics.md.
"""

from __future__ import annotations

import json
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from tosengine.audit.log import AuditLog
from tosengine.errors import EventError, TosEngineError
from tosengine.events import Event, evidence_record, parse_fields, validate_fields
from tosengine.policy.check import check_policy_set
from tosengine.policy.compile import Plan, compile_policy_set
from tosengine.policy.model import CheckedPolicySet
from tosengine.policy.sources import read_schemas, read_sources
from tosengine.runtime.clock import Clock, DueHeap
from tosengine.runtime.decide import Decisions
from tosengine.runtime.evaluate import MISSING, Env
from tosengine.runtime.ladder import LadderState
from tosengine.runtime.matcher import BATCH, Matcher
from tosengine.runtime.rules import (
    CompiledRule,
    Item,
    compile_rules,
)
from tosengine.runtime.smoke import smoke_spec
from tosengine.runtime.smoke import smoke_test as run_smoke_test
from tosengine.violation import Violation, format_time, violation_id

__all__ = ["SMOKE_TEST_TIMEOUT", "Engine", "EventInput"]

# Derived facts feeding rules that derive more facts: check rejects cycles, so the queue always
# settles; this bound on the facts one item may derive is only the backstop if that check missed one.
MAX_DERIVED = 100_000
# Seconds the load-time smoke test of the compiled rulesets may take before the set is refused.
SMOKE_TEST_TIMEOUT = 30.0


def _merge(items: Iterable[Item]) -> tuple[tuple[str, ...], tuple[dict[str, Any], ...]]:
    seen: dict[str, dict[str, Any]] = {}
    for it in items:
        for eid, ev in zip(it.evidence, it.events, strict=True):
            seen.setdefault(eid, ev)
    return tuple(seen), tuple(seen.values())


# What process() takes: an Event, a decoded JSON object, or one event's JSON text.
EventInput = Event | dict[str, Any] | str


def _validated(event: EventInput) -> tuple[dict[str, Any], str | None]:
    """The event's fields record, and its JSON text when it came as text (stored as is)."""
    if isinstance(event, str):
        return parse_fields(event), event.strip()
    return validate_fields(event), None


def _identity(source: str, ident: str) -> str:
    """(source, id) as one string, without ambiguity: the length prefix says where the source ends."""
    return f"{len(source)}:{source}{ident}"


class Engine:
    """Runs checked policies over events. Thread-safe: calls are serialized by one lock.

    Options: `audit` (a database URL or an AuditLog; None for no audit log), `dedupe_window` (how long,
    in event time, a (source, id) pair is remembered to drop redeliveries), `max_partials_per_key`
    (the cap on open partial matches of a sequence without `within`), `smoke_test` (timeout in seconds
    of the load-time check of the compiled rulesets in a subprocess; None skips it).

    >>> engine = Engine.from_directory("policies")          # doctest: +SKIP
    >>> violations = engine.process({"id": "e1", ...})      # doctest: +SKIP
    """

    def __init__(self, policies: CheckedPolicySet, *, audit: AuditLog | str | None = None,
                 dedupe_window: timedelta = timedelta(days=7), max_partials_per_key: int = 10_000,
                 smoke_test: float | None = None) -> None:
        self.policies = policies
        self.plan: Plan = compile_policy_set(policies)
        self._smoke_timeout = smoke_test
        if smoke_test is not None:
            run_smoke_test(smoke_spec(self.plan), smoke_test)
        self._rules, self._local, self._joined = compile_rules(policies, self.plan)
        self._matcher = Matcher(self.plan)
        self._lock = threading.RLock()
        self._clock = Clock()
        self._seq = 0
        self._dedupe_window = dedupe_window
        # Keyed by one string per (source, id), not a tuple of two: 1,000,000 identities inside the
        # window cost about 100 MB less (see _identity).
        self._seen: dict[str, datetime] = {}
        # (source, id) pairs in arrival order: forgetting walks from the front (an out-of-order late
        # pair may wait behind newer ones; only memory, never the duplicate check, depends on that).
        self._seen_order: deque[str] = deque()
        self._expiry: DueHeap[tuple[str, int, str]] = DueHeap()
        self._max_partials = max_partials_per_key
        self._ladder = LadderState(policies.ladder)
        self._out: list[Violation] = []
        self._queue: deque[Item] = deque()
        self._closed = False
        self._audit = AuditLog(audit) if isinstance(audit, str) else audit
        if self._audit is not None:
            self._audit.register_policies(policies, {p.path: p.text for p in policies.policies})
        # How often each rule fired (a violation, or its fact for emit-only rules): policy test coverage.
        self.fired: Counter[str] = Counter()
        self.stats: dict[str, int] = {"events": 0, "duplicates": 0, "facts": 0, "violations": 0,
                                      "skipped_no_key": 0, "partials_dropped": 0}
        self._decide = Decisions(self._joined, self._fire, self._expiry, max_partials_per_key, self.stats)

    @classmethod
    def from_directory(cls, directory: str | Path, *, audit: AuditLog | str | None = None,
                       smoke_test: float | None = SMOKE_TEST_TIMEOUT, **options: Any) -> Engine:
        """Load, check and compile every policy under `directory`; raises PolicyError with diagnostics.

        `audit` is a database URL (e.g. ``sqlite:///tosengine.db``) or an AuditLog; None: no audit log.
        `smoke_test` is the timeout (seconds) of the load-time check that durable_rules neither crashes
        nor hangs on the compiled rulesets (run in a subprocess); None skips it.
        """
        return cls(check_policy_set(read_sources(directory), read_schemas(directory)), audit=audit,
                   smoke_test=smoke_test, **options)

    def reload(self, policies: CheckedPolicySet | str | Path) -> None:
        """Switch to new policies. If they fail to check, compile or pass the smoke test, raise and keep
        running the current ones. The clock and redelivery memory are kept; the state of the old rules
        (windows, partial matches, obligations, ladder) is dropped -- use a new Engine and restore() to
        rebuild state under the new policies."""
        if not isinstance(policies, CheckedPolicySet):
            policies = check_policy_set(read_sources(policies), read_schemas(policies))
        plan = compile_policy_set(policies)
        if self._smoke_timeout is not None:
            run_smoke_test(smoke_spec(plan), self._smoke_timeout)
        rules, local, joined = compile_rules(policies, plan)
        matcher = Matcher(plan)
        with self._lock:
            old, self._matcher = self._matcher, matcher
            self.policies, self.plan, self._ladder = policies, plan, LadderState(policies.ladder)
            self._rules, self._local, self._joined = rules, local, joined
            self._expiry = DueHeap()
            self._decide = Decisions(joined, self._fire, self._expiry, self._max_partials, self.stats)
            if self._audit is not None:
                self._audit.register_policies(policies, {p.path: p.text for p in policies.policies})
        old.close()

    # ------------------------------------------------------------------ public API

    @property
    def clock(self) -> datetime | None:
        """The largest event time seen (or given to advance_to)."""
        return self._clock.now

    def process(self, event: EventInput) -> list[Violation]:
        """Process one event -- an Event, a decoded JSON object, or the JSON text itself -- and return the
        violations it caused (deadlines it passed included).

        Raises EventError (a TosEngineError) if the event is invalid; the engine is unchanged then, and
        the input is recorded in the audit log's dead letter. Given as JSON text, the event is stored in
        the audit log as that text (unless a policy marks a path sensitive, when it is masked).
        """
        try:
            fields, text = _validated(event)
        except EventError as exc:
            self.reject(event, exc)
            raise
        with self._lock:
            self._check_open()
            return self._accept(fields, text, None)

    def process_many(self, events: Iterable[EventInput], *,
                     on_error: Callable[[int, EventInput, EventError], None] | None = None) -> list[Violation]:
        """Process events in order; the same results as calling process() on each, faster: events are
        matched by durable_rules in batches of up to matcher.BATCH.

        An invalid event raises EventError, after the events before it were processed (their violations
        are in the audit log), unless `on_error` is given: then it is called with the event's position
        in `events`, the input and the error, nothing is recorded for it, and processing goes on.
        """
        out: list[Violation] = []
        batch: list[tuple[dict[str, Any], str | None]] = []
        for pos, event in enumerate(events):
            try:
                batch.append(_validated(event))
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
            self._audit = None  # replaying must not record again
            n = 0
            try:
                for body in audit.iter_events():
                    self.process(body)
                    n += 1
            finally:
                self._audit = audit
            return n

    def advance_to(self, t: datetime) -> list[Violation]:
        """Move the clock to `t` without an event; return the violations of deadlines it passed."""
        if t.tzinfo is None:
            raise TosEngineError("advance_to() needs an aware datetime (with a UTC offset)")
        with self._lock:
            self._check_open()
            self._out = []
            self._advance(t)
            self._lapse_overdue()
            return self._hand_over(None, None)

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
            self._matcher.close()
            if self._audit is not None:
                self._audit.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def state_size(self) -> dict[str, int]:
        """How much state is held, for memory tests and monitoring."""
        return {
            **self._decide.size(),
            "expiry_heap": len(self._expiry),
            "dedupe": len(self._seen),
            "ladder_subjects": len(self._ladder.seen),
        }

    # ------------------------------------------------------------------ validate, then accept

    def _accept_batch(self, batch: list[tuple[dict[str, Any], str | None]]) -> list[Violation]:
        """Accept validated events in order, matching them all first: the matcher is stateless, so an
        event's matches do not depend on the events before it (a redelivery's are simply unused)."""
        if not batch:
            return []
        out: list[Violation] = []
        with self._lock:
            self._check_open()
            fired = self._matcher.match_many("event", [fields for fields, _ in batch])
            for (fields, text), tids in zip(batch, fired, strict=True):
                out.extend(self._accept(fields, text, tids))
        return out

    def _accept(self, fields: dict[str, Any], text: str | None, fired: list[int] | None) -> list[Violation]:
        """Run one valid event through the pipeline (the lock is held); `fired`: its matched triggers,
        if already known."""
        self._out = []
        identity = _identity(fields["source"], fields["id"])
        if self._is_duplicate(identity):
            self.stats["duplicates"] += 1
            return []
        self.stats["events"] += 1
        time: datetime = fields["time"]
        self._remember(identity, time)
        self._advance(time)
        self._seq += 1
        self._offer(Item("event", fields, time, self._seq, fields["id"], (fields["id"],), (fields,)), fired)
        self._drain()
        self._lapse_overdue()
        return self._hand_over(fields, text)

    # ------------------------------------------------------------------ clock

    def _hand_over(self, fields: dict[str, Any] | None, text: str | None) -> list[Violation]:
        """The violations collected for this call, queued for the audit log with the event behind them."""
        out, self._out = self._out, []
        if self._audit is not None:
            self._audit.record(fields, out, text)
        return out

    def _check_open(self) -> None:
        if self._closed:
            raise TosEngineError("the engine is closed")

    def _is_duplicate(self, identity: str) -> bool:
        """Seen before, and the clock has not passed that time + the dedupe window (docs/semantics.md)."""
        first = self._seen.get(identity)
        now = self._clock.now
        return first is not None and (now is None or now <= first + self._dedupe_window)

    def _remember(self, identity: str, time: datetime) -> None:
        self._seen[identity] = time
        self._seen_order.append(identity)

    def _advance(self, t: datetime) -> None:
        """Move the clock; lapse obligations due strictly before it, each with its chain, in order."""
        if not self._clock.advance(t):
            return
        self._lapse_overdue()
        self._sweep(t)

    def _lapse_overdue(self) -> None:
        now = self._clock.now
        if now is None or not self._decide.deadlines.due(now):  # the usual case, checked cheaply
            return
        for deadline, ri, key, ob in self._decide.lapsed(now):
            cr = self._rules[ri]
            self._fire(cr, key, deadline, [ob.after], {"after": ob.after.fields, ob.after.kind: ob.after.fields},
                       deadline=deadline)
            self._drain()

    def _sweep(self, now: datetime) -> None:
        """Forget state that no future item can use: windows and partial matches behind the clock."""
        while (due := self._expiry.pop_before(now)) is not None:
            _, (what, ri, key) = due
            if what == "ladder":
                self._ladder.forget_if_expired(key, now)
                until = self._ladder.expires(key)
                if until is not None:  # still remembered: look again when its newest violation ages out
                    self._expiry.push(until, ("ladder", 0, key))
                continue
            self._decide.sweep(what, self._rules[ri], key, now)
        horizon = now - self._dedupe_window
        order, seen = self._seen_order, self._seen
        while order:
            t = seen.get(order[0])
            if t is not None and t >= horizon:
                break
            identity = order.popleft()
            if t is not None:
                del seen[identity]

    # ------------------------------------------------------------------ matching and deciding

    def _drain(self) -> None:
        depth = 0
        while self._queue:
            depth += 1
            if depth > MAX_DERIVED:
                raise TosEngineError(f"one item derived more than {MAX_DERIVED} facts: a fact cycle that check "
                                     "did not catch")
            self._offer(self._queue.popleft())

    def _offer(self, item: Item, fired: list[int] | None = None) -> None:
        """Offer one item to every rule: matcher first (unless `fired` is known), then each rule's
        decision logic in rule order."""
        if fired is None:
            fired = self._matcher.match(item.kind, item.fields)  # type: ignore[arg-type]
        if not fired:
            return
        env: Env = {item.kind: item.fields}
        by_rule: dict[int, list[tuple[str, int, int]]] = {}
        for tid in fired:
            local = self._local[tid]
            if local is not None and local(env) is not True:
                continue
            t = self.plan.triggers[tid]
            by_rule.setdefault(t.rule, []).append((t.role, t.step, tid))
        now = self._clock.now
        assert now is not None  # items are offered only after an event set the clock
        for ri in sorted(by_rule):
            cr = self._rules[ri]
            key = self._key(cr, item)
            if key is None:
                self.stats["skipped_no_key"] += 1
                continue
            roles = by_rule[ri]
            kind = cr.rule.kind
            if kind == "match":
                self._fire(cr, key, item.time, [item], env)
            elif kind == "threshold":
                self._decide.threshold(cr, key, item, now)
            elif kind == "sequence":
                self._decide.sequence(cr, key, item, roles, now)
            else:
                self._decide.expect(cr, key, item, roles)

    def _key(self, cr: CompiledRule, item: Item) -> str | None:
        v = item.fields.get("subject") if cr.key is None else cr.key({item.kind: item.fields})
        return v if type(v) is str and v else None

    def _climb(self, policy: str, subject: str, time: datetime, action: str) -> tuple[str, int]:
        now = self._clock.now
        if now is None:
            return action, 0
        action, step, grew = self._ladder.climb(policy, subject, time, action, now)
        if grew and len(self._ladder.seen[subject]) == 1:  # one expiry entry per remembered subject
            until = self._ladder.expires(subject)
            assert until is not None
            self._expiry.push(until, ("ladder", 0, subject))
        return action, step

    def _fire(self, cr: CompiledRule, key: str, time: datetime, items: list[Item], env: Env,
              *, deadline: datetime | None = None) -> None:
        """A rule matched: record the violation, and queue its violation fact and emitted fact."""
        rule, pol = cr.rule, cr.policy
        self.fired[rule.id] += 1
        evidence, events = _merge(items)
        causes = tuple(c for it in items for c in it.causes)
        chain = tuple({f["id"]: f for it in items for f in it.chain}.values())
        if rule.violation:
            vid = violation_id("violation", rule.id, key, evidence, causes)
            action, step = self._climb(pol.id, key, time, rule.action)
            message = cr.message(env) if cr.message is not None else f"{pol.title}: {rule.id} ({key})"
            self._out.append(Violation(
                id=vid, policy=pol.id, rule=rule.id, subject=key, severity=rule.severity, action=action,
                time=time, evidence=evidence, message=message, clause=pol.clause, policy_version=pol.version,
                causes=causes, kind=rule.kind, deadline=deadline, facts=chain, ladder_step=step,
                evidence_events=tuple(evidence_record(f) for f in events)))
            self.stats["violations"] += 1
            self._seq += 1
            me = {"id": vid, "type": "violation", "rule": rule.id, "subject": key, "time": format_time(time)}
            self._queue.append(Item("fact", {
                "type": "violation", "policy": pol.id, "rule": rule.id, "subject": key,
                "severity": rule.severity, "action": action, "time": time, "id": vid,
            }, time, self._seq, vid, evidence, events, (*chain, me)))
            self.stats["facts"] += 1
        if cr.emit is not None:
            assert rule.emit is not None
            data = {}
            for name, fn in cr.emit:
                v = fn(env)
                if v is not MISSING:
                    data[name] = v
            fid = violation_id("emit", rule.id, key, evidence, causes)
            self._seq += 1
            me = {"id": fid, "type": rule.emit.fact, "rule": rule.id, "subject": key, "time": format_time(time),
                  "data": json.loads(json.dumps(data, default=str))}
            self._queue.append(Item("fact", {"type": rule.emit.fact, "subject": key, "time": time, "id": fid,
                                             "data": data}, time, self._seq, fid, evidence, events, (*chain, me)))
            self.stats["facts"] += 1
