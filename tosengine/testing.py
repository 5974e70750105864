"""Policy tests (`tosengine test`): checked `*_test.yaml` cases -> runs on a fresh engine -> results.

Each test file beside the policies is checked first (policy/testfile.py: unknown keys, unknown rules,
bad durations are diagnostics with file:line:col, and a file with an error runs no case); then every
case of the files that checked runs on a fresh engine with all the policies of the directory, so
chains across policies (escalation, ignored notices) are tested as they run. A failure shows the
whole difference: for each expectation no violation met, the nearest violation and the fields that
differ; for each `expect_absent` that matched, the violation; and every violation of the case with all
its fields. The file format is in docs/policy-language.md, "Testing policies".
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tosengine.errors import TosEngineError
from tosengine.policy.diagnostics import Diagnostic, Span
from tosengine.policy.model import CheckedPolicySet
from tosengine.policy.sources import Source
from tosengine.policy.testfile import Expectation, TestCase, TestFile, check_test_file
from tosengine.runtime.engine import Engine
from tosengine.runtime.program import Program
from tosengine.text import printable
from tosengine.violation import Repeat, Violation, format_time

__all__ = ["CaseResult", "TestRun", "find_test_files", "run_policy_tests"]

_MATCH_KEYS = (
    "policy",
    "rule",
    "subject",
    "key",
    "message",
    "evidence",
    "action",
    "severity",
    "ladder_step",
    "mode",
    "count",
    "time",
)


@dataclass
class CaseResult:
    """One case: where it is, whether it passed, how long it took, and the differences if not."""

    path: str
    span: Span
    name: str
    passed: bool
    seconds: float = 0.0
    missing: list[Expectation] = field(default_factory=list)
    missing_repeats: list[Expectation] = field(default_factory=list)
    unexpected: list[tuple[Expectation, Violation]] = field(default_factory=list)
    actual: list[Violation] = field(default_factory=list)
    repeats: list[Repeat] = field(default_factory=list)
    error: str = ""

    @property
    def where(self) -> str:
        """`path:line:col` of the case."""
        return f"{self.path}:{self.span.line}:{self.span.col}"

    def render(self) -> str:
        """The failure as expected versus actual, every field of every violation shown (empty for a pass)."""
        if self.passed:
            return ""
        out = [f"{self.where}: FAIL {self.name}"]
        if self.error:
            out.append(f"  error: {self.error}")
        for m in self.missing:
            out.append(f"  - expected (line {m.span.line}) {_pattern(m.pattern)}")
            near = _nearest(m.pattern, self.actual)
            if near is not None:
                out.append(f"      nearest: {near.rule} with {_differences(m.pattern, near)}")
            else:
                out.append("      no violation of this rule at all")
        for m in self.missing_repeats:
            out.append(f"  - expected repeat record (line {m.span.line}) {_pattern(m.pattern)}")
            near_r = _nearest(m.pattern, self.repeats)
            if near_r is not None:
                out.append(f"      nearest: {near_r.rule} with {_differences(m.pattern, near_r)}")
        for pat, v in self.unexpected:
            out.append(f"  + unexpected {v.rule} {printable(v.subject)} [{', '.join(v.evidence)}]")
            out.append(f"      matches expect_absent (line {pat.span.line}) {_pattern(pat.pattern)}")
        out.append(f"  actual violations ({len(self.actual)}):" if self.actual else "  actual violations: none")
        out += [line for v in self.actual for line in _violation_lines(v)]
        if self.repeats:
            out.append(f"  actual repeat records ({len(self.repeats)}):")
            for r in self.repeats:
                out.append(
                    f"    {r.rule}  subject={printable(r.subject)}  count={r.count}  time={format_time(r.time)}  "
                    f"repeat_of={r.repeat_of}"
                )
        return "\n".join(out)


def _show(k: str, v: Any) -> str:
    if isinstance(v, datetime):
        return format_time(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(map(str, v)) + "]"
    return printable(str(v))


def _pattern(p: dict[str, Any]) -> str:
    shown = [k for k in _MATCH_KEYS if k in p and not (k == "policy" and "rule" in p)]  # the rule names it
    return " ".join(f"{k}={_show(k, p[k])}" for k in shown)


def _violation_lines(v: Violation) -> list[str]:
    return [
        f"    {v.rule}  subject={printable(v.subject)}  key={printable(v.key or v.subject)}  severity={v.severity}  "
        f"action={v.action}  mode={v.mode}  ladder_step={v.ladder_step}",
        f"        time={format_time(v.time)}  evidence=[{', '.join(v.evidence)}]  id={v.id}",
        f"        message: {printable(v.message)}",
    ]


def _value(v: Violation | Repeat, k: str) -> Any:
    if k == "key":
        return v.key or v.subject
    if k == "evidence":
        return list(v.evidence)
    return getattr(v, k, None)


def _field_matches(k: str, want: Any, v: Violation | Repeat) -> bool:
    have = _value(v, k)
    if k == "evidence":
        return sorted(map(str, want)) == sorted(have)
    if k == "time":
        return isinstance(have, datetime) and have == want
    return str(have) == str(want)


def _matches(pattern: dict[str, Any], v: Violation | Repeat) -> bool:
    return all(_field_matches(k, pattern[k], v) for k in _MATCH_KEYS if k in pattern)


def _nearest(pattern: dict[str, Any], actual: list[Any]) -> Any:
    """The actual record of the expected rule that agrees with the most expected fields, if any."""
    same_rule = [v for v in actual if "rule" not in pattern or v.rule == pattern["rule"]]
    return max(same_rule, key=lambda v: sum(_field_matches(k, pattern[k], v) for k in pattern), default=None)


def _differences(pattern: dict[str, Any], v: Violation | Repeat) -> str:
    diffs = [
        f"{k}={_show(k, _value(v, k))} (expected {_show(k, pattern[k])})"
        for k in _MATCH_KEYS
        if k in pattern and not _field_matches(k, pattern[k], v)
    ]
    return ", ".join(diffs) or "every expected field (each expectation needs a violation of its own)"


@dataclass
class TestRun:
    """All test files of a directory: their diagnostics, the cases' results, and which rules fired."""

    __test__ = False

    files: list[TestFile]
    results: list[CaseResult]
    fired: Counter[str]
    rules: list[str]
    skipped: int = 0  # cases left out by a --run pattern

    @property
    def diagnostics(self) -> list[Diagnostic]:
        """Every test file's diagnostics, in file order."""
        return [d for f in self.files for d in f.diagnostics]

    @property
    def errors(self) -> int:
        """How many error diagnostics (a file with one runs no case)."""
        return sum(d.severity == "error" for d in self.diagnostics)

    @property
    def passed(self) -> bool:
        """True when every file checked and every case that ran passed (and at least one ran)."""
        return not self.errors and bool(self.results) and all(r.passed for r in self.results)

    def uncovered(self) -> list[str]:
        """Rules no case made fire (a violation, or a fact for emit-only rules)."""
        return [r for r in self.rules if not self.fired[r]]


def _run_case(program: Program, case: TestCase, fired: Counter[str]) -> CaseResult:
    repeats: list[Repeat] = []
    began = time.perf_counter()
    result = CaseResult(case.path, case.span, case.name, False)
    try:
        # Cases jump in event time on purpose (a year to age out of a ladder): no bound on the clock's lead.
        with Engine(program.policies, program=program, on_repeat=repeats.append, max_clock_lead=None) as engine:
            actual = engine.process_many(case.events)
            if case.until is not None:
                actual += engine.advance_to(case.until)
            fired.update(engine.fired)
    except TosEngineError as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        result.seconds = time.perf_counter() - began
        return result
    remaining = list(actual)
    for exp in case.expect:
        hit = next((v for v in remaining if _matches(exp.pattern, v)), None)
        if hit is None:
            result.missing.append(exp)
        else:
            remaining.remove(hit)
    result.unexpected = [(exp, v) for exp in case.expect_absent for v in actual if _matches(exp.pattern, v)]
    left = list(repeats)
    for exp in case.expect_repeats:
        rep = next((r for r in left if _matches(exp.pattern, r)), None)
        if rep is None:
            result.missing_repeats.append(exp)
        else:
            left.remove(rep)
    result.passed = not result.missing and not result.unexpected and not result.missing_repeats
    result.actual, result.repeats = actual, repeats
    result.seconds = time.perf_counter() - began
    return result


def find_test_files(directory: str | Path) -> list[Path]:
    """The `*_test.yaml` files under `directory`, sorted."""
    return sorted(p for ext in ("*_test.yaml", "*_test.yml") for p in Path(directory).rglob(ext))


def run_policy_tests(policies: CheckedPolicySet, directory: str | Path, run: re.Pattern[str] | None = None) -> TestRun:
    """Check and run every `*_test.yaml` under `directory` against `policies`; with `run`, only the cases
    whose name it matches (searched anywhere in the name)."""
    by_path = {Path(p.path).resolve(): p.id for p in policies.policies}
    files: list[TestFile] = []
    for f in find_test_files(directory):
        stem = f.name.rsplit("_test.", 1)[0]
        beside = next(
            (pid for pth, pid in by_path.items() if pth.parent == f.resolve().parent and pth.stem == stem), None
        )
        source = Source(str(f), f.read_text(encoding="utf-8", errors="surrogateescape"))
        files.append(check_test_file(source, policies, beside))
    cases = [c for tf in files for c in tf.cases]
    chosen = [c for c in cases if run is None or run.search(c.name)]
    fired: Counter[str] = Counter()
    program = Program(policies)  # compiled once: every case runs on it, with a state of its own
    try:
        results = [_run_case(program, c, fired) for c in chosen]
    finally:
        program.close()
    return TestRun(files, results, fired, [r.id for r in policies.rules], skipped=len(cases) - len(chosen))
