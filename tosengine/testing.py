"""Policy tests (`tosengine test`): run the `*_test.yaml` cases beside policies; diff expected violations.

A test file holds `tests:`, a list of cases:

    tests:
      - name: a spoofed client is caught
        start: "2026-03-01T00:00:00Z"        # optional; relative times count from here
        events:
          - {id: e1, type: account.engagement, time: "+0s", subject: "account:1", data: {...}}
          - {type: account.engagement, time: "+2m", subject: "account:1"}   # id defaults to <case>-<n>
          - repeat: 60                       # 60 events, 9s apart from the previous time; "{i}" in
            every: 9s                        # any string is replaced by 0..59
            event: {type: account.engagement, subject: "account:2", data: {target: "post:{i}"}}
        advance: "+15d"                      # optional: move the clock after the events
        expect:                              # violations that must be there (policy: this file's)
          - {rule: spoofed-official-client, subject: "account:1", evidence: [e1]}
        expect_absent:                       # patterns no violation may match
          - {rule: engagement-burst}
        expect_repeats:                      # repeat records of once_per windows that must be there
          - {rule: spoofed-official-client, subject: "account:1", count: 2}

Every case runs on a fresh engine with all the policies of the directory, so chains across policies
(escalation, ignored notices) are tested as they run.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tosengine.cases import Case, CaseError, load_policy_tests
from tosengine.errors import TosEngineError
from tosengine.policy.model import CheckedPolicySet
from tosengine.runtime.engine import Engine
from tosengine.runtime.program import Program
from tosengine.violation import Repeat, Violation

__all__ = ["CaseResult", "TestRun", "run_policy_tests"]

_MATCH_KEYS = ("policy", "rule", "subject", "key", "message", "evidence", "action", "severity", "ladder_step", "count")


@dataclass
class CaseResult:
    """One case: where it is, whether it passed, and the differences if not."""

    path: str
    line: int
    name: str
    passed: bool
    missing: list[dict[str, Any]] = field(default_factory=list)
    unexpected: list[tuple[dict[str, Any], Violation]] = field(default_factory=list)
    actual: list[Violation] = field(default_factory=list)
    error: str = ""

    def render(self) -> str:
        """The failure as an expected/actual diff (empty for a pass)."""
        if self.passed:
            return ""
        out = [f"{self.path}:{self.line}: FAIL {self.name}"]
        if self.error:
            out.append(f"  error: {self.error}")
        for m in self.missing:
            out.append(f"  - expected {_pattern(m)}")
        for pat, v in self.unexpected:
            out.append(f"  + unexpected {v.rule} {v.subject} [{', '.join(v.evidence)}] (expect_absent {_pattern(pat)})")
        out.append("  actual violations:" if self.actual else "  actual violations: none")
        for v in self.actual:
            out.append(f"    {v.rule} {v.subject} [{', '.join(v.evidence)}] {v.message}")
        return "\n".join(out)


def _pattern(p: dict[str, Any]) -> str:
    return " ".join(f"{k}={p[k]}" for k in _MATCH_KEYS if k in p)


@dataclass
class TestRun:
    """All cases of a directory, and which rules fired in at least one of them."""

    results: list[CaseResult]
    fired: Counter[str]
    rules: list[str]

    @property
    def passed(self) -> bool:
        """True when every case passed (and there was at least one)."""
        return bool(self.results) and all(r.passed for r in self.results)

    def uncovered(self) -> list[str]:
        """Rules no case made fire (a violation, or a fact for emit-only rules)."""
        return [r for r in self.rules if not self.fired[r]]


def _matches(pattern: dict[str, Any], v: Violation | Repeat) -> bool:
    for k in _MATCH_KEYS:
        if k not in pattern:
            continue
        want = pattern[k]
        if k == "rule":
            if v.rule != (want if "/" in str(want) else f"{v.policy}/{want}"):
                return False
        elif k == "evidence":
            if sorted(map(str, want)) != sorted(v.evidence):
                return False
        elif k == "key":
            if (v.key or v.subject) != str(want):
                return False
        elif str(getattr(v, k, None)) != str(want):
            return False
    return True


def _run_case(program: Program, case: Case, fired: Counter[str]) -> CaseResult:
    if case.error:
        return CaseResult(case.path, case.line, case.name, False, error=case.error)
    repeats: list[Repeat] = []
    try:
        # Cases jump in event time on purpose (a year to age out of a ladder): no bound on the clock's lead.
        with Engine(program.policies, program=program, on_repeat=repeats.append, max_clock_lead=None) as engine:
            actual = engine.process_many(case.events)
            if case.until is not None:
                actual += engine.advance_to(case.until)
            fired.update(engine.fired)
    except TosEngineError as exc:
        return CaseResult(case.path, case.line, case.name, False, error=f"{type(exc).__name__}: {exc}")
    remaining = list(actual)
    missing = []
    for pat in case.expect:
        hit = next((v for v in remaining if _matches(pat, v)), None)
        if hit is None:
            missing.append(pat)
        else:
            remaining.remove(hit)
    unexpected = [(pat, v) for pat in case.expect_absent for v in actual if _matches(pat, v)]
    left = list(repeats)
    for pat in case.expect_repeats:
        rep = next((r for r in left if _matches(pat, r)), None)
        if rep is None:
            missing.append({"repeat": True, **pat})
        else:
            left.remove(rep)
    ok = not missing and not unexpected
    return CaseResult(case.path, case.line, case.name, ok, missing, unexpected, [] if ok else actual)


def run_policy_tests(policies: CheckedPolicySet, directory: str | Path) -> TestRun:
    """Run every `*_test.yaml` under `directory` against `policies`."""
    results: list[CaseResult] = []
    fired: Counter[str] = Counter()
    files = sorted(p for ext in ("*_test.yaml", "*_test.yml") for p in Path(directory).rglob(ext))
    by_path = {Path(p.path).resolve(): p.id for p in policies.policies}
    program = Program(policies)  # compiled once: every case runs on it, with a state of its own
    try:
        return TestRun(_run_files(files, by_path, program, results, fired), fired, [r.id for r in policies.rules])
    finally:
        program.close()


def _run_files(
    files: list[Path], by_path: dict[Path, str], program: Program, results: list[CaseResult], fired: Counter[str]
) -> list[CaseResult]:
    for f in files:
        stem = f.name.rsplit("_test.", 1)[0]
        policy_id = next(
            (pid for pth, pid in by_path.items() if pth.parent == f.resolve().parent and pth.stem == stem), stem
        )
        try:
            cases = load_policy_tests(f, policy_id)
        except CaseError as exc:
            results.append(CaseResult(str(f), 1, "(file)", False, error=str(exc)))
            continue
        results.extend(_run_case(program, case, fired) for case in cases)
    return results
