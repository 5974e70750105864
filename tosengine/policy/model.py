"""The checked policy model: what `check` proves and `compile` and the runtime consume."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import ClassVar, Literal

from tosengine.policy.diagnostics import Span
from tosengine.policy.expr import Expr

__all__ = [
    "ACTIONS",
    "MODES",
    "SEVERITIES",
    "TRIGGER_ROLES",
    "CheckedPolicySet",
    "Condition",
    "Emit",
    "Expect",
    "ItemKind",
    "Ladder",
    "Match",
    "Policy",
    "Rule",
    "RuleBody",
    "Sequence",
    "Step",
    "Template",
    "Threshold",
]

SEVERITIES = ("low", "medium", "high", "critical")
ACTIONS = ("none", "warn", "restrict", "disable", "permanent_ban", "legal_referral")
# enforce: violations are acted on and climb the ladder; shadow: recorded as such, acted on by no one.
MODES = ("enforce", "shadow")
ItemKind = Literal["event", "fact"]


@dataclass(frozen=True)
class Template:
    """A message template: literal text and `{expression}` placeholders, in order."""

    parts: tuple[str | Expr, ...]


@dataclass(frozen=True)
class Emit:
    """`emit: {fact: name, data: {...}}`: a derived fact."""

    fact: str
    data: tuple[tuple[str, Expr], ...]


@dataclass(frozen=True)
class Condition:
    """One expression a rule holds: where it sits (`role`, `step`), what it matches, what it binds.

    Every pass that looks inside rules (compile, fact cycles, event schemas, explain) walks these,
    so a new rule kind is seen by all of them through its `conditions()`.

    role: `match`, `threshold`, `step`, `after`, `fulfil` (triggers: matched against each item of
    kind `item`), or `distinct`, `within`, `key`, `subject`, `message`, `emit` (values computed from
    items already matched). `binds` are the other roots the expression reads, with the conditions that
    bind them (a sequence's earlier steps, an expect's `after`).
    """

    role: str
    expr: Expr
    item: ItemKind
    step: int = 0
    binds: tuple[tuple[str, Expr], ...] = ()

    @property
    def trigger(self) -> bool:
        """Whether the condition is matched against items (and so compiled to a trigger)."""
        return self.role in TRIGGER_ROLES


TRIGGER_ROLES = frozenset({"match", "threshold", "step", "after", "fulfil"})


@dataclass(frozen=True)
class Match:
    """A single-item rule: every matching item is a violation."""

    KIND: ClassVar[str] = "match"
    match: Expr
    item: ItemKind

    def conditions(self) -> tuple[Condition, ...]:
        """The rule's one trigger."""
        return (Condition("match", self.match, self.item),)


@dataclass(frozen=True)
class Threshold:
    """Count (or distinct count) of matching items in the sliding window [t - within, t]."""

    KIND: ClassVar[str] = "threshold"
    match: Expr
    item: ItemKind
    count: int
    within: timedelta
    distinct: Expr | None

    def conditions(self) -> tuple[Condition, ...]:
        """The trigger, and the `distinct` value read from each matching item."""
        out = [Condition("threshold", self.match, self.item)]
        if self.distinct is not None:
            out.append(Condition("distinct", self.distinct, self.item, binds=((self.item, self.match),)))
        return tuple(out)


@dataclass(frozen=True)
class Step:
    """One step of a sequence."""

    name: str
    match: Expr
    item: ItemKind
    span: Span


@dataclass(frozen=True)
class Sequence:
    """Ordered, correlated items, optionally bounded by `within` (last time - first time)."""

    KIND: ClassVar[str] = "sequence"
    steps: tuple[Step, ...]
    within: timedelta | None

    def conditions(self) -> tuple[Condition, ...]:
        """One trigger per step, each binding the steps before it."""
        out: list[Condition] = []
        for i, s in enumerate(self.steps):
            binds = tuple((p.name, p.match) for p in self.steps[:i])
            out.append(Condition("step", s.match, s.item, i, binds))
        return tuple(out)


@dataclass(frozen=True)
class Expect:
    """An obligation: after `after`, an item satisfying `fulfilled_by` must come by the deadline."""

    KIND: ClassVar[str] = "expect"
    after: Expr
    after_item: ItemKind
    fulfilled_by: Expr
    fulfil_item: ItemKind
    within: Expr  # a duration: a literal, or computed from `after`

    def conditions(self) -> tuple[Condition, ...]:
        """The `after` and `fulfilled_by` triggers, and the deadline's `within` (reads `after`)."""
        bound = (("after", self.after),)
        return (
            Condition("after", self.after, self.after_item),
            Condition("fulfil", self.fulfilled_by, self.fulfil_item, binds=bound),
            Condition("within", self.within, self.after_item, binds=bound),
        )


# What a rule does, one type per kind; `KIND` names the kind in tosengine.policy.kinds.KINDS.
RuleBody = Match | Threshold | Sequence | Expect


@dataclass(frozen=True)
class Rule:
    """One rule: its kind's body, and the options every kind shares. `id` is `policy/rule`."""

    policy: str
    name: str
    body: RuleBody
    severity: str
    action: str
    key: Expr | None  # None: the subject of what the rule matched
    message: Template | None
    emit: Emit | None
    violation: bool
    span: Span
    subject: Expr | None = None  # who the violation is against; None: the key's value
    once_per: timedelta | None = None  # one violation per (key, subject) per this long; the rest are repeats
    # Shadow: its violations are recorded with mode=shadow, never climb the ladder, and are facts only for
    # other shadow rules (the rule's own `mode`, else its policy's).
    mode: str = "enforce"
    enabled: bool = True  # false: checked, listed, but kept out of the engine (Policy.disabled)
    tags: tuple[str, ...] = ()  # the policy's tags, then the rule's own: what --tag filters select

    @property
    def id(self) -> str:
        """`policy/rule`."""
        return f"{self.policy}/{self.name}"

    @property
    def kind(self) -> str:
        """The rule kind's name: match, threshold, sequence or expect."""
        return self.body.KIND

    def conditions(self) -> tuple[Condition, ...]:
        """Every expression of the rule: its kind's conditions, then the key, message parts and emit data,
        each read against the item that completed the rule (bound as `event`/`fact` or its step name)."""
        out = list(self.body.conditions())
        item = out[-1].item if out else "event"
        if self.key is not None:
            out.append(Condition("key", self.key, item))
        if self.subject is not None:
            out.append(Condition("subject", self.subject, item))
        if self.message is not None:
            out += [Condition("message", p, item) for p in self.message.parts if not isinstance(p, str)]
        if self.emit is not None:
            out += [Condition("emit", e, item) for _, e in self.emit.data]
        return tuple(out)


@dataclass(frozen=True)
class Ladder:
    """Escalation: a subject's n-th counted violation within `within` is recorded at least at steps[n-1]."""

    policy: str
    within: timedelta
    steps: tuple[str, ...]
    counts: frozenset[str] | None  # policy ids whose violations climb the ladder; None: every policy
    span: Span


@dataclass(frozen=True)
class Policy:
    """One policy file, checked."""

    id: str
    title: str
    clause: str
    clause_ref: str
    severity: str
    action: str
    path: str
    version: str
    rules: tuple[Rule, ...]
    # Event paths (`data.password`) the audit log must never store in clear: it stores a salted hash.
    sensitive: tuple[tuple[str, ...], ...] = ()
    text: str = field(default="", repr=False, compare=False)  # the file as read: what `version` hashes
    ladder: Ladder | None = None
    mode: str = "enforce"  # the default of its rules
    tags: tuple[str, ...] = ()
    # Rules with `enabled: false`: checked like the others, but not in `rules`, so no engine runs them.
    disabled: tuple[Rule, ...] = ()


@dataclass(frozen=True)
class CheckedPolicySet:
    """Policies that passed every check; rules are in a deterministic order (file path, then file order)."""

    policies: tuple[Policy, ...]
    warnings: tuple[object, ...] = field(default=())

    @property
    def rules(self) -> tuple[Rule, ...]:
        """All rules of all policies, in order."""
        return tuple(r for p in self.policies for r in p.rules)

    @property
    def disabled(self) -> tuple[Rule, ...]:
        """The rules kept out of the engine (`enabled: false`), in order."""
        return tuple(r for p in self.policies for r in p.disabled)

    @property
    def ladder(self) -> Ladder | None:
        """The escalation ladder, if a policy declares one (check allows at most one)."""
        return next((p.ladder for p in self.policies if p.ladder is not None), None)

    @property
    def sensitive(self) -> tuple[tuple[str, ...], ...]:
        """Every path any policy declares sensitive (masking applies to every stored event)."""
        return tuple(sorted({p for pol in self.policies for p in pol.sensitive}))

    def policy(self, policy_id: str) -> Policy:
        """The policy with this id."""
        for p in self.policies:
            if p.id == policy_id:
                return p
        raise KeyError(policy_id)
