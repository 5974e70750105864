"""Behaviour as data: the one loader of YAML case files, for `tosengine test` and the test suites.

Two shapes of file share it:

* a **policy test file** (`*_test.yaml` beside the policies, run by `tosengine test`): `tests:`, a
  list of cases over the directory's policies (docs/policy-language.md, "Testing policies");
* a **behaviour case** (the shared conformance suite's format, and tests/cases/): one case with its
  own `policies`, `events`, `generate` blocks, `until` and `want` (../shared/conformance/README.md).

Both expand to Case: the events in order (templates filled, times made absolute), the time to move
the clock to afterwards, and what the violations must and must not be.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tosengine.durations import parse_duration
from tosengine.errors import TosEngineError
from tosengine.events import parse_time
from tosengine.policy.yaml import YamlError, load_yaml

__all__ = [
    "DEFAULT_START",
    "Case",
    "CaseError",
    "expand_generate",
    "fill",
    "load_behaviour_case",
    "load_policy_tests",
    "when",
]

DEFAULT_START = "2026-01-01T00:00:00Z"


class CaseError(TosEngineError):
    """A case file is malformed; the message names the file and line."""


@dataclass
class Case:
    """One case: where it is, its events (objects, or strings written verbatim as lines), and what the
    violations must be (`expect`: each present; `expect_absent`: patterns none may match)."""

    path: str
    line: int
    name: str
    events: list[Any]
    until: datetime | None = None
    policies: dict[str, str] | None = None  # behaviour cases carry their own policy files
    expect: list[dict[str, Any]] = field(default_factory=list)
    expect_absent: list[dict[str, Any]] = field(default_factory=list)
    expect_repeats: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[str | int] = field(default_factory=list)
    split_at: int | None = None
    error: str = ""  # why the case could not be built (it then fails, and the others still run)


def when(text: str) -> datetime:
    """An RFC 3339 time, any number of fraction digits."""
    return parse_time(text)


def fill(x: Any, i: int) -> Any:
    """Replace "{i}" by i in every string of a template."""
    if isinstance(x, dict):
        return {k: fill(v, i) for k, v in x.items()}
    if isinstance(x, list):
        return [fill(v, i) for v in x]
    return x.replace("{i}", str(i)) if isinstance(x, str) else x


def _rfc3339(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _every(text: Any, where: str) -> timedelta:
    d = parse_duration(str(text), compound=True) if isinstance(text, str) else None
    if d is None:
        raise CaseError(f"{where}: `every` is a duration such as 9s or 1h30m")
    return d


def expand_generate(blocks: list[dict[str, Any]]) -> tuple[list[Any], list[dict[str, Any]]]:
    """`generate` blocks -> (events, wanted violations), block after block, instance by instance; a
    template without `time` gets its instance's time, start + i * every."""
    events: list[Any] = []
    want: list[dict[str, Any]] = []
    for g in blocks:
        start, every = when(g["start"]), _every(g["every"], "generate")
        for i in range(int(g["count"])):
            t = _rfc3339(start + i * every)
            events += [{"time": t, **fill(e, i)} for e in g["events"]]
            want += [fill(w, i) for w in g.get("want") or []]
    return events, want


def load_behaviour_case(path: str | Path) -> Case:
    """A behaviour case file (conformance format): its policies, expanded events and wanted records."""
    doc = _load(Path(path))
    if not isinstance(doc, dict) or "policies" not in doc:
        raise CaseError(f"{path}:1: a behaviour case has `note`, `policies`, `events` and `want`")
    events = list(doc.get("events") or [])
    want = list(doc.get("want") or [])
    generated, generated_want = expand_generate(doc.get("generate") or [])
    return Case(
        str(path),
        1,
        str(doc.get("note", Path(path).stem)),
        events + generated,
        until=when(doc["until"]) if doc.get("until") else None,
        policies=dict(doc["policies"]),
        expect=want + generated_want,
        expect_repeats=list(doc.get("want_repeats") or []),
        rejected=list(doc.get("want_rejected") or []),
        split_at=doc.get("split_at"),
    )


# ---------------------------------------------------------------- policy test files


_REL = re.compile(r"\+(\S+)")


def _at(value: Any, start: datetime, where: str) -> datetime:
    """A time in a policy test: RFC 3339, or relative to the case's start like +3d or +1h30m."""
    if isinstance(value, str):
        m = _REL.fullmatch(value.strip())
        d = parse_duration(m[1], compound=True) if m else None
        if d is not None:
            return start + d
        try:
            return parse_time(value)
        except ValueError:
            pass
    raise CaseError(f"{where}: a time is RFC 3339 or relative like +3d or +1h30m")


def _events(raw_events: list[Any], start: datetime, slug: str, where: str) -> tuple[list[dict[str, Any]], datetime]:
    """A case's events with absolute times and default ids (`<case>-<n>`), `repeat:` entries expanded."""
    events: list[dict[str, Any]] = []
    last = start
    for raw in raw_events:
        if not isinstance(raw, dict):
            raise CaseError(f"{where}: event #{len(events) + 1} must be a mapping")
        if "repeat" in raw:
            every = _every(raw.get("every", "0s"), where)
            base = _at(raw["time"], start, where) if "time" in raw else last
            for i in range(int(raw["repeat"])):
                e = fill(dict(raw["event"]), i)
                last = base + i * every
                e["time"] = last.isoformat()
                e["id"] = str(e.get("id", f"{slug}-{len(events) + 1}"))
                events.append(e)
            continue
        e = dict(raw)
        last = _at(e["time"], start, where) if "time" in e else last
        e["time"] = last.isoformat()
        e["id"] = str(e.get("id", f"{slug}-{len(events) + 1}"))
        events.append(e)
    return events, last


def load_policy_tests(path: str | Path, policy_id: str) -> list[Case]:
    """The cases of one `*_test.yaml`; `policy_id` is the policy its patterns name by default."""
    doc, spans = _load_located(Path(path))
    cases = doc.get("tests") if isinstance(doc, dict) else None
    if not isinstance(cases, list) or not cases:
        raise CaseError(f"{path}:1: a test file has `tests:`, a list of cases")
    out: list[Case] = []
    for i, raw in enumerate(cases):
        line = spans(("tests", i))
        where = f"{path}:{line}"
        if not isinstance(raw, dict):
            out.append(Case(str(path), line, f"case {i + 1}", [], error="a case is a mapping"))
            continue
        name = str(raw.get("name") or f"case at line {line}")
        try:
            start = _at(raw.get("start", DEFAULT_START), parse_time(DEFAULT_START), where)
            slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
            events, last = _events(raw.get("events") or [], start, slug, where)
            until = _at(raw["advance"], last, where) if "advance" in raw else None
        except CaseError as exc:
            out.append(Case(str(path), line, name, [], error=f"CaseError: {exc}"))
            continue
        except (KeyError, TypeError, ValueError) as exc:
            out.append(Case(str(path), line, name, [], error=f"{type(exc).__name__}: {exc}"))
            continue
        out.append(
            Case(
                str(path),
                line,
                name,
                events,
                until,
                expect=[{"policy": policy_id, **x} for x in raw.get("expect") or []],
                expect_absent=[{"policy": policy_id, **x} for x in raw.get("expect_absent") or []],
                expect_repeats=[{"policy": policy_id, **x} for x in raw.get("expect_repeats") or []],
            )
        )
    return out


def _load(path: Path) -> Any:
    return _load_located(path)[0]


def _load_located(path: Path) -> tuple[Any, Any]:
    try:
        located = load_yaml(path.read_text(encoding="utf-8"))
    except YamlError as exc:
        raise CaseError(f"{path}:{exc.span.line}:{exc.span.col}: {exc.message}") from None
    return located.value, lambda key: located.span(key).line
