"""Stage decide (output): the Violation record and its deterministic id."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["Repeat", "RuleFailure", "Violation", "evidence_key", "format_time", "repeat_id", "violation_id"]


def format_time(t: datetime) -> str:
    """An instant as RFC 3339 in UTC with `Z` (microseconds only when present)."""
    t = t.astimezone(UTC)
    text = t.strftime("%Y-%m-%dT%H:%M:%S")
    if t.microsecond:
        text += f".{t.microsecond:06d}".rstrip("0")
    return text + "Z"


def evidence_key(source: str, ident: str) -> str | list[str]:
    """An evidence event as violation ids hash it: its (source, id), written as the bare id when the
    source is empty (so ids of violations over events without a source are what they always were)."""
    return [source, ident] if source else ident


# json.dumps with these options builds an encoder on every call; the ids are hashed per firing. The
# encoder holds no state between calls.
_ID_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def violation_id(kind: str, rule: str, key: str, evidence: list[str | list[str]], causes: tuple[str, ...]) -> str:
    """sha256 over a canonical JSON of what identifies a match (evidence as `evidence_key` gives it):
    replays give the same id; one id from two sources is two events, so two violations."""
    blob = _ID_JSON.encode([kind, rule, key, evidence, list(causes)])
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def repeat_id(repeat_of: str, end: datetime) -> str:
    """The id of the repeat record of a violation's once_per window that closed at `end`."""
    blob = json.dumps(["repeat", repeat_of, format_time(end)], separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class Violation:
    """One violation: which rule, against whom (`subject`, the rule's key), when, and on what evidence."""

    id: str
    policy: str
    rule: str  # the full id, policy/rule
    subject: str  # who the violation is against (the rule's `subject`, else its key)
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
    key: str = ""  # the partition key the rule's state is kept under ("" means the subject)
    evidence_sources: tuple[str, ...] = ()  # the source of each evidence event, in the same order
    once_per: timedelta | None = None  # the rule's window: a repeat record may follow this violation
    # "shadow": a shadow rule's violation (policy/model.py, Rule.mode): recorded, acted on by no one.
    mode: str = "enforce"

    def to_json(self) -> dict[str, Any]:
        """The violation as DESIGN.md section 4 prints it (`--format json`)."""
        return {
            "id": self.id,
            "policy": self.policy,
            "rule": self.rule,
            "subject": self.subject,
            "key": self.key or self.subject,
            "severity": self.severity,
            "action": self.action,
            "time": format_time(self.time),
            "evidence": list(self.evidence),
            "evidence_sources": list(self.evidence_sources or ("",) * len(self.evidence)),
            "message": self.message,
            "clause": self.clause,
            "policy_version": self.policy_version,
            "causes": list(self.causes),
            "ladder_step": self.ladder_step,
            "mode": self.mode,
        }


@dataclass(frozen=True)
class Repeat:
    """What a once_per window suppressed after the violation `repeat_of`: `count` further matches of the
    rule for the same (key, subject) between `first` and `last`, recorded when the window closed at
    `time`. `evidence` is the event at which each suppressed match happened, in the order they happened."""

    id: str
    repeat_of: str
    policy: str
    rule: str
    subject: str
    key: str
    count: int
    time: datetime  # when the window closed: the violation's time + once_per
    first: datetime  # the first and the last suppressed match
    last: datetime
    evidence: tuple[str, ...]
    evidence_sources: tuple[str, ...] = ()
    evidence_events: tuple[dict[str, Any], ...] = field(default=(), compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        """The repeat record as `replay --format json` prints it (a line with `repeat_of`)."""
        return {
            "id": self.id,
            "repeat_of": self.repeat_of,
            "policy": self.policy,
            "rule": self.rule,
            "subject": self.subject,
            "key": self.key,
            "count": self.count,
            "time": format_time(self.time),
            "first": format_time(self.first),
            "last": format_time(self.last),
            "evidence": list(self.evidence),
            "evidence_sources": list(self.evidence_sources),
        }


@dataclass(frozen=True)
class RuleFailure:
    """An error raised while one rule judged one item (an evaluation error): the rule, the event behind
    the item, and what failed. The other rules judged the item as usual; the audit log records it once."""

    rule: str
    source: str
    event_id: str
    error: str
