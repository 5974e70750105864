"""The checked policy model: what `check` proves and `compile` and the runtime consume."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

from tosengine.policy.diagnostics import Span
from tosengine.policy.expr import Expr

__all__ = [
    "ACTIONS",
    "SEVERITIES",
    "CheckedPolicySet",
    "Emit",
    "Expect",
    "ItemKind",
    "Ladder",
    "Policy",
    "Rule",
    "Sequence",
    "Step",
    "Template",
    "Threshold",
]

SEVERITIES = ("low", "medium", "high", "critical")
ACTIONS = ("none", "warn", "restrict", "disable", "permanent_ban", "legal_referral")
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
class Threshold:
    """Count (or distinct count) of matching items in the sliding window [t - within, t]."""

    match: Expr
    kind: ItemKind
    count: int
    within: timedelta
    distinct: Expr | None


@dataclass(frozen=True)
class Step:
    """One step of a sequence; `refs` are the earlier steps its condition names."""

    name: str
    match: Expr
    kind: ItemKind
    span: Span


@dataclass(frozen=True)
class Sequence:
    """Ordered, correlated items, optionally bounded by `within` (last time - first time)."""

    steps: tuple[Step, ...]
    within: timedelta | None


@dataclass(frozen=True)
class Expect:
    """An obligation: after `after`, an item satisfying `fulfilled_by` must come by the deadline."""

    after: Expr
    after_kind: ItemKind
    fulfilled_by: Expr
    fulfil_kind: ItemKind
    within: Expr  # a duration: a literal, or computed from `after`


@dataclass(frozen=True)
class Rule:
    """One rule; `id` is the full `policy/rule` id used everywhere."""

    policy: str
    name: str
    kind: Literal["match", "threshold", "sequence", "expect"]
    severity: str
    action: str
    key: Expr | None  # None: the subject of what the rule matched
    message: Template | None
    emit: Emit | None
    violation: bool
    span: Span
    match: Expr | None = None
    match_kind: ItemKind = "event"
    threshold: Threshold | None = None
    sequence: Sequence | None = None
    expect: Expect | None = None

    @property
    def id(self) -> str:
        """`policy/rule`."""
        return f"{self.policy}/{self.name}"


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
