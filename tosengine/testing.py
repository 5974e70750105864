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

Every case runs on a fresh engine with all the policies of the directory, so chains across policies
(escalation, ignored notices) are tested as they run.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tosengine.errors import TosEngineError
from tosengine.events import parse_time
from tosengine.policy.model import CheckedPolicySet
from tosengine.policy.yaml import YamlError, load_yaml
from tosengine.runtime.engine import Engine
from tosengine.violation import Violation

__all__ = ["CaseResult", "TestRun", "run_policy_tests"]

_REL = re.compile(r"\+((?:\d+[smhd])+)")
_PART = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
DEFAULT_START = "2026-01-01T00:00:00Z"
_MATCH_KEYS = ("policy", "rule", "subject", "message", "evidence", "action", "severity", "ladder_step")


class PolicyTestError(TosEngineError):
    """A test file is malformed; the message names the file and line."""


def _span(text: str) -> timedelta:
    """`1h30m` -> a timedelta (the caller has matched _REL)."""
    return sum((timedelta(**{_UNITS[u]: int(n)}) for n, u in _PART.findall(text)), timedelta())


def _when(value: Any, start: datetime, where: str) -> datetime:
    if not isinstance(value, str):
        raise PolicyTestError(f"{where}: a time is RFC 3339 or relative like +3d or +1h30m")
    m = _REL.fullmatch(value.strip())
    if m:
        return start + _span(m[1])
    try:
        return parse_time(value)
    except ValueError:
        raise PolicyTestError(f"{where}: a time is RFC 3339 or relative like +3d or +1h30m") from None


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


def _fill(x: Any, i: int) -> Any:
    """Replace "{i}" in every string of a repeated event template."""
    if isinstance(x, dict):
        return {k: _fill(v, i) for k, v in x.items()}
    if isinstance(x, list):
        return [_fill(v, i) for v in x]
    return x.replace("{i}", str(i)) if isinstance(x, str) else x


def _matches(pattern: dict[str, Any], v: Violation) -> bool:
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
        elif str(getattr(v, k)) != str(want):
            return False
    return True


def _run_case(policies: CheckedPolicySet, path: str, line: int, case: dict[str, Any], policy_id: str,
              fired: Counter[str]) -> CaseResult:
    name = str(case.get("name") or f"case at line {line}")
    where = f"{path}:{line}"
    try:
        start = _when(case.get("start", DEFAULT_START), parse_time(DEFAULT_START), where)
        events: list[dict[str, Any]] = []
        last = start
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        for raw in case.get("events") or []:
            if not isinstance(raw, dict):
                raise PolicyTestError(f"{where}: event #{len(events) + 1} must be a mapping")
            if "repeat" in raw:
                m = _REL.fullmatch(f"+{raw.get('every', '0s')}")
                if m is None:
                    raise PolicyTestError(f"{where}: `every` is a duration such as 9s or 1h30m")
                every = _span(m[1])
                base = _when(raw["time"], start, where) if "time" in raw else last
                for i in range(int(raw["repeat"])):
                    e = _fill(dict(raw["event"]), i)
                    last = base + i * every
                    e["time"] = last.isoformat()
                    e["id"] = str(e.get("id", f"{slug}-{len(events) + 1}"))
                    events.append(e)
                continue
            e = dict(raw)
            last = _when(e["time"], start, where) if "time" in e else last
            e["time"] = last.isoformat()
            e["id"] = str(e.get("id", f"{slug}-{len(events) + 1}"))
            events.append(e)
        expect = [{"policy": policy_id, **x} for x in case.get("expect") or []]
        absent = [{"policy": policy_id, **x} for x in case.get("expect_absent") or []]
        with Engine(policies) as engine:
            actual = engine.process_many(events)
            if "advance" in case:
                actual += engine.advance_to(_when(case["advance"], last, where))
            fired.update(engine.fired)
    except (TosEngineError, KeyError, TypeError, ValueError) as exc:
        return CaseResult(path, line, name, False, error=f"{type(exc).__name__}: {exc}")
    remaining = list(actual)
    missing = []
    for pat in expect:
        hit = next((v for v in remaining if _matches(pat, v)), None)
        if hit is None:
            missing.append(pat)
        else:
            remaining.remove(hit)
    unexpected = [(pat, v) for pat in absent for v in actual if _matches(pat, v)]
    ok = not missing and not unexpected
    return CaseResult(path, line, name, ok, missing, unexpected, [] if ok else actual)


def run_policy_tests(policies: CheckedPolicySet, directory: str | Path) -> TestRun:
    """Run every `*_test.yaml` under `directory` against `policies`."""
    results: list[CaseResult] = []
    fired: Counter[str] = Counter()
    files = sorted(p for ext in ("*_test.yaml", "*_test.yml") for p in Path(directory).rglob(ext))
    by_path = {Path(p.path).resolve(): p.id for p in policies.policies}
    for f in files:
        stem = f.name.rsplit("_test.", 1)[0]
        policy_id = next((pid for pth, pid in by_path.items() if pth.parent == f.resolve().parent
                          and pth.stem == stem), stem)
        try:
            doc = load_yaml(f.read_text(encoding="utf-8"))
        except YamlError as exc:
            results.append(CaseResult(str(f), exc.span.line, "(file)", False, error=exc.message))
            continue
        cases = doc.value.get("tests") if isinstance(doc.value, dict) else None
        if not isinstance(cases, list) or not cases:
            results.append(CaseResult(str(f), 1, "(file)", False, error="a test file has `tests:`, a list of cases"))
            continue
        for i, case in enumerate(cases):
            line = doc.span(("tests", i)).line
            if not isinstance(case, dict):
                results.append(CaseResult(str(f), line, f"case {i + 1}", False, error="a case is a mapping"))
                continue
            results.append(_run_case(policies, str(f), line, case, policy_id, fired))
    return TestRun(results, fired, [r.id for r in policies.rules])
