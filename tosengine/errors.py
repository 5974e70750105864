"""Errors: one base class, one subclass per stage that can fail.

TosEngineError
  PolicyError       policies failed to load or check (with every diagnostic)
  YamlError         a policy or test file is not acceptable YAML (policy/yaml.py)
  ExprSyntaxError   an expression does not parse (policy/expr.py)
  EventError        an event failed validation (naming the field)
  MatcherError      durable_rules failed or refused a compiled ruleset
  AuditError        the audit database cannot be opened, read or written
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tosengine.policy.diagnostics import Diagnostic

__all__ = ["AuditError", "EventError", "MatcherError", "PolicyError", "TosEngineError"]


class TosEngineError(Exception):
    """Base class of every error tosengine raises on purpose."""


class EventError(TosEngineError):
    """An event failed validation; ``field`` names the offending attribute ("" for the whole event)."""

    def __init__(self, field: str, problem: str, *, line: int | None = None) -> None:
        self.field = field
        self.problem = problem
        self.line = line
        where = f"line {line}: " if line is not None else ""
        what = f"field `{field}`: " if field else ""
        super().__init__(f"{where}{what}{problem}")


class PolicyError(TosEngineError):
    """Policies failed to load or check; ``diagnostics`` holds every problem, sorted by location."""

    def __init__(self, diagnostics: Sequence[Diagnostic], message: str = "") -> None:
        self.diagnostics = list(diagnostics)
        lines = [d.render_short() for d in self.diagnostics]
        super().__init__(message or ("\n".join(lines) if lines else "invalid policies"))


class MatcherError(TosEngineError):
    """durable_rules failed, or an action inside it raised; the engine's state may be partial."""


class AuditError(TosEngineError):
    """The audit database could not be opened, read or written; a failed batch is kept for a retry."""
