"""Stage decide (per rule): compiled rules and the per-key state of thresholds, sequences, obligations."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tosengine.policy.compile import Plan
from tosengine.policy.model import CheckedPolicySet, Policy, Rule
from tosengine.runtime.evaluate import Env, Fn, compile_expr, compile_template

__all__ = ["ABSENT", "CompiledRule", "Item", "Obligation", "Partial", "ThresholdState", "compile_rules"]


class Item:
    """An event or a fact as rules see it, with its place in the stream and the evidence behind it."""

    __slots__ = ("causes", "chain", "events", "evidence", "fields", "id", "kind", "seq", "time")

    def __init__(self, kind: str, fields: dict[str, Any], time: datetime, seq: int, ident: str,
                 evidence: tuple[str, ...], events: tuple[dict[str, Any], ...],
                 chain: tuple[dict[str, Any], ...] = ()) -> None:
        self.kind = kind
        self.fields = fields
        self.time = time
        self.seq = seq
        self.id = ident
        self.evidence = evidence
        self.events = events
        self.causes: tuple[str, ...] = (ident,) if kind == "fact" else ()
        # For a fact: the derived facts behind it, itself last (what `explain` shows as the chain).
        self.chain = chain


# The `distinct` value of an item where the expression is absent: kept, but never counted.
ABSENT = ("absent",)


@dataclass(slots=True)  # one per open window, partial match or obligation: many
class ThresholdState:
    """The matching items kept for one (rule, key) in time order, and whether the rule is armed.

    `counts` tracks how often each distinct value occurs among the kept items, so the distinct
    count of an in-order item's window is O(1).
    """

    items: deque[tuple[Item, Any]] = field(default_factory=deque)
    counts: dict[Any, int] = field(default_factory=dict)
    armed: bool = True

    def keep(self, item: Item, value: Any) -> None:
        """Add an item, keeping time order (a late item is inserted in place)."""
        if not self.items or self.items[-1][0].time <= item.time:
            self.items.append((item, value))
        else:
            pos = len(self.items)
            while pos > 0 and self.items[pos - 1][0].time > item.time:
                pos -= 1
            self.items.insert(pos, (item, value))
        if value is not None and value is not ABSENT:
            self.counts[value] = self.counts.get(value, 0) + 1

    def forget(self) -> None:
        """Drop the oldest kept item."""
        _, value = self.items.popleft()
        if value is not None and value is not ABSENT:
            left = self.counts[value] - 1
            if left:
                self.counts[value] = left
            else:
                del self.counts[value]


@dataclass(slots=True)  # one per open window, partial match or obligation: many
class Partial:
    """A sequence's partial match: the items of its first steps."""

    items: list[Item]


@dataclass(slots=True)  # one per open window, partial match or obligation: many
class Obligation:
    """An open expect obligation."""

    after: Item
    deadline: datetime
    open: bool = True


@dataclass
class CompiledRule:
    """A rule with its expressions compiled to closures and its trigger ids by role."""

    index: int
    rule: Rule
    policy: Policy
    key: Fn | None
    message: Callable[[Env], str] | None
    emit: list[tuple[str, Fn]] | None
    distinct: Fn | None = None
    within: Fn | None = None  # expect: the deadline offset, from `after`
    step_names: tuple[str, ...] = ()
    seq_within: timedelta | None = None


def compile_rules(policies: CheckedPolicySet, plan: Plan) -> tuple[list[CompiledRule], list[Fn | None],
                                                                    list[Fn | None]]:
    """Closures for every rule, and for every trigger its local and joined residual conditions."""
    out: list[CompiledRule] = []
    for i, rule in enumerate(policies.rules):
        pol = policies.policy(rule.policy)
        cr = CompiledRule(
            index=i, rule=rule, policy=pol,
            key=compile_expr(rule.key) if rule.key is not None else None,
            message=compile_template(rule.message) if rule.message is not None else None,
            emit=[(k, compile_expr(e)) for k, e in rule.emit.data] if rule.emit is not None else None,
        )
        if rule.threshold is not None and rule.threshold.distinct is not None:
            cr.distinct = compile_expr(rule.threshold.distinct)
        if rule.expect is not None:
            cr.within = compile_expr(rule.expect.within)
        if rule.sequence is not None:
            cr.step_names = tuple(s.name for s in rule.sequence.steps)
            cr.seq_within = rule.sequence.within
        out.append(cr)
    local = [compile_expr(t.local) if t.local is not None else None for t in plan.triggers]
    joined = [compile_expr(t.joined) if t.joined is not None else None for t in plan.triggers]
    return out, local, joined
