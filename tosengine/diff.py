"""What a policy change would change: the same events through two policy sets -> a DiffReport.

Both sides replay the events exactly as `tosengine replay --dry-run` does (the same line reader, the
same Ingest, the same Engine options), in lockstep, so the report agrees with two dry-run replays.
Violation ids are deterministic (rule, key, evidence, causes), so a violation is *in both* when its id
is on both sides, *added* or *removed* when on one side only, and *changed* when it is in both with
another action or severity. Repeat records (once_per windows) are counted per rule beside the
violations, not among them. Samples per cell carry why they fired: the rule's conditions as written and
the fields of the evidence they read (sensitive fields masked).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from tosengine.errors import EventError
from tosengine.events import parse_time
from tosengine.explain import evidence_reads, rule_conditions
from tosengine.ingest import Ingest
from tosengine.lines import Line
from tosengine.masking import Masker
from tosengine.policy.model import CheckedPolicySet, Rule
from tosengine.runtime.engine import SMOKE_TEST_TIMEOUT, Engine, ruleset_hash
from tosengine.runtime.matcher import BATCH
from tosengine.violation import Repeat, Violation, format_time

__all__ = ["CELLS", "DiffReport", "RuleDiff", "Side", "SubjectDiff", "diff_replays"]

# The cells of a rule's row, in the order reports show them.
CELLS = ("base", "candidate", "both", "added", "removed", "changed")
# A sample shows the fields its rule read from this many of its evidence events (a threshold has many).
READ_EVENTS = 3


@dataclass(frozen=True)
class Side:
    """One side of a diff: a name for people (a directory, or git:REV:PATH) and its checked policies."""

    label: str
    policies: CheckedPolicySet

    @property
    def ruleset(self) -> str:
        """The ruleset hash (runtime/engine.py: `ruleset_hash`), as `serve` names its policies too."""
        return ruleset_hash(self.policies)

    def describe(self) -> dict[str, Any]:
        """The side as the report header shows it."""
        return {
            "label": self.label,
            "ruleset": self.ruleset,
            "policies": len(self.policies.policies),
            "rules": len(self.policies.rules),
        }


@dataclass
class RuleDiff:
    """One rule's row: the counts of each cell, its repeat records on each side, and samples."""

    rule: str
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CELLS, 0))
    repeats: dict[str, int] = field(default_factory=lambda: {"base": 0, "candidate": 0})
    in_base: bool = False  # the rule exists (enabled) on that side
    in_candidate: bool = False
    modes: dict[str, str | None] = field(default_factory=lambda: {"base": None, "candidate": None})
    samples: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {"added": [], "removed": [], "changed": []}
    )

    @property
    def differs(self) -> bool:
        """Whether anything of this rule differs between the sides."""
        c = self.counts
        return bool(c["added"] or c["removed"] or c["changed"]) or self.repeats["base"] != self.repeats["candidate"]

    def to_json(self) -> dict[str, Any]:
        """The row as `diff --format json` prints it."""
        return {
            **self.counts,
            "repeats": self.repeats,
            "in_base": self.in_base,
            "in_candidate": self.in_candidate,
            "modes": self.modes,
            "samples": self.samples,
        }


@dataclass
class SubjectDiff:
    """One subject's counts over all rules."""

    subject: str
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CELLS, 0))


@dataclass
class DiffReport:
    """Everything `diff` reports, as data; cli/diff.py renders it as a table, JSON or Markdown."""

    base: dict[str, Any]
    candidate: dict[str, Any]
    events: int
    rejected: int
    first: datetime | None
    last: datetime | None
    until: datetime | None
    rules: dict[str, RuleDiff]
    subjects: dict[str, SubjectDiff]

    @property
    def totals(self) -> dict[str, int]:
        """Each cell summed over the rules."""
        return {c: sum(r.counts[c] for r in self.rules.values()) for c in CELLS}

    def to_json(self) -> dict[str, Any]:
        """The report as one JSON document: header, totals, per rule, per subject."""
        return {
            "base": self.base,
            "candidate": self.candidate,
            "events": self.events,
            "rejected": self.rejected,
            "first": format_time(self.first) if self.first else None,
            "last": format_time(self.last) if self.last else None,
            "until": format_time(self.until) if self.until else None,
            "totals": self.totals,
            "rules": {rid: r.to_json() for rid, r in sorted(self.rules.items())},
            "subjects": {s: d.counts for s, d in sorted(self.subjects.items())},
        }


class _Replay:
    """One side's replay: an Engine and an Ingest set up as `replay --dry-run` sets them up, collecting
    violations by id and repeat records."""

    def __init__(self, side: Side, rejected: Callable[[str, int, str, EventError], None] | None) -> None:
        self.side = side
        self.engine = Engine(side.policies, smoke_test=SMOKE_TEST_TIMEOUT)
        self.violations: dict[str, Violation] = {}
        self.repeats: list[Repeat] = []
        self.ingest = Ingest(self.engine, acknowledge=self._take, rejected=rejected, batch_size=BATCH, ack_every=0)

    def _take(self, violations: list[Violation], repeats: list[Repeat]) -> None:
        for v in violations:
            self.violations.setdefault(v.id, v)  # one id is one violation, as the audit log keeps it
        self.repeats += repeats

    def feed(self, line: Line) -> None:
        name, n, raw, too_long = line
        if too_long:
            error = EventError("", f"line longer than {self.engine.max_event_size} bytes")
            self.ingest.reject(name, n, raw[:1000].decode("utf-8", "backslashreplace") + "...", error)
        else:
            self.ingest.add(name, n, raw)


def _event_time(raw: bytes) -> datetime | None:
    try:
        doc = orjson.loads(raw)
        return parse_time(doc["time"]) if isinstance(doc, dict) and isinstance(doc.get("time"), str) else None
    except (orjson.JSONDecodeError, ValueError):
        return None


class _Explainer:
    """Samples of a side's violations with why they fired, evidence masked as the audit log masks it."""

    def __init__(self, side: Side) -> None:
        self.rules: dict[str, Rule] = {r.id: r for r in side.policies.rules}
        self.texts = {p.id: p.text for p in side.policies.policies}
        # A salt of this run's: a masked value shows which evidence values are equal, never the value.
        self.masker = Masker(secrets.token_bytes(16), side.policies.sensitive)

    def sample(self, v: Violation, other: Violation | None = None) -> dict[str, Any]:
        rule = self.rules.get(v.rule)
        name = v.rule.split("/", 1)[1]
        events = [self.masker.event(e) for e in v.evidence_events]
        out: dict[str, Any] = {
            "id": v.id,
            "subject": v.subject,
            "time": format_time(v.time),
            "severity": v.severity,
            "action": v.action,
            "message": v.message,
            "evidence": list(v.evidence),
            "why": {
                "conditions": [list(c) for c in rule_conditions(self.texts.get(v.policy, ""), name, v.kind)],
                "read": [
                    {"event": ev.get("id"), "fields": {p: val for p, val in fields}}
                    for ev, fields in evidence_reads(rule, events)[:READ_EVENTS]
                ],
            },
        }
        if len(events) > READ_EVENTS:
            out["why"]["more_events"] = len(events) - READ_EVENTS
        if other is not None:  # a changed violation: what the base recorded
            out["base"] = {"severity": other.severity, "action": other.action}
        return out


def diff_replays(
    base: Side,
    candidate: Side,
    lines: Iterable[Line],
    *,
    until: datetime | None = None,
    samples: int = 3,
    tags: Iterable[str] = (),
    rejected: Callable[[str, int, str, EventError], None] | None = None,
) -> DiffReport:
    """Replay `lines` (JSON Lines, as `read_lines` yields them) through both sides and compare.

    `tags`: only rules carrying one of them (on either side) are reported. `rejected` is told of each bad
    line once (both sides reject the same lines)."""
    refused: set[tuple[str, int]] = set()  # the lines of the current batch that were rejected

    def on_reject(origin: str, number: int, text: str, exc: EventError) -> None:
        refused.add((origin, number))
        if rejected is not None:
            rejected(origin, number, text, exc)

    sides = (_Replay(base, on_reject), _Replay(candidate, None))
    first: datetime | None = None
    buffer: list[Line] = []

    def run_batch() -> None:
        # Both sides take the same lines in the same batches; then the batch's rejections are known, so
        # the time span counts the accepted events only.
        nonlocal first
        refused.clear()
        for s in sides:
            for line in buffer:
                s.feed(line)
            s.ingest.run_batch()
        for name, n, raw, too_long in buffer:
            if not too_long and (name, n) not in refused and (t := _event_time(raw)) is not None:
                first = t if first is None or t < first else first
        buffer.clear()

    try:
        with sides[0].engine, sides[1].engine:
            for line in lines:
                buffer.append(line)
                if len(buffer) >= BATCH:
                    run_batch()
            run_batch()
            for s in sides:
                s.ingest.finish(until)
            last = sides[0].engine.clock
    finally:
        for s in sides:
            s.engine.close()
    if first is not None and last is not None and first > last:
        first = last
    report = DiffReport(
        base.describe(),
        candidate.describe(),
        sides[0].ingest.accepted,
        sides[0].ingest.rejected,
        first if sides[0].ingest.accepted else None,
        last,
        until,
        {},
        {},
    )
    _compare(report, sides[0], sides[1], samples, set(tags))
    return report


def _compare(report: DiffReport, b: _Replay, c: _Replay, samples: int, tags: set[str]) -> None:
    wanted = None
    if tags:
        wanted = {r.id for s in (b, c) for r in s.side.policies.rules if set(r.tags) & tags}
    explain_b, explain_c = _Explainer(b.side), _Explainer(c.side)

    def row(rule: str) -> RuleDiff | None:
        if wanted is not None and rule not in wanted:
            return None
        if rule not in report.rules:
            report.rules[rule] = RuleDiff(rule)
        return report.rules[rule]

    def count(v: Violation, cell: str) -> None:
        r = row(v.rule)
        if r is None:
            return
        r.counts[cell] += 1
        subj = report.subjects.setdefault(v.subject, SubjectDiff(v.subject))
        subj.counts[cell] += 1

    for rule in (*b.side.policies.rules, *c.side.policies.rules):
        row(rule.id)
    for rid, r in report.rules.items():
        r.in_base = rid in explain_b.rules
        r.in_candidate = rid in explain_c.rules
        r.modes = {
            "base": explain_b.rules[rid].mode if r.in_base else None,
            "candidate": explain_c.rules[rid].mode if r.in_candidate else None,
        }
    # Time order, then id: samples and counts do not depend on the order the engines reported in.
    for v in sorted(b.violations.values(), key=lambda v: (v.time, v.id)):
        count(v, "base")
        other = c.violations.get(v.id)
        if other is None:
            count(v, "removed")
            _sample(report, "removed", samples, explain_b, v)
            continue
        count(v, "both")
        if (other.action, other.severity) != (v.action, v.severity):
            count(other, "changed")
            _sample(report, "changed", samples, explain_c, other, v)
    for v in sorted(c.violations.values(), key=lambda v: (v.time, v.id)):
        count(v, "candidate")
        if v.id not in b.violations:
            count(v, "added")
            _sample(report, "added", samples, explain_c, v)
    for side, name in ((b, "base"), (c, "candidate")):
        for rep in side.repeats:
            rd = row(rep.rule)
            if rd is not None:
                rd.repeats[name] += 1


def _sample(
    report: DiffReport, cell: str, limit: int, explainer: _Explainer, v: Violation, base: Violation | None = None
) -> None:
    r = report.rules.get(v.rule)
    if r is not None and len(r.samples[cell]) < limit:
        r.samples[cell].append(explainer.sample(v, base))
