"""The reference evaluator against every conformance case of ../shared/conformance (DESIGN.md semantics)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.support import CONFORMANCE, PENDING
from tosengine.cases import load_behaviour_case
from tosengine.errors import EventError
from tosengine.event_model import Event, parse_event_line, validate_event
from tosengine.events import parse_time
from tosengine.policy.check import check_sources
from tosengine.policy.sources import Source
from tosengine.runtime.reference import evaluate_records
from tosengine.violation import Violation

CASES = CONFORMANCE / "cases"
if not CASES.is_dir():
    pytest.skip(
        f"conformance cases not found at {CASES} (the shared folder sits beside the repo, or "
        "TOSENGINE_CONFORMANCE names it)",
        allow_module_level=True,
    )

Ident = tuple[str, str, str, tuple[str, ...]]


def accepted(raw: list[Any]) -> list[Event]:
    """The events that pass validation; the rest are rejected and never reach a rule."""
    out: list[Event] = []
    for i, x in enumerate(raw):
        try:
            line = i + 1
            out.append(parse_event_line(x, line=line) if isinstance(x, str) else validate_event(x, line=line))
        except EventError:
            continue
    return out


def ident(policy: str, rule: str, subject: str, evidence: Any) -> Ident:
    """What a violation is compared on: policy, the rule id after the last `/`, subject, sorted evidence."""
    return policy, rule.split("/")[-1], subject, tuple(sorted(evidence or []))


def got_ident(v: Violation) -> Ident:
    return ident(v.policy, v.rule, v.subject, v.evidence)


def want_ident(w: dict[str, Any]) -> Ident:
    return ident(w["policy"], str(w["rule"]), w["subject"], w.get("evidence"))


def _params() -> list[object]:
    out: list[object] = []
    for path in sorted(CASES.rglob("*.yaml")):
        name = f"{path.parent.name}/{path.stem}"
        reason = PENDING.get(name)
        out.append(pytest.param(path, id=name, marks=[pytest.mark.xfail(reason=reason, strict=True)] if reason else []))
    return out


@pytest.mark.parametrize("path", _params())
def test_conformance_case(path: Path) -> None:
    case = load_behaviour_case(path)
    raw, want = case.events, case.expect
    assert case.policies is not None
    # Sorted by name as read_sources sorts files, so rule order is the one the CLI would use.
    sources = [Source(name, text) for name, text in sorted(case.policies.items())]
    checked, diags = check_sources(sources)
    assert checked is not None, [str(d) for d in diags]
    until = case.until

    got, repeats = evaluate_records(checked, accepted(raw), until)

    have, need = Counter(map(got_ident, got)), Counter(map(want_ident, want))
    problems = [f"missing    {k}" for k in (need - have).elements()]
    problems += [f"unexpected {k}" for k in (have - need).elements()]
    for w in want:
        if (
            "time" in w
            and want_ident(w) in have
            and not any(got_ident(g) == want_ident(w) and g.time == parse_time(w["time"]) for g in got)
        ):
            problems.append(f"time is not {w['time']}: {want_ident(w)}")

    def repeat(r: dict[str, Any]) -> tuple[Any, ...]:
        return r["policy"], str(r["rule"]).split("/")[-1], r["subject"], r["count"], tuple(r["evidence"])

    rhave = Counter(repeat(r.to_json()) for r in repeats)
    rneed = Counter(repeat(r) for r in case.expect_repeats)
    problems += [f"missing repeat    {k}" for k in (rneed - rhave).elements()]
    problems += [f"unexpected repeat {k}" for k in (rhave - rneed).elements()]
    ids = {g.id for g in got}
    problems += [f"repeat of an unknown violation {r.repeat_of}" for r in repeats if r.repeat_of not in ids]
    for w in case.expect_repeats:
        if "time" in w and not any(
            repeat(r.to_json()) == repeat(w) and r.time == parse_time(w["time"]) for r in repeats
        ):
            problems.append(f"repeat time is not {w['time']}: {repeat(w)}")
    if len({g.id for g in got}) != len(got):
        problems.append("two violations share an id")
    for r in case.rejected:
        rid = r if isinstance(r, str) else (raw[r] if isinstance(raw[r], dict) else {}).get("id")
        if rid and any(rid in g.evidence for g in got):
            problems.append(f"rejected event {rid} is evidence")
    assert not problems, "\n".join(problems) + "\n" + json.dumps([g.to_json() for g in got], indent=1)[:4000]
