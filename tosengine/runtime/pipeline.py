"""The pipeline of one partition: event -> dedupe -> clock -> match -> decide -> violations and facts.

`Pipeline.accept` runs one validated event through a PartitionState: drop a redelivery, move the
event-time clock (lapsing overdue obligations), ask the matcher which triggers the event satisfies,
let each rule's kind decide over its per-key state, and turn the firings into violations and derived
facts, which go round the same loop (forward chaining). The semantics are in docs/semantics.md.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime

from tosengine.errors import TosEngineError
from tosengine.events import EventRecord
from tosengine.runtime.evaluate import MISSING, Env
from tosengine.runtime.items import Firing, Item
from tosengine.runtime.kinds import Roles
from tosengine.runtime.partition import PartitionState
from tosengine.runtime.program import CompiledRule, Program
from tosengine.violation import Violation, format_time, violation_id

__all__ = ["MAX_DERIVED", "Pipeline"]

# Derived facts feeding rules that derive more facts: check rejects cycles, so the queue always
# settles; this bound on the facts one item may derive is only the backstop if that check missed one.
MAX_DERIVED = 100_000


@dataclass
class _Call:
    """What one call into the pipeline collects: its violations, and the derived items still to offer."""

    violations: list[Violation] = field(default_factory=list)
    queue: deque[Item] = field(default_factory=deque)


def _merge(items: list[Item]) -> tuple[tuple[str, ...], tuple[EventRecord, ...]]:
    seen: dict[str, EventRecord] = {}
    for it in items:
        for eid, ev in zip(it.evidence, it.events, strict=True):
            seen.setdefault(eid, ev)
    return tuple(seen), tuple(seen.values())


class Pipeline:
    """The stages of one Program, run on whichever PartitionState they are given."""

    def __init__(self, program: Program) -> None:
        self.program = program

    # ------------------------------------------------------------------ entry points

    def accept(
        self, state: PartitionState, record: EventRecord, fired: list[int] | None = None
    ) -> list[Violation] | None:
        """Run one valid event through the pipeline; its violations (deadlines it passed included), or
        None for a redelivery. `fired`: the event's matched triggers, if already known."""
        key = f"{len(record.source)}:{record.source}{record.id}"  # identity(), inline on the hot path
        if state.redelivery.is_duplicate(key, state.clock.now):
            state.counts["duplicates"] += 1
            return None
        state.counts["events"] += 1
        call = _Call()
        state.redelivery.remember(key, record.time)
        self._advance(state, record.time, call)
        state.seq += 1
        item = Item("event", record.fields, record.time, state.seq, record.id, (record.id,), (record,))
        self._offer(state, item, fired, call)
        self._drain(state, call)
        self._lapse_overdue(state, call)
        return call.violations

    def advance_to(self, state: PartitionState, t: datetime) -> list[Violation]:
        """Move the clock to `t` without an event; the violations of the deadlines it passed."""
        call = _Call()
        self._advance(state, t, call)
        self._lapse_overdue(state, call)
        return call.violations

    # ------------------------------------------------------------------ clock

    def _advance(self, state: PartitionState, t: datetime, call: _Call) -> None:
        """Move the clock; lapse obligations due strictly before it, each with its chain, in order;
        then forget what is behind it."""
        if not state.clock.advance(t):
            return
        self._lapse_overdue(state, call)
        state.sweep(self.program.rules, self.program.ladder, t)

    def _lapse_overdue(self, state: PartitionState, call: _Call) -> None:
        now = state.clock.now
        if now is None or not state.due(now):  # the usual case, checked cheaply
            return
        while (firing := state.pop_due(self.program.rules, now)) is not None:
            self._fire(state, firing, call)
            self._drain(state, call)

    # ------------------------------------------------------------------ match and decide

    def _drain(self, state: PartitionState, call: _Call) -> None:
        depth = 0
        while call.queue:
            depth += 1
            if depth > MAX_DERIVED:
                raise TosEngineError(
                    f"one item derived more than {MAX_DERIVED} facts: a fact cycle that check did not catch"
                )
            self._offer(state, call.queue.popleft(), None, call)

    def _offer(self, state: PartitionState, item: Item, fired: list[int] | None, call: _Call) -> None:
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
        for tid in fired:
            local = program.local[tid]
            if local is not None and local(env) is not True:
                continue
            t = triggers[tid]
            by_rule.setdefault(t.rule, []).append((t.role, t.step))
        now = state.clock.now
        assert now is not None  # items are offered only after an event set the clock
        for ri in sorted(by_rule):
            cr = program.rules[ri]
            key = self._key(cr, item)
            if key is None:
                state.counts["skipped_no_key"] += 1
                continue
            for firing in state.stores[cr.kind.name].offer(cr, key, item, by_rule[ri], now):
                self._fire(state, firing, call)

    @staticmethod
    def _key(cr: CompiledRule, item: Item) -> str | None:
        v = item.fields.get("subject") if cr.key is None else cr.key({item.kind: item.fields})
        return v if type(v) is str and v else None

    def _fire(self, state: PartitionState, f: Firing, call: _Call) -> None:
        """A rule matched: record the violation, and queue its violation fact and emitted fact."""
        cr, key, time = f.rule, f.key, f.time
        rule, pol = cr.rule, cr.policy
        state.fired[rule.id] += 1
        evidence, events = _merge(f.items)
        causes = tuple(c for it in f.items for c in it.causes)
        chain = tuple({c["id"]: c for it in f.items for c in it.chain}.values())
        if rule.violation:
            vid = violation_id("violation", rule.id, key, evidence, causes)
            now = state.clock.now
            assert now is not None
            action, step = state.ladder.climb(self.program.ladder, pol.id, key, time, rule.action, now)
            message = cr.message(f.env) if cr.message is not None else f"{pol.title}: {rule.id} ({key})"
            call.violations.append(
                Violation(
                    id=vid,
                    policy=pol.id,
                    rule=rule.id,
                    subject=key,
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
                )
            )
            state.counts["violations"] += 1
            state.seq += 1
            me = {"id": vid, "type": "violation", "rule": rule.id, "subject": key, "time": format_time(time)}
            call.queue.append(
                Item(
                    "fact",
                    {
                        "type": "violation",
                        "policy": pol.id,
                        "rule": rule.id,
                        "subject": key,
                        "severity": rule.severity,
                        "action": action,
                        "time": time,
                        "id": vid,
                    },
                    time,
                    state.seq,
                    vid,
                    evidence,
                    events,
                    (*chain, me),
                )
            )
            state.counts["facts"] += 1
        if cr.emit is not None:
            assert rule.emit is not None
            data = {}
            for name, fn in cr.emit:
                v = fn(f.env)
                if v is not MISSING:
                    data[name] = v
            fid = violation_id("emit", rule.id, key, evidence, causes)
            state.seq += 1
            me = {
                "id": fid,
                "type": rule.emit.fact,
                "rule": rule.id,
                "subject": key,
                "time": format_time(time),
                "data": json.loads(json.dumps(data, default=str)),
            }
            call.queue.append(
                Item(
                    "fact",
                    {"type": rule.emit.fact, "subject": key, "time": time, "id": fid, "data": data},
                    time,
                    state.seq,
                    fid,
                    evidence,
                    events,
                    (*chain, me),
                )
            )
            state.counts["facts"] += 1
