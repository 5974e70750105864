"""Stage check (policy tests): a `*_test.yaml` Source + the checked policies -> TestFile (cases + diagnostics).

A test file is checked as strictly as a policy file, with the same YAML loader, the same diagnostics
and the same duration parser: an unknown key, a rule or policy no file declares, an evidence id no
event of the case has, a value out of its set -- each is a `file:line:col` diagnostic with a hint,
and a file with an error runs no case (a misspelt `expect_absent` would otherwise always pass).
The format is in docs/policy-language.md, "Testing policies".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tosengine.durations import parse_duration
from tosengine.errors import EventError
from tosengine.events import parse_time, validate_record
from tosengine.policy.context import FileContext, suggest
from tosengine.policy.diagnostics import Diagnostic, Span
from tosengine.policy.model import ACTIONS, MODES, SEVERITIES, CheckedPolicySet
from tosengine.policy.sources import Source
from tosengine.policy.yaml import Key, YamlError, load_yaml

__all__ = ["DEFAULT_START", "Expectation", "TestCase", "TestFile", "check_test_file"]

DEFAULT_START = "2026-01-01T00:00:00Z"
FILE_FIELDS = ("tests",)
CASE_FIELDS = ("name", "start", "events", "advance", "expect", "expect_absent", "expect_repeats")
REPEAT_FIELDS = ("repeat", "every", "time", "event")
ENVELOPE = ("id", "type", "time", "subject", "source", "specversion", "data")
# What an expectation may say of a violation (`count` only of a repeat record).
MATCH_FIELDS = ("policy", "rule", "subject", "key", "message", "evidence", "action", "severity", "ladder_step", "mode")
_CHOICES = {"severity": SEVERITIES, "action": ACTIONS, "mode": MODES}
_REL = re.compile(r"\+(\S+)")


@dataclass(frozen=True)
class Expectation:
    """One entry of `expect`, `expect_absent` or `expect_repeats`: the fields it pins (`rule` as the full
    `policy/rule` id, `time` as a datetime) and where it is written."""

    pattern: dict[str, Any]
    span: Span


@dataclass
class TestCase:
    """One case: its events in order (times absolute, ids filled), the clock to advance to, expectations."""

    __test__ = False  # not a pytest class

    path: str
    span: Span
    name: str
    events: list[dict[str, Any]]
    until: datetime | None = None
    expect: list[Expectation] = field(default_factory=list)
    expect_absent: list[Expectation] = field(default_factory=list)
    expect_repeats: list[Expectation] = field(default_factory=list)


@dataclass
class TestFile:
    """A checked test file: its cases (none if any error) and its diagnostics, sorted."""

    __test__ = False

    path: str
    cases: list[TestCase]
    diagnostics: list[Diagnostic]

    @property
    def ok(self) -> bool:
        """No error (warnings allowed)."""
        return not any(d.severity == "error" for d in self.diagnostics)


class _Checker:
    """Reads one test file into cases, reporting into a FileContext (the policy checker's)."""

    def __init__(self, ctx: FileContext, policies: CheckedPolicySet, policy: str | None) -> None:
        self.ctx = ctx
        self.policy = policy  # the policy beside the file (rules may be named without it), if any
        self.rules = {p.id: {r.name: r for r in (*p.rules, *p.disabled)} for p in policies.policies}

    # ------------------------------------------------------------ values

    def time(self, path: Key, start: datetime) -> datetime | None:
        """RFC 3339, or relative to `start` like +3d, +1h30m, +500ms."""
        raw = self.ctx.raw(path)
        if isinstance(raw, str):
            m = _REL.fullmatch(raw.strip())
            d = parse_duration(m[1], compound=True) if m else None
            if d is not None:
                return start + d
            try:
                return parse_time(raw)
            except ValueError:
                pass
        self.ctx.error(
            self.ctx.at(path), "invalid-value", "a time is RFC 3339 (2026-03-01T09:00:00Z) or relative: +3d, +1h30m"
        )
        return None

    def mapping(self, path: Key, what: str) -> dict[str, Any] | None:
        raw = self.ctx.raw(path)
        if not isinstance(raw, dict):
            self.ctx.error(self.ctx.at(path), "not-a-mapping", f"{what} is a mapping")
            return None
        return raw

    def listing(self, path: Key, what: str) -> list[Any]:
        parent = self.ctx.raw(path[:-1])
        raw = parent.get(path[-1]) if isinstance(parent, dict) else None
        if raw is None:
            return []
        if not isinstance(raw, list):
            self.ctx.error(self.ctx.at(path), "invalid-value", f"`{path[-1]}` is a list of {what}")
            return []
        return raw

    # ------------------------------------------------------------ the file

    def file(self) -> list[TestCase]:
        doc = self.ctx.doc.value
        if not isinstance(doc, dict):
            self.ctx.error(Span(1, 1), "not-a-mapping", "a test file is a mapping with `tests:`, a list of cases")
            return []
        self.ctx.known_fields((), FILE_FIELDS, "a test file")
        tests = doc.get("tests")
        if not isinstance(tests, list) or not tests:
            span = self.ctx.at(("tests",)) if "tests" in doc else Span(1, 1)
            self.ctx.error(span, "missing-field", "a test file has `tests:`, a list of one or more cases")
            return []
        names: dict[str, int] = {}
        out = []
        for i in range(len(tests)):
            case = self.case(("tests", i))
            if case is None:
                continue
            if case.name in names:
                self.ctx.error(
                    case.span,
                    "invalid-value",
                    f"case name `{case.name}` is already used by case #{names[case.name] + 1}",
                )
            names[case.name] = i
            out.append(case)
        return out

    def case(self, base: Key) -> TestCase | None:
        raw = self.mapping(base, "a case")
        if raw is None:
            return None
        span = self.ctx.at(base)
        self.ctx.known_fields(base, CASE_FIELDS, "a case")
        name = raw.get("name", f"case at line {span.line}")
        if not isinstance(name, str) or not name.strip():
            self.ctx.error(self.ctx.at((*base, "name")), "invalid-value", "`name` is text")
            name = f"case at line {span.line}"
        if not any(k in raw for k in ("expect", "expect_absent", "expect_repeats")):
            self.ctx.error(
                span, "missing-field", "this case checks nothing: give it `expect`, `expect_absent` or `expect_repeats`"
            )
        start = parse_time(DEFAULT_START)
        if "start" in raw:
            start = self.time((*base, "start"), start) or start
        events, last = self.events((*base, "events"), start, re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-"))
        until = self.time((*base, "advance"), last) if "advance" in raw else None
        # Without `events` (misspelt, say: that is reported), evidence ids are not checked against nothing.
        ids = {str(e.get("id")) for e in events} if "events" in raw else None
        case = TestCase(self.ctx.source.path, span, name, events, until)
        case.expect = self.expectations((*base, "expect"), start, ids)
        case.expect_absent = self.expectations((*base, "expect_absent"), start, ids)
        case.expect_repeats = self.expectations((*base, "expect_repeats"), start, ids, repeats=True)
        return case

    # ------------------------------------------------------------ events

    def events(self, path: Key, start: datetime, slug: str) -> tuple[list[dict[str, Any]], datetime]:
        """The case's events with absolute times and default ids (`<case>-<n>`), `repeat:` entries expanded."""
        events: list[dict[str, Any]] = []
        last = start
        for j, raw in enumerate(self.listing(path, "events")):
            at: Key = (*path, j)
            if not isinstance(raw, dict):
                self.ctx.error(self.ctx.at(at), "not-a-mapping", "an event is a mapping (or a `repeat:` block)")
                continue
            if "repeat" in raw:
                last = self.repeat(at, raw, start, last, slug, events)
                continue
            t = self.time((*at, "time"), start) if "time" in raw else last
            last = t or last
            e = {**raw, "time": last.isoformat(), "id": str(raw.get("id", f"{slug}-{len(events) + 1}"))}
            self.event(at, e)
            events.append(e)
        return events, last

    def repeat(
        self, at: Key, raw: dict[str, Any], start: datetime, last: datetime, slug: str, events: list[dict[str, Any]]
    ) -> datetime:
        """`repeat: N, every: D, time: T, event: {...}`: N events D apart from T ("{i}" in strings is 0..N-1)."""
        self.ctx.known_fields(at, REPEAT_FIELDS, "a repeat block")
        n = raw["repeat"]
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 100_000:
            self.ctx.error(self.ctx.at((*at, "repeat")), "invalid-value", "`repeat` is a whole number from 1 to 100000")
            return last
        every = timedelta(0)
        if "every" in raw:
            d = parse_duration(raw["every"], compound=True) if isinstance(raw["every"], str) else None
            if d is None:
                self.ctx.error(
                    self.ctx.at((*at, "every")),
                    "invalid-value",
                    "`every` is a duration: 500ms 9s 10m 1h30m (a number with ms, s, m, h or d)",
                )
                return last
            every = d
        base = (self.time((*at, "time"), start) or last) if "time" in raw else last
        template = self.mapping((*at, "event"), "`event`") if "event" in raw else None
        if template is None:
            if "event" not in raw:
                self.ctx.error(self.ctx.at(at), "missing-field", "a repeat block needs `event`, the event to repeat")
            return last
        if "time" in template:
            self.ctx.error(
                self.ctx.key_at((*at, "event", "time")),
                "invalid-value",
                "a repeated event's time comes from the block's `time` and `every`",
                "move `time` up to the repeat block",
            )
        for i in range(n):
            last = base + i * every
            e = _fill(template, i)
            e["time"] = last.isoformat()
            e["id"] = str(e.get("id", f"{slug}-{len(events) + 1}"))
            if i == 0:
                self.event((*at, "event"), e)  # the others differ only in "{i}": report once
            events.append(e)
        return last

    def event(self, at: Key, e: dict[str, Any]) -> None:
        """A filled-in event must be a valid event; a misspelt envelope field gets a did-you-mean."""
        raw = self.ctx.raw(at)
        for k in raw:
            if k not in ENVELOPE and suggest(k, ENVELOPE):
                self.ctx.error(
                    self.ctx.key_at((*at, k)), "unknown-field", f"unknown event attribute `{k}`", suggest(k, ENVELOPE)
                )
                return
        try:
            validate_record(e)
        except EventError as exc:
            where = (*at, exc.field) if exc.field in raw else at
            what = f"`{exc.field}`: " if exc.field else ""
            self.ctx.error(self.ctx.at(where), "invalid-value", f"not a valid event: {what}{exc.problem}")

    # ------------------------------------------------------------ expectations

    def expectations(
        self, path: Key, start: datetime, ids: set[str] | None, *, repeats: bool = False
    ) -> list[Expectation]:
        out = []
        allowed = (*MATCH_FIELDS, "time", *(("count",) if repeats else ()))
        for j, raw in enumerate(self.listing(path, "expected violations")):
            at: Key = (*path, j)
            if self.mapping(at, "an expectation") is None:
                continue
            self.ctx.known_fields(at, allowed, "an expectation")
            pattern = {k: v for k, v in raw.items() if k in allowed}
            policy = self.policy_of(at, raw)
            if policy is not None:
                pattern["policy"] = policy
                if "rule" in raw:
                    rule = self.rule_of(at, raw["rule"], policy)
                    if rule is not None:
                        pattern["rule"] = rule
            for name, choices in _CHOICES.items():
                if name in raw:
                    self.ctx.choice((*at, name), choices, "")
            for name in ("ladder_step", "count"):
                v = raw.get(name, 0)
                if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                    self.ctx.error(self.ctx.at((*at, name)), "invalid-value", f"`{name}` is a whole number")
            if "evidence" in raw:
                self.evidence((*at, "evidence"), ids)
            if "time" in raw:
                t = self.time((*at, "time"), start)
                if t is not None:
                    pattern["time"] = t
            out.append(Expectation(pattern, self.ctx.at(at)))
        return out

    def policy_of(self, at: Key, raw: dict[str, Any]) -> str | None:
        """The policy an expectation names: its `policy`, the one in a `policy/rule`, or the file's."""
        rule = raw.get("rule")
        if "policy" in raw:
            pid = raw["policy"]
            if pid not in self.rules:
                self.ctx.error(
                    self.ctx.at((*at, "policy")),
                    "unknown-name",
                    f"no policy `{pid}` here",
                    suggest(str(pid), self.rules) or f"policies: {', '.join(sorted(self.rules))}",
                )
                return None
            return str(pid)
        if isinstance(rule, str) and "/" in rule:
            pid = rule.split("/", 1)[0]
            if pid not in self.rules:
                self.ctx.error(
                    self.ctx.at((*at, "rule")), "unknown-name", f"no policy `{pid}` here", suggest(pid, self.rules)
                )
                return None
            return pid
        if self.policy is None:
            span = self.ctx.at((*at, "rule")) if "rule" in raw else self.ctx.at(at)
            self.ctx.error(
                span,
                "unknown-name",
                "this test file is beside no policy of its name, so an expectation names its policy",
                "write `rule: policy/rule`, or name the file after its policy (<policy file>_test.yaml)",
            )
            return None
        return self.policy

    def rule_of(self, at: Key, raw: Any, policy: str) -> str | None:
        name = raw.split("/", 1)[1] if isinstance(raw, str) and "/" in raw else raw
        rules = self.rules[policy]
        if not isinstance(name, str) or name not in rules:
            self.ctx.error(
                self.ctx.at((*at, "rule")),
                "unknown-name",
                f"policy `{policy}` has no rule `{name}`",
                suggest(str(name), rules) or f"its rules: {', '.join(rules)}",
            )
            return None
        if not rules[name].enabled:
            span = self.ctx.at((*at, "rule"))
            self.ctx.diags.append(
                Diagnostic(
                    self.ctx.source.path,
                    span,
                    "disabled-rule",
                    f"rule `{policy}/{name}` is disabled (`enabled: false`): it never fires",
                    severity="warning",
                    source_line=self.ctx.lines[span.line - 1] if 0 < span.line <= len(self.ctx.lines) else "",
                )
            )
        return f"{policy}/{name}"

    def evidence(self, path: Key, ids: set[str] | None) -> None:
        raw = self.ctx.raw(path)
        if not isinstance(raw, list) or not all(isinstance(x, str | int) for x in raw):
            self.ctx.error(self.ctx.at(path), "invalid-value", "`evidence` is a list of event ids")
            return
        if ids is None:
            return
        for n, x in enumerate(raw):
            if str(x) not in ids:
                self.ctx.error(
                    self.ctx.at((*path, n)), "unknown-name", f"no event of this case has id `{x}`", suggest(str(x), ids)
                )


def _fill(x: Any, i: int) -> Any:
    """Replace "{i}" by i in every string of a template."""
    if isinstance(x, dict):
        return {k: _fill(v, i) for k, v in x.items()}
    if isinstance(x, list):
        return [_fill(v, i) for v in x]
    return x.replace("{i}", str(i)) if isinstance(x, str) else x


def check_test_file(source: Source, policies: CheckedPolicySet, policy: str | None) -> TestFile:
    """Check one test file against the policies it tests; `policy` is the one beside it (its default)."""
    diags: list[Diagnostic] = []
    lines = source.text.splitlines()
    try:
        doc = load_yaml(source.text)
    except YamlError as exc:
        line = lines[exc.span.line - 1] if 0 < exc.span.line <= len(lines) else ""
        diags.append(Diagnostic(source.path, exc.span, exc.code, exc.message, source_line=line))
        return TestFile(source.path, [], diags)
    ctx = FileContext(source, doc, diags, lines)
    cases = _Checker(ctx, policies, policy).file()
    diags.sort(key=lambda d: d.sort_key)
    out = TestFile(source.path, cases, diags)
    if not out.ok:
        out.cases = []
    return out
