"""Stage decide (output): the Violation record and its deterministic id."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["Violation", "format_time", "violation_id"]


def format_time(t: datetime) -> str:
    """An instant as RFC 3339 in UTC with `Z` (microseconds only when present)."""
    t = t.astimezone(UTC)
    text = t.strftime("%Y-%m-%dT%H:%M:%S")
    if t.microsecond:
        text += f".{t.microsecond:06d}".rstrip("0")
    return text + "Z"


def violation_id(kind: str, rule: str, key: str, evidence: tuple[str, ...], causes: tuple[str, ...]) -> str:
    """sha256 over a canonical JSON of what identifies a match: replays give the same id."""
    blob = json.dumps([kind, rule, key, list(evidence), list(causes)], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass(frozen=True)
class Violation:
    """One violation: which rule, against whom (`subject`, the rule's key), when, and on what evidence."""

    id: str
    policy: str
    rule: str  # the full id, policy/rule
    subject: str
    severity: str
    action: str
    time: datetime
    evidence: tuple[str, ...]  # event ids, in stream order
    message: str = ""
    clause: str = ""
    policy_version: str = ""
    causes: tuple[str, ...] = ()  # ids of the facts this rule matched (forward chaining)
    kind: str = "match"  # match | threshold | sequence | expect
    deadline: datetime | None = None  # expect rules: when the obligation lapsed
    facts: tuple[dict[str, Any], ...] = field(default=(), compare=False, repr=False)  # the derived facts behind it
    ladder_step: int = 0  # the subject's step on the escalation ladder when this was recorded (0: no ladder)
    evidence_events: tuple[dict[str, Any], ...] = field(default=(), compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        """The violation as DESIGN.md section 4 prints it (`--format json`)."""
        return {
            "id": self.id,
            "policy": self.policy,
            "rule": self.rule,
            "subject": self.subject,
            "key": self.subject,
            "severity": self.severity,
            "action": self.action,
            "time": format_time(self.time),
            "evidence": list(self.evidence),
            "message": self.message,
            "clause": self.clause,
            "policy_version": self.policy_version,
            "causes": list(self.causes),
            "ladder_step": self.ladder_step,
        }
