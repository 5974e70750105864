"""The pipeline of one partition: event -> dedupe -> clock -> match -> decide -> violations and facts.

`Pipeline.accept` runs one validated event through a PartitionState: drop a redelivery, move the
event-time clock (lapsing overdue obligations), ask the matcher which triggers the event satisfies,
let each rule's kind decide over its per-key state, and turn the firings into violations and derived
facts, which go round the same loop (forward chaining). The semantics are in docs/semantics.md.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections import deque
from collections.abc import Collection
from datetime import datetime
from typing import Any

from tosengine._json import to_json
from tosengine.errors import TosEngineError
from tosengine.events import EventRecord
from tosengine.masking import Masker
from tosengine.runtime.evaluate import MISSING, Env
from tosengine.runtime.items import Firing, Item
from tosengine.runtime.kinds import Roles
from tosengine.runtime.order import Pos, child_pos, lapse_pos
from tosengine.runtime.partition import PartitionState
from tosengine.runtime.program import CompiledRule, Program
from tosengine.violation import Repeat, RuleFailure, Violation, evidence_key, format_time, violation_id

__all__ = ["MAX_DERIVED", "Outcome", "Pipeline"]

LOG = logging.getLogger("tosengine")

# Derived facts feeding rules that derive more facts: check rejects cycles, so the queue always
# settles; this bound on the facts one item may derive is only the backstop if that check missed one.
MAX_DERIVED = 100_000


class Outcome:
    """What one call into the pipeline gives: violations, and repeat records of once_per windows closed.

    A plain class with slots, not a dataclass: one is made per event, and the dataclass's factory calls
    cost about 1 us of the 25-50 us an event takes; this about 0.65 us."""

    __slots__ = ("conflict", "errors", "positions", "queue", "repeats", "violations")

    def __init__(self, *, conflict: bool = False) -> None:
        self.violations: list[Violation] = []
        self.repeats: list[Repeat] = []
        self.errors: list[RuleFailure] = []
        self.queue: deque[Item] = deque()  # derived items still to offer
        self.conflict = conflict  # the event was a redelivered (source, id) with another body: not processed
        self.positions: list[Pos] = []  # each violation's position, when items have them

    def __repr__(self) -> str:
        return (  # every field, as the dataclass's repr showed them
            f"Outcome(violations={self.violations!r}, repeats={self.repeats!r}, errors={self.errors!r}, "
            f"queue={self.queue!r}, conflict={self.conflict!r}, positions={self.positions!r})"
        )


def _merge(items: list[Item]) -> tuple[EventRecord, ...]:
    """The events behind some items, each once by (source, id), in order of first appearance."""
    seen: dict[tuple[str, str], EventRecord] = {}
    for it in items:
        for ev in it.events:
            seen.setdefault((ev.source, ev.id), ev)
    return tuple(seen.values())


class Pipeline:
    """The stages of one Program, run on whichever PartitionState they are given. `masker` masks what a
    rule renders from a sensitive field (keys, subjects, message parts, emitted data).

    A Kafka worker runs one key group's rules on each partition (`rules`: their indices; None: all) and
    climbs the escalation ladder elsewhere (`climb=False`: violations keep their rule's action and step
    0; tosengine/kafka/ladder.py records the step). Its entry points are the `*_at` methods below: they
    never offer derived facts themselves (the worker routes them) and lapse obligations only when told.
    """

    def __init__(
        self, program: Program, masker: Masker, *, rules: Collection[int] | None = None, climb: bool = True
    ) -> None:
        self.program = program
        self.masker = masker
        self.only = frozenset(rules) if rules is not None else None
        self.climb = climb

    # ------------------------------------------------------------------ entry points

    def accept(self, state: PartitionState, record: EventRecord, fired: list[int] | None = None) -> Outcome | None:
        """Run one valid event through the pipeline; its violations (deadlines it passed included), or
        None for a redelivery. `fired`: the event's matched triggers, if already known."""
        call = self._admit(state, record)
        if call is None or call.conflict:
            return call
        self._advance(state, record.time, call)
        state.seq += 1
        item = Item("event", record.fields, record.time, state.seq, record.id, (record.id,), (record,))
        self._offer(state, item, fired, call)
        self._drain(state, call)
        self._lapse_overdue(state, call)
        return call

    def _admit(self, state: PartitionState, record: EventRecord) -> Outcome | None:
        """Drop a redelivery (None; an outcome marked `conflict` if its body differs from the copy seen);
        otherwise remember the event and start its outcome."""
        key = f"{len(record.source)}:{record.source}{record.id}"  # identity(), inline on the hot path
        digest = zlib.crc32(
            record.text.encode("utf-8", "surrogatepass") if record.text is not None else to_json(record.evidence())
        )
        if state.redelivery.is_duplicate(key, state.clock.now):
            state.counts["duplicates"] += 1
            if state.redelivery.digest(key) != digest:
                state.counts["conflicts"] += 1
                return Outcome(conflict=True)  # dropped as a copy, but its body differs: the engine records it
            return None
        state.counts["events"] += 1
        state.redelivery.remember(key, record.time, digest)
        return Outcome()

    def advance_to(self, state: PartitionState, t: datetime) -> Outcome:
        """Move the clock to `t` without an event: the violations of the deadlines it passed, and the repeat
        records of the once_per windows it closed."""
        call = Outcome()
        self._advance(state, t, call)
        self._lapse_overdue(state, call)
        return call

    # ------------------------------------------------------------------ one item at its position (Kafka)

    def accept_at(self, state: PartitionState, record: EventRecord, pos: Pos) -> Outcome | None:
        """Run one event at its position (runtime/order.py) without offering what it derives: the facts are
        left in the outcome's queue, with their positions, for the worker to route; obligations lapse only
        through `lapse_next`. None for a redelivery."""
        call = self._admit(state, record)
        if call is None or call.conflict:
            return call
        self._advance(state, record.time, call, lapse=False)
        state.seq += 1
        item = Item("event", record.fields, record.time, state.seq, record.id, (record.id,), (record,))
        item.pos = pos
        self._offer(state, item, None, call)
        return call

    def offer_at(self, state: PartitionState, item: Item) -> Outcome:
        """Offer a fact derived elsewhere (its `pos` set) to this pipeline's rules, as `accept_at` does an
        event. Its time moves this partition's clock: the clock of the whole stream was there already."""
        call = Outcome()
        self._advance(state, item.time, call, lapse=False)
        state.seq += 1
        item.seq = state.seq
        self._offer(state, item, None, call)
        return call

    def next_lapse(self, state: PartitionState) -> Pos | None:
        """The position of the obligation that lapses next, if any is open."""
        head = state.peek_lapse()
        if head is None:
            return None
        _, deadline, opened_by, rule = head
        assert opened_by.pos is not None, "an obligation opened outside a worker has no position"
        return lapse_pos(deadline, opened_by.pos, rule)

    def lapse_next(self, state: PartitionState) -> Outcome:
        """Lapse the obligation `next_lapse` names, whatever the clock (the worker calls this once the
        watermark is past its position); its facts are left in the queue, as `accept_at` leaves them."""
        call = Outcome()
        head = state.peek_lapse()
        if head is None:
            return call
        store, deadline, opened_by, rule = head
        assert opened_by.pos is not None
        at = lapse_pos(deadline, opened_by.pos, rule)
        self._advance(state, max(deadline, state.clock.now or deadline), call, lapse=False)
        due = store.pop_next(self.program.rules)
        if due is not None:
            try:
                self._fire(state, due, call, (at, 0))
            except Exception as exc:  # recorded against the rule and the obligation's event, as in _offer
                self._contain(state, due.rule, due.items[-1], exc, call)
        return call

    def advance_at(self, state: PartitionState, t: datetime) -> Outcome:
        """Move the clock to `t` without lapsing obligations (the worker lapses them in order first): once_per
        windows that end by `t` close, and what is behind it is forgotten."""
        call = Outcome()
        self._advance(state, t, call, lapse=False)
        return call

    # ------------------------------------------------------------------ clock

    def _advance(self, state: PartitionState, t: datetime, call: Outcome, lapse: bool = True) -> None:
        """Move the clock; lapse obligations due strictly before it, each with its chain, in order;
        then forget what is behind it. Without `lapse`, only once_per windows close (a worker lapses
        obligations at their positions)."""
        if not state.clock.advance(t):
            return
        if lapse:
            self._lapse_overdue(state, call)  # judged against the settled clock: see Clock
        else:
            self._close_windows(state, t, call)
        state.clock.settle()
        state.sweep(self.program.rules, self.program.ladder, t)

    def _close_windows(self, state: PartitionState, now: datetime, call: Outcome) -> None:
        while state.once.has_closing_by(now):
            repeat = state.once.pop_closed(self.program.rules, now)
            if repeat is not None:
                state.counts["repeats"] += 1
                call.repeats.append(repeat)

    def _lapse_overdue(self, state: PartitionState, call: Outcome) -> None:
        now = state.clock.now
        if now is None or not state.due(now):  # the usual case, checked cheaply
            return
        while (due := state.pop_due(self.program.rules, now)) is not None:
            if isinstance(due, Repeat):
                state.counts["repeats"] += 1
                call.repeats.append(due)
                continue
            try:
                self._fire(state, due, call)
            except Exception as exc:  # recorded against the rule and the obligation's event, as in _offer
                self._contain(state, due.rule, due.items[-1], exc, call)
            self._drain(state, call)

    # ------------------------------------------------------------------ match and decide

    def _drain(self, state: PartitionState, call: Outcome) -> None:
        depth = 0
        while call.queue:
            depth += 1
            if depth > MAX_DERIVED:
                raise TosEngineError(
                    f"one item derived more than {MAX_DERIVED} facts: a fact cycle that check did not catch"
                )
            self._offer(state, call.queue.popleft(), None, call)

    def _offer(self, state: PartitionState, item: Item, fired: list[int] | None, call: Outcome) -> None:
        """Offer one item to every rule: matcher first (unless `fired` is known), then each rule's kind
        in rule order."""
        program = self.program
        if fired is None:
            fired = program.matcher.match(item.kind, item.fields)
        if not fired:
            return
        env: Env = {item.kind: item.fields}
        by_rule: dict[int, Roles] = {}
        triggers = program.plan.triggers
        only = self.only
        # A shadow rule's violations and facts reach only other shadow rules (docs/lifecycle.md).
        shadow = item.kind == "fact" and item.fields.get("mode") == "shadow"
        for tid in fired:
            local = program.local[tid]
            t = triggers[tid]
            if only is not None and t.rule not in only:
                continue  # another key group's rule: another worker partition runs it
            if shadow and program.rules[t.rule].rule.mode != "shadow":
                continue
            try:
                if local is not None and local(env) is not True:
                    continue
            except Exception as exc:  # one rule's failure on one item is recorded; the others go on
                self._contain(state, program.rules[t.rule], item, exc, call)
                continue
            by_rule.setdefault(t.rule, []).append((t.role, t.step))
        now = state.clock.settled
        assert now is not None  # items are offered only after an event set the clock
        stores = state.stores
        for ri in sorted(by_rule) if len(by_rule) > 1 else by_rule:  # most items reach one rule
            cr = program.rules[ri]
            try:
                key = self._key(cr, item, env)
                if key is None:
                    state.counts["skipped_no_key"] += 1
                    continue
                firings = stores[cr.kind.name].offer(cr, key, item, by_rule[ri], now)
                for n, firing in enumerate(firings):
                    self._fire(state, firing, call, None if item.pos is None else (item.pos, n))
            except Exception as exc:  # one rule's failure on one item is recorded; the others go on
                self._contain(state, cr, item, exc, call)

    @staticmethod
    def _contain(state: PartitionState, cr: CompiledRule, item: Item, exc: Exception, call: Outcome) -> None:
        """Record an error raised while `cr` judged `item` (an evaluation error), instead of failing the event."""
        event = item.events[0] if item.events else None
        error = RuleFailure(
            cr.rule.id,
            event.source if event else "",
            event.id if event else item.id,
            f"{type(exc).__name__}: {exc}"[:2000],
        )
        state.counts["evaluation_errors"] += 1
        call.errors.append(error)
        LOG.warning(
            "rule %s failed on event %r (recorded as an evaluation error): %s", error.rule, error.event_id, error.error
        )

    def _key(self, cr: CompiledRule, item: Item, env: Env) -> str | None:
        """The rule's key for the item (`env` binds the item, as the key expression reads it), masked if
        the rule says so; None if it has none."""
        v = item.fields.get("subject") if cr.key is None else cr.key(env)
        if type(v) is not str or not v:
            return None
        return self.masker.value(v) if cr.mask_key else v

    def _fire(self, state: PartitionState, f: Firing, call: Outcome, at: tuple[Pos, int] | None = None) -> None:
        """A rule matched: unless its once_per window holds the match, record the violation, and queue its
        violation fact and emitted fact, all against the rule's subject. `at`: the position of the item
        (or lapse) that made the rule fire and the firing's index there, to place what it derives."""
        cr, key, time = f.rule, f.key, f.time
        rule, pol = cr.rule, cr.policy
        state.fired[rule.id] += 1
        subject = key
        if cr.subject is not None:
            v = cr.subject(f.env)
            if type(v) is str and v:  # nothing, an empty string or a non-string: the key
                subject = self.masker.value(v) if cr.mask_subject else v
        if rule.once_per is not None and state.once.suppress(cr, key, subject, time, f.items[-1]):
            return  # counted in the window's repeat record; no violation, no facts
        events = _merge(f.items)
        evidence = tuple(e.id for e in events)
        hashed = [evidence_key(e.source, e.id) for e in events]
        causes = tuple(c for it in f.items for c in it.causes)
        chain = tuple({c["id"]: c for it in f.items for c in it.chain}.values())
        # Every expression is evaluated before any state changes: an error leaves the state as it was.
        message = ""
        if rule.violation:
            message = (
                cr.message(f.env, self.masker.value)
                if cr.message is not None
                else f"{pol.title}: {rule.id} ({subject})"
            )
        data: dict[str, Any] = {}
        if cr.emit is not None:
            for name, fn, masked in cr.emit:
                v = fn(f.env)
                if v is not MISSING:
                    data[name] = self.masker.value(v) if masked else v
        if rule.violation:
            vid = violation_id("violation", rule.id, key, hashed, causes)
            now = state.clock.settled
            assert now is not None
            if self.climb:
                action, step = state.ladder.climb(
                    self.program.ladder, pol.id, subject, time, rule.action, now, count=rule.mode != "shadow"
                )
            else:
                action, step = rule.action, 0
            call.violations.append(
                Violation(
                    id=vid,
                    policy=pol.id,
                    rule=rule.id,
                    subject=subject,
                    severity=rule.severity,
                    action=action,
                    time=time,
                    evidence=evidence,
                    message=message,
                    clause=pol.clause,
                    policy_version=pol.version,
                    causes=causes,
                    kind=rule.kind,
                    deadline=f.deadline,
                    facts=chain,
                    ladder_step=step,
                    evidence_events=tuple(e.evidence() for e in events),
                    key=key,
                    evidence_sources=tuple(e.source for e in events),
                    once_per=rule.once_per,
                    mode=rule.mode,
                )
            )
            if rule.once_per is not None:
                state.once.open(cr, key, subject, vid, time)
            state.counts["violations"] += 1
            state.seq += 1
            me = {"id": vid, "type": "violation", "rule": rule.id, "subject": subject, "time": format_time(time)}
            fields = {
                "type": "violation",
                "policy": pol.id,
                "rule": rule.id,
                "subject": subject,
                "severity": rule.severity,
                "action": action,
                "time": time,
                "id": vid,
            }
            if rule.mode == "shadow":
                fields["mode"] = "shadow"
            fact = Item("fact", fields, time, state.seq, vid, evidence, events, (*chain, me))
            if at is not None:
                fact.pos = child_pos(at[0], cr.index, at[1], 0)
                call.positions.append(fact.pos)
            call.queue.append(fact)
            state.counts["facts"] += 1
        if cr.emit is not None:
            assert rule.emit is not None
            fid = violation_id("emit", rule.id, key, hashed, causes)
            state.seq += 1
            me = {
                "id": fid,
                "type": rule.emit.fact,
                "rule": rule.id,
                "subject": subject,
                "time": format_time(time),
                "data": json.loads(json.dumps(data, default=str)),
            }
            fields = {"type": rule.emit.fact, "subject": subject, "time": time, "id": fid, "data": data}
            if rule.mode == "shadow":
                fields["mode"] = "shadow"
            fact = Item("fact", fields, time, state.seq, fid, evidence, events, (*chain, me))
            if at is not None:
                fact.pos = child_pos(at[0], cr.index, at[1], 1)
            call.queue.append(fact)
            state.counts["facts"] += 1
