"""Stage compile (runtime): CheckedPolicySet -> Program, what the pipeline runs.

A Program is immutable once built: the compiled plan, a matcher holding its durable_rules rulesets,
and every rule's expressions as closures. Per-partition state lives apart (runtime/partition.py), so
one Program serves any number of partitions, and a reload builds a new Program beside the old one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields, is_dataclass
from datetime import timedelta
from typing import Any

from tosengine.masking import expr_reads_sensitive
from tosengine.policy.compile import Plan, compile_policy_set
from tosengine.policy.expr import Expr
from tosengine.policy.model import CheckedPolicySet, Ladder, Policy, Rule
from tosengine.runtime.evaluate import Fn, Render, compile_expr, compile_template
from tosengine.runtime.kinds import RuntimeKind, runtime_kind
from tosengine.runtime.matcher import Matcher
from tosengine.runtime.smoke import SmokeRun, smoke_spec
from tosengine.runtime.smoke import smoke_test as run_smoke_test

__all__ = ["CompiledRule", "Program", "fingerprint", "ladder_fingerprint"]


def _shape(x: Any) -> Any:
    """A checked model value as plain data, without source spans: equal when the meaning is equal."""
    if is_dataclass(x) and not isinstance(x, type):
        return [type(x).__name__, *[_shape(getattr(x, f.name)) for f in fields(x) if f.name != "span"]]
    if isinstance(x, tuple | list):
        return [_shape(v) for v in x]
    if isinstance(x, frozenset | set):
        return sorted(_shape(v) for v in x)
    if isinstance(x, timedelta):
        return x.total_seconds()
    return x


def fingerprint(rule: Rule) -> str:
    """What shapes a rule's state: its kind's definition, its key, its subject and its once_per window. A
    rule whose fingerprint is unchanged keeps its state across a reload or a restart; message, severity,
    action and emit may change without losing it (docs/state.md)."""
    blob = json.dumps(
        [rule.id, _shape(rule.body), _shape(rule.key), _shape(rule.subject), _shape(rule.once_per)],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def ladder_fingerprint(ladder: Ladder | None) -> str | None:
    """What shapes the ladder's memory: its window and which policies it counts."""
    if ladder is None:
        return None
    return hashlib.sha256(json.dumps([_shape(ladder.within), _shape(ladder.counts)]).encode()).hexdigest()[:24]


@dataclass(frozen=True)
class CompiledRule:
    """A rule with its expressions compiled to closures: the options every kind shares, the joined
    (cross-item) part of each of its triggers by (role, step), and its kind's own `spec`."""

    index: int
    rule: Rule
    policy: Policy
    kind: RuntimeKind
    key: Fn | None
    subject: Fn | None
    message: Render | None
    emit: tuple[tuple[str, Fn, bool], ...] | None  # (name, value, whether the value reads a sensitive field)
    joined: dict[tuple[str, int], Fn | None]
    spec: Any
    # Whether the key or subject reads a sensitive field: then its value is masked where it is computed,
    # so the state, the facts, the audit log and the output only ever hold the mask.
    mask_key: bool = False
    mask_subject: bool = False


class Program:
    """Checked policies compiled for running: plan, matcher, compiled rules. Close it to free the matcher.

    `smoke_test` is the timeout (seconds) of the load-time check, in a subprocess, that durable_rules
    neither crashes nor hangs on the compiled rulesets; None skips it. `smoke`: that check, already
    started (start_smoke_test), whose verdict is awaited instead. `reuse`: the program this one
    replaces, whose unchanged durable_rules rulesets it takes over.
    """

    def __init__(
        self,
        policies: CheckedPolicySet,
        *,
        smoke_test: float | None = None,
        reuse: Program | None = None,
        smoke: SmokeRun | None = None,
    ) -> None:
        self.policies = policies
        self.plan: Plan = compile_policy_set(policies)
        if smoke is not None:  # started earlier for these policies (Program.start_smoke_test)
            smoke.result()
        elif smoke_test is not None:
            run_smoke_test(smoke_spec(self.plan), smoke_test)
        joined: list[dict[tuple[str, int], Fn | None]] = [{} for _ in policies.rules]
        for t in self.plan.triggers:
            joined[t.rule][(t.role, t.step)] = compile_expr(t.joined) if t.joined is not None else None
        self.rules: list[CompiledRule] = [
            _compile_rule(i, rule, policies.policy(rule.policy), joined[i], policies.sensitive)
            for i, rule in enumerate(policies.rules)
        ]
        # Per trigger: the rest of its condition on the item itself, checked after durable_rules selects it.
        self.local: list[Fn | None] = [
            compile_expr(t.local) if t.local is not None else None for t in self.plan.triggers
        ]
        self.ladder: Ladder | None = policies.ladder
        self.fingerprints = {cr.rule.id: fingerprint(cr.rule) for cr in self.rules}
        # A reload takes over the rulesets that did not change (see Matcher).
        self.matcher: Matcher = Matcher(self.plan, reuse=reuse.matcher if reuse is not None else None)

    @staticmethod
    def start_smoke_test(policies: CheckedPolicySet, timeout: float) -> SmokeRun:
        """Start the smoke test of `policies` now, to run beside other start-up work; hand it to the
        Program built for them (`smoke=`), which waits for its verdict before creating any ruleset."""
        return SmokeRun(smoke_spec(compile_policy_set(policies)), timeout)

    def close(self) -> None:
        """Free the durable_rules rulesets."""
        self.matcher.close()


def _compile_rule(
    index: int,
    rule: Rule,
    policy: Policy,
    joined: dict[tuple[str, int], Fn | None],
    sensitive: tuple[tuple[str, ...], ...],
) -> CompiledRule:
    kind = runtime_kind(rule.kind)

    def reads(e: Expr) -> bool:
        return expr_reads_sensitive(e, sensitive)

    return CompiledRule(
        index=index,
        rule=rule,
        policy=policy,
        kind=kind,
        key=compile_expr(rule.key) if rule.key is not None else None,
        subject=compile_expr(rule.subject) if rule.subject is not None else None,
        message=compile_template(rule.message, reads) if rule.message is not None else None,
        emit=tuple((k, compile_expr(e), reads(e)) for k, e in rule.emit.data) if rule.emit is not None else None,
        joined=joined,
        spec=kind.compile(rule),
        mask_key=rule.key is not None and reads(rule.key),
        mask_subject=rule.subject is not None and reads(rule.subject),
    )
