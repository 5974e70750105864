"""Behaviour as data: behaviour case file (YAML) -> Case, for the conformance suite and tests/cases/.

A **behaviour case** (the shared conformance suite's format, and tests/cases/) is one case with its own
`policies`, `events`, `generate` blocks, `until` and `want` (../shared/conformance/README.md). It
expands to Case: the events in order (templates filled, times made absolute), the time to move the
clock to afterwards, and what the violations must be. Policy authors' `*_test.yaml` files, which run
against a directory's policies, are checked by policy/testfile.py with the policy checker's
diagnostics, and run by tosengine/testing.py.
"""

from __future__ import annotations

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
    "when",
]

DEFAULT_START = "2026-01-01T00:00:00Z"  # policy tests start here too (policy/testfile.py)


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
        raise CaseError(f"{where}: `every` is a duration such as 500ms, 9s or 1h30m")
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


def _load(path: Path) -> Any:
    return _load_located(path)[0]


def _load_located(path: Path) -> tuple[Any, Any]:
    try:
        located = load_yaml(path.read_text(encoding="utf-8"))
    except YamlError as exc:
        raise CaseError(f"{path}:{exc.span.line}:{exc.span.col}: {exc.message}") from None
    return located.value, lambda key: located.span(key).line
