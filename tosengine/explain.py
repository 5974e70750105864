"""Explain a recorded violation: the rule and its clause, the evidence fields the rule read, the
derived facts in the chain and, for `expect`, the deadline and what would have fulfilled it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from tosengine.audit.models import PolicyVersion, ViolationRow
from tosengine.audit.query import list_repeats, repeat_json, row_json
from tosengine.errors import TosEngineError
from tosengine.policy.check import check_sources
from tosengine.policy.expr import Path, walk
from tosengine.policy.model import Rule, Sequence
from tosengine.policy.sources import Source
from tosengine.policy.yaml import load_yaml
from tosengine.text import printable

__all__ = ["Explanation", "evidence_reads", "explain_violation", "rule_conditions"]


class ExplainError(TosEngineError):
    """The violation (or the policy version it names) is not in the audit log."""


@dataclass(frozen=True)
class Explanation:
    """Everything `explain` shows, as data; `render()` gives the text."""

    violation: dict[str, Any]
    rule_kind: str
    conditions: list[tuple[str, str]]  # (field, expression text as written)
    evidence: list[tuple[dict[str, Any], list[tuple[str, Any]]]]  # (event, [(path, value)])
    facts: list[dict[str, Any]]
    fulfilment: str  # expect: what would have fulfilled the obligation
    repeats: list[dict[str, Any]] = field(default_factory=list)  # what its once_per window suppressed

    def render(self) -> str:
        """The explanation as text for a person."""
        v = self.violation
        out = [
            f"violation {v['id']}  (#{v['seq']} in the audit log)",
            f"rule      {v['rule']}  ({self.rule_kind}; policy version {v['policy_version']})",
            f"subject   {v['subject']}",
            f"time      {v['time']}  (recorded {v['recorded_at']})",
            f"severity  {v['severity']}   action {v['action']}"
            + (f"   (escalation ladder step {v['detail']['ladder_step']})" if v["detail"].get("ladder_step") else ""),
            f"message   {v['message']}",
            f'clause    "{v["clause"]}"',
            "",
            "why:",
        ]
        width = max((len(k) for k, _ in self.conditions), default=0)
        out += [f"  {k + ':':{width + 1}} {text}" for k, text in self.conditions]
        if self.fulfilment:
            out += ["", *self.fulfilment.splitlines()]
        out += ["", "evidence:"]
        for ev, fields in self.evidence:
            out.append(f"  {ev.get('id')}  {ev.get('type')}  {ev.get('time')}  {ev.get('subject')}")
            for path, value in fields:
                out.append(f"      {path} = {json.dumps(value, ensure_ascii=False)}")
        for r in self.repeats:
            out += [
                "",
                f"and {r['count']} more time(s) between {r['first']} and {r['last']} (repeat record "
                f"{r['id']}, window closed {r['time']}): evidence {', '.join(r['evidence'])}",
            ]
        if self.facts:
            out += ["", "derived facts in the chain:"]
            for f in self.facts:
                data = f" data={json.dumps(f['data'], ensure_ascii=False)}" if f.get("data") else ""
                out.append(f"  {f['type']} from {f['rule']} about {f['subject']} at {f['time']}{data}  ({f['id']})")
        return "\n".join(printable(line) for line in out)


def _reads(rule: Rule) -> dict[str, set[tuple[str, ...]]]:
    """The paths each root (event, after, a step name) is read at by the rule's conditions and key."""
    # What decided the match: the kind's conditions and the key (not what the message or emit print).
    exprs = [c.expr for c in rule.conditions() if c.role not in ("message", "emit")]
    out: dict[str, set[tuple[str, ...]]] = {}
    for e in exprs:
        for p in walk(e):
            if isinstance(p, Path) and p.parts:
                out.setdefault(p.root, set()).add(p.parts)
    return out


def _value(obj: Any, parts: tuple[str, ...]) -> Any:
    for part in parts:
        if not isinstance(obj, dict) or part not in obj:
            return "<absent>"
        obj = obj[part]
    return obj


def _raw_rule(policy_text: str, name: str) -> dict[str, Any]:
    """The rule as the author wrote it in the policy file (empty if the file has no such rule)."""
    raw_policy = load_yaml(policy_text).value or {}
    rules = raw_policy.get("rules", []) if isinstance(raw_policy, dict) else []
    return next((r for r in rules if isinstance(r, dict) and r.get("id") == name), {})


def rule_conditions(policy_text: str, name: str, kind: str) -> list[tuple[str, str]]:
    """What decided a rule's match, as the author wrote it: its kind's conditions, its key, and the macros
    they use, as (field, text) pairs."""
    raw_policy = load_yaml(policy_text).value or {}
    raw_rule = _raw_rule(policy_text, name)
    conditions: list[tuple[str, str]] = []
    body = raw_rule.get(kind, {})
    if kind == "match":
        conditions.append(("match", str(body)))
    elif kind == "sequence":
        conditions += [(f"step {k}", str(c)) for st in body for k, c in st.items()]
        if "within" in raw_rule:
            conditions.append(("within", str(raw_rule["within"])))
    elif isinstance(body, dict):
        conditions += [(k, " ".join(str(c).split())) for k, c in body.items()]
    if "key" in raw_rule:
        conditions.append(("key", str(raw_rule["key"])))
    # Name the macros the conditions use, so the reader sees what `strike` means.
    macros = raw_policy.get("macros") or {}
    used = " ".join(text for _, text in conditions)
    conditions += [
        (f"macro {m}", " ".join(str(t).split())) for m, t in macros.items() if re.search(rf"\b{re.escape(m)}\b", used)
    ]
    return conditions


def evidence_reads(
    rule: Rule | None, evidence_events: list[dict[str, Any]]
) -> list[tuple[dict[str, Any], list[tuple[str, Any]]]]:
    """Each evidence event with the fields the rule's conditions read from it, and their values (as the
    events are given: masked ones stay masked)."""
    reads = _reads(rule) if rule is not None else {}
    # Which root names each evidence event: sequences bind steps in order, expect binds `after`.
    roots_of: list[set[str]] = [{"event"} for _ in evidence_events]
    if rule is not None and isinstance(rule.body, Sequence) and len(evidence_events) == len(rule.body.steps):
        roots_of = [{"event", s.name} for s in rule.body.steps]
    if rule is not None and rule.kind == "expect":
        roots_of = [{"event", "after"} for _ in evidence_events]
    out = []
    for ev, roots in zip(evidence_events, roots_of, strict=True):
        paths = sorted({p for r in roots for p in reads.get(r, set())})
        out.append((ev, [(".".join(p), _value(ev, p)) for p in paths]))
    return out


def explain_violation(engine: Engine, violation_id: str) -> Explanation:
    """Build the explanation of one violation from the audit log at `engine`."""
    with Session(engine) as s:
        row = s.scalars(select(ViolationRow).where(ViolationRow.id == violation_id)).first()
        if row is None:
            raise ExplainError(f"no violation {violation_id} in the audit log")
        v = row_json(row)
        evidence_events: list[dict[str, Any]] = json.loads(row.evidence_events)
        pv = s.scalars(
            select(PolicyVersion).where(PolicyVersion.policy == row.policy, PolicyVersion.version == row.policy_version)
        ).first()
    if pv is None:
        raise ExplainError(f"policy version {v['policy_version']} of {v['policy']} is not in the audit log")
    checked, _ = check_sources([Source(pv.path, pv.text)])
    name = v["rule"].split("/", 1)[1]
    rule = next((r for r in (*checked.rules, *checked.disabled) if r.name == name), None) if checked else None
    kind = rule.kind if rule is not None else "?"
    conditions = rule_conditions(pv.text, name, kind)
    evidence = evidence_reads(rule, evidence_events)
    reads = _reads(rule) if rule is not None else {}
    raw_rule = _raw_rule(pv.text, name)
    body = raw_rule.get(kind, {})
    fulfilment = ""
    if kind == "expect" and isinstance(body, dict):
        after = evidence_events[0] if evidence_events else {}
        bound = sorted(p for p in reads.get("after", set()))
        values = ", ".join(f"after.{'.'.join(p)} = {json.dumps(_value(after, p), ensure_ascii=False)}" for p in bound)
        fulfilment = (
            f"deadline {v['detail'].get('deadline')} passed with no fulfilling item: one with key "
            f"{v['subject']}, later than {after.get('id')}, at or before the deadline, where\n"
            f"  {' '.join(str(body.get('fulfilled_by')).split())}" + (f"\n  with {values}" if values else "")
        )
    repeats = [repeat_json(r) for r in list_repeats(engine, repeat_of=violation_id)]
    return Explanation(v, kind, conditions, evidence, list(v["detail"].get("facts", [])), fulfilment, repeats)
