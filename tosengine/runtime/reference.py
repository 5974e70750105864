"""Stage decide (reference): CheckedPolicySet + events -> violations, naively, as docs/semantics.md says."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import re2

from tosengine.event_model import Event
from tosengine.policy.expr import Call, DurationLit, Expr, ListLit, Lit, Path, Unary
from tosengine.policy.model import (
    ACTIONS,
    CheckedPolicySet,
    Expect,
    ItemKind,
    Match,
    Policy,
    Rule,
    Sequence,
    Template,
    Threshold,
)
from tosengine.policy.regex import compile_pattern
from tosengine.violation import Repeat, Violation, evidence_key, format_time, repeat_id, violation_id

__all__ = [
    "ABSENT",
    "HANDLERS",
    "Calls",
    "evaluate_calls",
    "evaluate_expr",
    "evaluate_records",
    "evaluate_reference",
    "flatten",
]


# ---------------------------------------------------------------- values and expressions


class _Absent:
    """The type of ABSENT: a missing field, JSON null, the literal null, or an ill-typed result."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Final = _Absent()
Env = dict[str, dict[str, Any]]  # path root -> the item (as a JSON-like object) it names


def _kind(v: Any) -> str:
    # bool before number: in Python `True` is an int, in the language it is not a number.
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, datetime):
        return "time"
    if isinstance(v, timedelta):
        return "duration"
    if isinstance(v, list):
        return "list"
    if isinstance(v, dict):
        return "object"
    return "absent" if v is ABSENT else "null"  # "null" only occurs nested inside lists/objects


def _equal(a: Any, b: Any) -> bool:
    if a is ABSENT or b is ABSENT or _kind(a) != _kind(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def _order(op: str, a: Any, b: Any) -> bool:
    if _kind(a) != _kind(b) or _kind(a) not in ("number", "string", "time", "duration"):
        return False
    return bool({"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op])


def _arith(op: str, a: Any, b: Any) -> Any:
    kinds = (_kind(a), _kind(b))
    allowed = {("number", "number"), ("time", "duration"), ("duration", "duration")}
    allowed |= {("duration", "time"), ("string", "string")} if op == "+" else {("time", "time")}
    if kinds not in allowed:
        return ABSENT
    try:
        return a + b if op == "+" else a - b
    except OverflowError:  # e.g. a time pushed past year 9999: ill-typed, hence absent
        return ABSENT


def _lookup(value: Any, parts: tuple[str, ...]) -> Any:
    for part in parts:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdecimal() and int(part) < len(value):
            value = value[int(part)]
        else:
            return ABSENT
    return ABSENT if value is None else value


def _duration(unit: str, n: Any) -> Any:
    if _kind(n) != "number":
        return ABSENT
    try:
        return timedelta(**{unit: n})
    except (OverflowError, ValueError):  # beyond what a duration can hold, or not a number (inf)
        return ABSENT


def _call(func: str, args: list[Any]) -> Any:
    if func == "exists":
        return args[0] is not ABSENT
    if func == "matches":
        if not (isinstance(args[0], str) and isinstance(args[1], str)):
            return False
        try:  # the language's matches() is RE2's search (docs/semantics.md)
            return compile_pattern(args[1]).search(args[0]) is not None
        except re2.error:
            return False
    if func == "startswith":
        return isinstance(args[0], str) and isinstance(args[1], str) and args[0].startswith(args[1])
    if func == "lower":
        return args[0].lower() if isinstance(args[0], str) else ABSENT
    if func == "len":
        return len(args[0]) if isinstance(args[0], str | list | dict) else ABSENT
    if func in ("days", "hours", "minutes"):
        return _duration(func, args[0])
    raise ValueError(f"unknown function {func}")  # check rejects these; reaching here is a bug


def evaluate_expr(e: Expr, env: Env) -> Any:
    """The value of `e` with the path roots in `env` bound; ABSENT for anything not found or ill-typed."""
    if isinstance(e, Lit):
        return ABSENT if e.value is None else e.value
    if isinstance(e, DurationLit):
        return e.value
    if isinstance(e, ListLit):
        return [evaluate_expr(x, env) for x in e.items]
    if isinstance(e, Path):
        return _lookup(env[e.root], e.parts) if e.root in env else ABSENT
    if isinstance(e, Unary):
        v = evaluate_expr(e.operand, env)
        if e.op == "not":
            return v is not True
        if _kind(v) in ("number", "duration"):
            try:
                return -v
            except OverflowError:  # -timedelta.min
                return ABSENT
        return ABSENT
    if isinstance(e, Call):
        return _call(e.func, [evaluate_expr(a, env) for a in e.args])
    # Binary. and/or short-circuit, so the right side is evaluated only when it decides.
    if e.op == "and":
        return evaluate_expr(e.left, env) is True and evaluate_expr(e.right, env) is True
    if e.op == "or":
        return evaluate_expr(e.left, env) is True or evaluate_expr(e.right, env) is True
    a, b = evaluate_expr(e.left, env), evaluate_expr(e.right, env)
    if e.op == "==":
        return _equal(a, b)
    if e.op == "!=":
        return not _equal(a, b)
    if e.op in ("in", "not in"):
        found = isinstance(b, list) and any(_equal(a, x) for x in b)
        return found if e.op == "in" else not found
    if e.op in ("+", "-"):
        return _arith(e.op, a, b)
    return _order(e.op, a, b)


# ---------------------------------------------------------------- items and state


@dataclass(frozen=True, eq=False)  # identity: two items are never the same item
class _Item:
    """An event or a fact: `value` is what `event.*` / `fact.*` (or a step name, or `after`) reads."""

    kind: ItemKind
    value: dict[str, Any]
    pos: int  # stream position
    evidence: tuple[tuple[str, str], ...]  # (source, id) of the events behind it

    @property
    def time(self) -> datetime:
        t = self.value["time"]
        assert isinstance(t, datetime)
        return t

    @property
    def id(self) -> str:
        return str(self.value["id"])


@dataclass(eq=False)
class _Obligation:
    """An open `expect` obligation; `order` is when it was opened, the tie-break for lapsing."""

    rule: Rule
    key: str
    after: _Item
    deadline: datetime
    order: int


@dataclass
class _ThresholdState:
    kept: list[_Item] = field(default_factory=list)  # every matching item ever seen, in stream order
    armed: bool = True


Identity = tuple[str, str]  # (source, id): what identifies an event


def _merge_evidence(items: Iterable[_Item]) -> tuple[Identity, ...]:
    out: list[Identity] = []
    for item in items:
        out.extend(x for x in item.evidence if x not in out)
    return tuple(out)


@dataclass
class _Window:
    """A once_per window: opened by violation `vid` at `start`, closing when the clock reaches `end`."""

    rule: Rule
    key: str
    subject: str
    vid: str
    end: datetime
    suppressed: list[tuple[datetime, tuple[Identity, ...]]] = field(default_factory=list)
    order: int = 0


def _event_item(e: Event, pos: int) -> _Item:
    value: dict[str, Any] = dict(e.extensions)
    value.update(id=e.id, type=e.type, time=e.time, subject=e.subject, source=e.source)
    if e.data is not None:
        value["data"] = e.data
    return _Item("event", value, pos, ((e.source, e.id),))


class _Reference:
    """All state of one run; every method follows one paragraph of docs/semantics.md."""

    def __init__(self, policies: CheckedPolicySet, dedupe_window: timedelta) -> None:
        self.rules: tuple[Rule, ...] = policies.rules
        self.policies: dict[str, Policy] = {p.id: p for p in policies.policies}
        self.set = policies
        self.ladder_seen: dict[str, list[datetime]] = {}  # subject -> times of its counted violations
        self.clock: datetime | None = None
        # The clock as of the last completed move: what windows are measured from (see move_clock).
        self.settled: datetime | None = None
        self.seen: dict[tuple[str, str], datetime] = {}  # (source, id) -> time of the last processed copy
        self.dedupe_window = dedupe_window
        self.positions = 0
        self.opened = 0
        self.queue: deque[_Item] = deque()
        self.violations: list[Violation] = []
        self.thresholds: dict[tuple[str, str], _ThresholdState] = {}
        self.partials: dict[tuple[str, str], list[list[_Item]]] = {}
        self.obligations: list[_Obligation] = []
        self.windows: list[_Window] = []  # open once_per windows
        self.repeats: list[Repeat] = []

    def next_pos(self) -> int:
        self.positions += 1
        return self.positions

    # -------------------------------------------------------- clock and processing order

    def process(self, e: Event) -> None:
        """Steps 1-5 of "The clock and processing order"."""
        first = self.seen.get(e.identity)
        if first is not None and (self.clock is None or self.clock <= first + self.dedupe_window):
            return
        self.seen[e.identity] = e.time
        self.move_clock(e.time)
        # Positioned after the lapses of step 2: facts they derive come earlier in the stream than `e`.
        self.offer(_event_item(e, self.next_pos()))
        self.drain()
        self.lapse_overdue()

    def advance_to(self, t: datetime) -> None:
        """Steps 2 and 5 without an event."""
        self.move_clock(t)
        self.lapse_overdue()

    def move_clock(self, t: datetime) -> None:
        # The clock moves first, so the lapses see the new clock; the facts they derive are judged
        # against the settled clock, which moves only once the lapses are done.
        if self.clock is None or t > self.clock:
            self.clock = t
            if self.settled is None:
                self.settled = t
            self.lapse_overdue()
            self.settled = t

    def lapse_overdue(self) -> None:
        # Lapses and once_per window closings, in time order (a window first at equal times); rescan after
        # each: handling a lapse may open, fulfil or overdue other obligations, or open windows.
        while self.clock is not None:
            overdue = [o for o in self.obligations if o.deadline < self.clock]
            closing = [w for w in self.windows if w.end <= self.clock]
            first_lapse = min(overdue, key=lambda o: (o.deadline, o.order)) if overdue else None
            first_close = min(closing, key=lambda w: (w.end, w.order)) if closing else None
            if first_close is not None and (first_lapse is None or first_close.end <= first_lapse.deadline):
                self.close(first_close)
                continue
            if first_lapse is None:
                return
            first = first_lapse
            self.obligations.remove(first)
            self.fire(
                first.rule,
                first.key,
                first.deadline,
                [first.after],
                {"after": first.after.value, first.after.kind: first.after.value},
                deadline=first.deadline,
            )
            self.drain()

    def close(self, w: _Window) -> None:
        """A once_per window closes: a repeat record if it suppressed any match."""
        self.windows.remove(w)
        if not w.suppressed:
            return
        times = [t for t, _ in w.suppressed]
        evidence = [e for _, ev in w.suppressed for e in ev]
        self.repeats.append(
            Repeat(
                id=repeat_id(w.vid, w.end),
                repeat_of=w.vid,
                policy=w.rule.policy,
                rule=w.rule.id,
                subject=w.subject,
                key=w.key,
                count=len(w.suppressed),
                time=w.end,
                first=min(times),
                last=max(times),
                evidence=tuple(i for _, i in evidence),
                evidence_sources=tuple(s for s, _ in evidence),
            )
        )

    def drain(self) -> None:
        # Derived items wait until the item that produced them has been offered to every rule.
        while self.queue:
            self.offer(self.queue.popleft())

    def offer(self, item: _Item) -> None:
        # A shadow rule's violations and facts reach only other shadow rules (docs/lifecycle.md).
        shadow = item.kind == "fact" and item.value.get("mode") == "shadow"
        for rule in self.rules:
            if shadow and rule.mode != "shadow":
                continue
            handler = HANDLERS.get(rule.kind)
            if handler is None:
                raise ValueError(f"the reference evaluator has no semantics for rule kind {rule.kind!r}")
            handler(self, rule, item)

    # -------------------------------------------------------- rules

    def key(self, rule: Rule, item: _Item) -> str | None:
        """The rule's key for this item, or None when the item is to be ignored by the rule."""
        k = item.value["subject"] if rule.key is None else evaluate_expr(rule.key, {item.kind: item.value})
        return k if isinstance(k, str) and k else None

    @staticmethod
    def matches(cond: Expr, kind: ItemKind, item: _Item, bound: Env | None = None) -> bool:
        # A condition reads either events or facts: an item of the other kind never matches it.
        return item.kind == kind and evaluate_expr(cond, {**(bound or {}), item.kind: item.value}) is True

    def offer_match(self, rule: Rule, item: _Item) -> None:
        body = rule.body
        assert isinstance(body, Match)
        if self.matches(body.match, body.item, item) and (k := self.key(rule, item)) is not None:
            self.fire(rule, k, item.time, [item], {item.kind: item.value})

    def offer_threshold(self, rule: Rule, item: _Item) -> None:
        th = rule.body
        assert isinstance(th, Threshold) and self.settled is not None
        if not self.matches(th.match, th.item, item) or (k := self.key(rule, item)) is None:
            return
        state = self.thresholds.setdefault((rule.id, k), _ThresholdState())
        t = item.time
        low = max(t - th.within, self.settled - th.within)
        window = [i for i in state.kept if low <= i.time <= t] + [item]
        if th.distinct is None:
            n = len(window)
        else:
            values: list[Any] = []
            for i in window:
                v = evaluate_expr(th.distinct, {i.kind: i.value})
                if v is not ABSENT and not any(_equal(v, seen) for seen in values):
                    values.append(v)
            n = len(values)
        if state.armed and n >= th.count:
            state.armed = False
            # The window is in stream order already: kept items were appended as they came, item is newest.
            self.fire(rule, k, t, window, {item.kind: item.value})
        elif not state.armed and n < th.count:
            state.armed = True
        state.kept.append(item)

    def offer_sequence(self, rule: Rule, item: _Item) -> None:
        seq = rule.body
        assert isinstance(seq, Sequence) and self.settled is not None
        k = self.key(rule, item)
        if k is None:
            return
        clock = self.settled
        partials = self.partials.setdefault((rule.id, k), [])
        if seq.within is not None:
            partials[:] = [p for p in partials if not clock > p[0].time + seq.within]
        for partial in list(partials):  # a copy: completed partials are removed while iterating
            step = seq.steps[len(partial)]
            bound = {s.name: i.value for s, i in zip(seq.steps, partial, strict=False)}
            if not self.matches(step.match, step.item, item, bound) or item.time < partial[-1].time:
                continue
            if seq.within is not None and item.time - partial[0].time > seq.within:
                continue
            partial.append(item)
            if len(partial) == len(seq.steps):
                partials.remove(partial)
                env = {**bound, step.name: item.value, item.kind: item.value}
                self.fire(rule, k, item.time, partial, env)
        # Started only after the existing partial matches have seen the item.
        if self.matches(seq.steps[0].match, seq.steps[0].item, item):
            partials.append([item])

    def offer_expect(self, rule: Rule, item: _Item) -> None:
        x = rule.body
        assert isinstance(x, Expect)
        k = self.key(rule, item)
        if k is None:
            return
        # Fulfilment first, so an item never fulfils the obligation it opens itself.
        for ob in list(self.obligations):
            if (
                ob.rule is rule
                and ob.key == k
                and item.pos > ob.after.pos
                and ob.after.time <= item.time <= ob.deadline
                and self.matches(x.fulfilled_by, x.fulfil_item, item, {"after": ob.after.value})
            ):
                self.obligations.remove(ob)
        if self.matches(x.after, x.after_item, item):
            within = evaluate_expr(x.within, {"after": item.value})
            if not isinstance(within, timedelta):
                return
            try:
                deadline = item.time + within
            except OverflowError:  # a deadline past year 9999 can never lapse
                return
            self.opened += 1
            self.obligations.append(_Obligation(rule, k, item, deadline, self.opened))

    # -------------------------------------------------------- firing

    def climb(self, policy: str, subject: str, time: datetime, action: str, count: bool = True) -> tuple[str, int]:
        """The escalation ladder (docs/semantics.md): the recorded action and the subject's step. A shadow
        violation (`count=False`) reads the step it would reach without adding to the subject's count."""
        ladder = self.set.ladder
        if ladder is None or self.settled is None:
            return action, 0
        lo = max(time - ladder.within, self.settled - ladder.within)
        seen = self.ladder_seen.setdefault(subject, [])
        n = sum(1 for t in seen if lo <= t <= time and t >= self.settled - ladder.within)
        if ladder.counts is not None and policy not in ladder.counts:
            return action, min(n, len(ladder.steps))
        if count:
            seen.append(time)
        step = min(n + 1, len(ladder.steps))
        return max(action, ladder.steps[step - 1], key=ACTIONS.index), step

    def fire(
        self, rule: Rule, key: str, time: datetime, items: list[_Item], env: Env, deadline: datetime | None = None
    ) -> None:
        """Record the violation (unless `violation: false` or a once_per window holds the match), then queue
        its fact and the emitted fact, all against the rule's subject."""
        subject = key
        if rule.subject is not None:
            value = evaluate_expr(rule.subject, env)
            if isinstance(value, str) and value:
                subject = value
        if rule.once_per is not None:
            window = next((w for w in self.windows if w.rule is rule and w.key == key and w.subject == subject), None)
            if window is not None and time < window.end:
                # The event at which the match happened: the item that completed it (for a fact, its events).
                window.suppressed.append((time, items[-1].evidence))
                return
        evidence = _merge_evidence(items)
        hashed = [evidence_key(src, i) for src, i in evidence]
        causes = tuple(i.id for i in items if i.kind == "fact")
        if rule.violation:
            policy = self.policies[rule.policy]
            vid = violation_id("violation", rule.id, key, hashed, causes)
            action, step = self.climb(rule.policy, subject, time, rule.action, count=rule.mode != "shadow")
            message = (
                _render(rule.message, env) if rule.message is not None else f"{policy.title}: {rule.id} ({subject})"
            )
            self.violations.append(
                Violation(
                    id=vid,
                    policy=rule.policy,
                    rule=rule.id,
                    subject=subject,
                    severity=rule.severity,
                    action=action,
                    time=time,
                    evidence=tuple(i for _, i in evidence),
                    message=message,
                    clause=policy.clause,
                    policy_version=policy.version,
                    causes=causes,
                    kind=rule.kind,
                    deadline=deadline,
                    ladder_step=step,
                    key=key,
                    evidence_sources=tuple(src for src, _ in evidence),
                    once_per=rule.once_per,
                    mode=rule.mode,
                )
            )
            if rule.once_per is not None:
                self.opened += 1
                self.windows.append(_Window(rule, key, subject, vid, time + rule.once_per, order=self.opened))
            fact = {
                "type": "violation",
                "policy": rule.policy,
                "rule": rule.id,
                "subject": subject,
                "severity": rule.severity,
                "action": action,
                "time": time,
                "id": vid,
            }
            if rule.mode == "shadow":
                fact["mode"] = "shadow"
            self.queue.append(_Item("fact", fact, self.next_pos(), evidence))
        if rule.emit is not None:
            data = {name: v for name, e in rule.emit.data if (v := evaluate_expr(e, env)) is not ABSENT}
            eid = violation_id("emit", rule.id, key, hashed, causes)
            emitted = {"type": rule.emit.fact, "subject": subject, "time": time, "data": data, "id": eid}
            if rule.mode == "shadow":
                emitted["mode"] = "shadow"
            self.queue.append(_Item("fact", emitted, self.next_pos(), evidence))


# How each rule kind reacts to an item; a kind missing here is an error (tests/test_kinds.py checks the
# names against the engine's table).
HANDLERS: dict[str, Callable[[_Reference, Rule, _Item], None]] = {
    "match": _Reference.offer_match,
    "threshold": _Reference.offer_threshold,
    "sequence": _Reference.offer_sequence,
    "expect": _Reference.offer_expect,
}


def _text(v: Any) -> str:
    """A value as a message shows it (docs/policy-language.md, "Messages")."""
    if v is ABSENT:
        return "?"
    if v is True or v is False:
        return str(v).lower()
    if isinstance(v, str):
        return v
    if isinstance(v, datetime):
        return format_time(v)
    if isinstance(v, timedelta):
        return _duration_text(v)
    return json.dumps(v, ensure_ascii=False, default=str)


def _duration_text(d: timedelta) -> str:
    seconds = int(d.total_seconds())
    if seconds == 0:
        return "0s"
    text = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    for n, unit in ((days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")):
        if n:
            text += f"{n}{unit}"
    return text


def _render(template: Template, env: Env) -> str:
    return "".join(p if isinstance(p, str) else _text(evaluate_expr(p, env)) for p in template.parts)


# What each call gives: its violations and its repeat records.
Calls = list[tuple[list[Violation], list[Repeat]]]


def flatten(calls: Calls) -> tuple[list[Violation], list[Repeat]]:
    """The violations and repeat records of every call, in order."""
    return [v for vs, _ in calls for v in vs], [r for _, rs in calls for r in rs]


def evaluate_calls(
    policies: CheckedPolicySet,
    events: Iterable[Event],
    until: datetime | None = None,
    dedupe_window: timedelta = timedelta(days=7),
) -> Calls:
    """What each input gives, in order: the violations and repeat records of each event (a deadline
    lapses with the first event that moves the clock strictly past it), then of advancing to `until`
    if given. What `Engine.process` and `advance_to` must return call by call."""
    ref = _Reference(policies, dedupe_window)
    out: Calls = []
    inputs: list[Event | datetime] = [*events, *([until] if until is not None else [])]
    for e in inputs:
        v, r = len(ref.violations), len(ref.repeats)
        if isinstance(e, datetime):
            ref.advance_to(e)
        else:
            ref.process(e)
        out.append((ref.violations[v:], ref.repeats[r:]))
    return out


def evaluate_records(
    policies: CheckedPolicySet,
    events: Iterable[Event],
    until: datetime | None = None,
    dedupe_window: timedelta = timedelta(days=7),
) -> tuple[list[Violation], list[Repeat]]:
    """Every violation and repeat record `policies` give for `events`, then advancing the clock to
    `until`; each in the order produced."""
    return flatten(evaluate_calls(policies, events, until, dedupe_window))


def evaluate_reference(
    policies: CheckedPolicySet,
    events: Iterable[Event],
    until: datetime | None = None,
    dedupe_window: timedelta = timedelta(days=7),
) -> list[Violation]:
    """Every violation `policies` find in `events`, then advancing the clock to `until`; in order produced."""
    return evaluate_records(policies, events, until, dedupe_window)[0]
