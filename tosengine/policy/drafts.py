"""Stage check (drafts): what the passes over one policy file fill in, before it is a checked Policy."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from tosengine.policy.diagnostics import Span
from tosengine.policy.expr import Expr
from tosengine.policy.kinds import RuleKind
from tosengine.policy.model import Emit, Ladder, Policy, Rule, RuleBody, Template
from tosengine.policy.sources import Source

__all__ = ["PolicyDraft", "RuleDraft"]


@dataclass
class PolicyDraft:
    """A policy file as the file passes fill it in; `finish` builds the checked Policy."""

    id: str = "?"
    title: str = ""
    clause: str = ""
    clause_ref: str = ""
    severity: str = "medium"
    action: str = "warn"
    key: Expr | None = None
    subject: str | None = None  # the policy-level `subject` as written; each rule checks it with its names
    rules: list[Rule] = field(default_factory=list)
    disabled: list[Rule] = field(default_factory=list)  # `enabled: false`: checked, kept out of the engine
    ladder: Ladder | None = None
    sensitive: tuple[tuple[str, ...], ...] = ()
    mode: str = "enforce"
    tags: tuple[str, ...] = ()

    def finish(self, source: Source) -> Policy:
        """The checked policy (call only when the file's passes reported no error)."""
        return Policy(
            id=self.id,
            title=self.title or self.id,
            clause=self.clause,
            clause_ref=self.clause_ref,
            severity=self.severity,
            action=self.action,
            path=source.path,
            version=source.version,
            rules=tuple(self.rules),
            sensitive=self.sensitive,
            text=source.text,
            ladder=self.ladder,
            mode=self.mode,
            tags=self.tags,
            disabled=tuple(self.disabled),
        )


@dataclass
class RuleDraft:
    """A rule as the option checks fill it in: its kind and body are known, the options are being read."""

    policy: str
    name: str
    kind: RuleKind
    body: RuleBody | None  # None: the kind's own fields did not check (the options are still checked)
    roots: frozenset[str]  # what the options may read
    span: Span
    severity: str
    action: str
    key: Expr | None
    message: Template | None = None
    emit: Emit | None = None
    violation: bool = True
    subject: Expr | None = None
    once_per: timedelta | None = None
    mode: str = "enforce"
    enabled: bool = True
    tags: tuple[str, ...] = ()

    def finish(self) -> Rule | None:
        """The checked rule, or None if its kind's own fields did not check."""
        if self.body is None:
            return None
        return Rule(
            policy=self.policy,
            name=self.name,
            body=self.body,
            severity=self.severity,
            action=self.action,
            key=self.key,
            message=self.message,
            emit=self.emit,
            violation=self.violation,
            span=self.span,
            subject=self.subject,
            once_per=self.once_per,
            mode=self.mode,
            enabled=self.enabled,
            tags=self.tags,
        )
