"""Explain one event (`tosengine eval`): an event + checked policies -> what each rule made of it.

The event goes through a fresh engine (so what it reports is what the engine does, facts and chains
included); then every rule's conditions are evaluated against it with the runtime's own evaluator, read
only, to say why a rule did not match -- the first condition that failed, with the values it read --
and what one event does to a rule that needs more than one: it counts 1 of a threshold's `count`,
starts a sequence at its first step, or opens an obligation with its deadline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tosengine.durations import format_duration
from tosengine.events import EventRecord
from tosengine.masking import reads_sensitive
from tosengine.policy.expr import Binary, Expr, Path, walk
from tosengine.policy.model import CheckedPolicySet, Expect, Match, Rule, Sequence, Threshold
from tosengine.policy.unparse import format_expr
from tosengine.runtime.engine import Engine
from tosengine.runtime.evaluate import MISSING, Env, compile_expr, lookup
from tosengine.violation import Violation, format_time

__all__ = ["MATCHED", "Failure", "RuleTrace", "trace_event"]

# The outcomes that mean the rule took the event (every other outcome says why not).
MATCHED = frozenset({"violation", "fact", "counts", "starts", "opens"})


@dataclass(frozen=True)
class Failure:
    """The first condition of a rule that did not hold for the event, and the values it read."""

    condition: str
    values: tuple[tuple[str, Any], ...]

    def to_json(self) -> dict[str, Any]:
        """As `eval --format json` prints it (absent values as null)."""
        return {"condition": self.condition, "values": {p: _jsonable(v) for p, v in self.values}}


@dataclass
class RuleTrace:
    """What one rule made of the event: `outcome` (violation, fact, counts, starts, opens: it took the
    event; no-match, no-key, facts-only, disabled: it did not) and a sentence saying what that means."""

    rule: Rule
    outcome: str
    detail: str
    failure: Failure | None = None
    violations: list[Violation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the event could do later (continue, fulfil)

    @property
    def matched(self) -> bool:
        """Whether the rule took the event."""
        return self.outcome in MATCHED

    def to_json(self) -> dict[str, Any]:
        """As `eval --format json` prints it."""
        return {
            "rule": self.rule.id,
            "kind": self.rule.kind,
            "mode": self.rule.mode,
            "enabled": self.rule.enabled,
            "matched": self.matched,
            "outcome": self.outcome,
            "detail": self.detail,
            "failed": self.failure.to_json() if self.failure is not None else None,
            "notes": self.notes,
            "violations": [v.to_json() for v in self.violations],
        }


def _jsonable(v: Any) -> Any:
    if v is MISSING:
        return None
    if hasattr(v, "isoformat"):
        return format_time(v)
    return v


def _conjuncts(e: Expr) -> list[Expr]:
    """The top-level `and` operands of a condition, in order (macros are already written out)."""
    if isinstance(e, Binary) and e.op == "and":
        return [*_conjuncts(e.left), *_conjuncts(e.right)]
    return [e]


class _Tracer:
    def __init__(self, policies: CheckedPolicySet, record: EventRecord) -> None:
        self.sensitive = policies.sensitive
        self.modes = {r.id: r.mode for r in policies.rules}
        self.env: Env = {"event": record.fields}
        self.record = record

    def reads(self, e: Expr) -> tuple[tuple[str, Any], ...]:
        """The event paths `e` reads and their values (a sensitive one is not shown)."""
        out: dict[str, Any] = {}
        for p in walk(e):
            if isinstance(p, Path) and p.root == "event" and p.parts:
                value = lookup(self.env["event"], p.parts)
                hidden = value is not MISSING and reads_sensitive(p.parts, self.sensitive)
                out[p.dotted] = "<sensitive>" if hidden else value
        return tuple(out.items())

    def first_failure(self, e: Expr, bound: frozenset[str] = frozenset()) -> Failure | None:
        """The first conjunct of `e` that does not hold (conjuncts reading `bound` roots are skipped)."""
        for c in _conjuncts(e):
            if {p.root for p in walk(c) if isinstance(p, Path)} & bound:
                continue
            if compile_expr(c)(self.env) is not True:
                return Failure(format_expr(c, max_items=6), self.reads(c))
        return None

    def needs(self, e: Expr, bound: frozenset[str]) -> str:
        """The conjuncts of `e` that read earlier items (`bound`), as text."""
        parts = [c for c in _conjuncts(e) if {p.root for p in walk(c) if isinstance(p, Path)} & bound]
        return " and ".join(format_expr(c, max_items=6) for c in parts)

    def key(self, rule: Rule) -> str | None:
        v = self.record.fields.get("subject") if rule.key is None else compile_expr(rule.key)(self.env)
        return v if type(v) is str and v else None

    def trace(self, rule: Rule, violations: list[Violation], fired: int) -> RuleTrace:
        mine = [v for v in violations if v.rule == rule.id]
        if not rule.enabled:
            return RuleTrace(rule, "disabled", "`enabled: false`: no engine runs this rule", violations=mine)
        body = rule.body
        triggers = [c for c in body.conditions() if c.trigger and c.item == "event"]
        if not triggers:
            cond = format_expr(body.conditions()[0].expr, max_items=6)
            if fired:
                return RuleTrace(rule, "violation" if mine else "fact", "fired on a fact this event led to", None, mine)
            return RuleTrace(rule, "facts-only", f"it matches facts, not events, and no fact this event led to: {cond}")
        if isinstance(body, Match | Threshold):
            fail = self.first_failure(body.match)
            if fail is not None:
                return RuleTrace(rule, "no-match", "its condition does not hold", fail)
            key = self.key(rule)
            if key is None:
                return RuleTrace(rule, "no-key", self.no_key(rule))
            if isinstance(body, Match):
                if mine:
                    return RuleTrace(rule, "violation", self.recorded(mine), violations=mine)
                if rule.emit is not None and not rule.violation:
                    return RuleTrace(rule, "fact", f"emits a `{rule.emit.fact}` fact under key {key}")
                return RuleTrace(rule, "no-match", "it matches, but the engine recorded an evaluation error instead")
            counted = "distinct values of " + format_expr(body.distinct) if body.distinct is not None else "events"
            return RuleTrace(
                rule,
                "counts",
                f"matches the threshold's condition: counts 1 of {body.count} {counted} within "
                f"{format_duration(body.within)} under key {key}",
            )
        if isinstance(body, Sequence):
            return self.sequence(rule, body)
        assert isinstance(body, Expect)
        return self.expect(rule, body)

    def no_key(self, rule: Rule) -> str:
        key = format_expr(rule.key) if rule.key is not None else "event.subject"
        return f"it matches, but its key `{key}` is absent from this event, and an item without a key is ignored"

    def shadow(self, rule: str) -> bool:
        return self.modes.get(rule) == "shadow"

    def recorded(self, mine: list[Violation]) -> str:
        v = mine[0]
        shadow = " (shadow: recorded, acted on by no one)" if v.mode == "shadow" or self.shadow(v.rule) else ""
        return f"violation against {v.subject}: {v.severity}, {v.action}{shadow}"

    def sequence(self, rule: Rule, body: Sequence) -> RuleTrace:
        first, rest = body.steps[0], body.steps[1:]
        names = [s.name for s in body.steps]
        notes = []
        for i, step in enumerate(rest, start=1):
            bound = frozenset(names[:i])
            if step.item == "event" and self.first_failure(step.match, bound) is None:
                needs = self.needs(step.match, bound)
                notes.append(
                    f"could take step `{step.name}` ({i + 1} of {len(names)}) of a sequence already started"
                    + (f", if {needs}" if needs else "")
                )
        fail = self.first_failure(first.match) if first.item == "event" else Failure("(matches a fact)", ())
        if fail is not None:
            detail = f"it does not start the sequence at step `{first.name}`"
            return RuleTrace(rule, "no-match", detail, fail, notes=notes)
        key = self.key(rule)
        if key is None:
            return RuleTrace(rule, "no-key", self.no_key(rule), notes=notes)
        within = f", all within {format_duration(body.within)}" if body.within is not None else ""
        return RuleTrace(
            rule,
            "starts",
            f"would start step `{first.name}` (1 of {len(names)}) under key {key}; next: `{names[1]}`{within}",
            notes=notes,
        )

    def expect(self, rule: Rule, body: Expect) -> RuleTrace:
        notes = []
        if body.fulfil_item == "event" and self.first_failure(body.fulfilled_by, frozenset({"after"})) is None:
            needs = self.needs(body.fulfilled_by, frozenset({"after"}))
            notes.append(
                "could fulfil an obligation opened earlier under the same key" + (f", if {needs}" if needs else "")
            )
        fail = self.first_failure(body.after) if body.after_item == "event" else Failure("(matches a fact)", ())
        if fail is not None:
            return RuleTrace(rule, "no-match", "it does not open an obligation", fail, notes=notes)
        key = self.key(rule)
        if key is None:
            return RuleTrace(rule, "no-key", self.no_key(rule), notes=notes)
        within = compile_expr(body.within)({"after": self.record.fields, "event": self.record.fields})
        if not hasattr(within, "total_seconds"):
            return RuleTrace(
                rule,
                "no-match",
                f"it would open an obligation, but its `within` ({format_expr(body.within)}) gives no duration",
                Failure(format_expr(body.within), self.reads(body.within)),
                notes=notes,
            )
        due = format_time(self.record.time + within)
        return RuleTrace(
            rule,
            "opens",
            f"opens an obligation under key {key}, due {due} ({format_duration(within)} after this event): "
            f"fulfilled by {format_expr(body.fulfilled_by, max_items=6)}",
            notes=notes,
        )


def trace_event(policies: CheckedPolicySet, record: EventRecord) -> tuple[list[RuleTrace], list[Violation]]:
    """Every rule's trace (disabled ones included, in file order) and the violations the engine recorded."""
    with Engine(policies, max_clock_lead=None) as engine:
        violations = engine.process(record.evidence())
        fired = engine.fired
    tracer = _Tracer(policies, record)
    rules = [r for p in policies.policies for r in sorted((*p.rules, *p.disabled), key=lambda r: r.span)]
    return [tracer.trace(r, violations, fired[r.id]) for r in rules], violations
