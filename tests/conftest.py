"""Shared test helpers: build engines from YAML text, make events, compare with the reference."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import pytest

from tosengine import Engine, Violation, check_sources
from tosengine.events import parse_time
from tosengine.policy.model import CheckedPolicySet
from tosengine.policy.sources import Source

T0 = parse_time("2026-01-01T00:00:00Z")


def policy_set(*texts: str) -> CheckedPolicySet:
    """Check policy texts (named p0.yaml, p1.yaml, ...); fail the test with the diagnostics if invalid."""
    checked, diags = check_sources([Source(f"p{i}.yaml", t) for i, t in enumerate(texts)])
    if checked is None:
        pytest.fail("\n".join(d.render() for d in diags))
    return checked


def ev(eid: str, etype: str, subject: str, at: timedelta | str = timedelta(0), **data: Any) -> dict[str, Any]:
    """An event at T0 + `at` (or at an RFC 3339 time)."""
    when = at if isinstance(at, str) else (T0 + at).isoformat().replace("+00:00", "Z")
    out: dict[str, Any] = {"id": eid, "type": etype, "time": when, "subject": subject}
    if data:
        out["data"] = data
    return out


def run(policies: CheckedPolicySet, events: Iterable[dict[str, Any]], until: datetime | None = None) -> list[Violation]:
    """Every violation the engine reports for the stream (and an optional final clock advance)."""
    with Engine(policies) as engine:
        out = engine.process_many(events)
        if until is not None:
            out += engine.advance_to(until)
    return out


def summary(vs: Iterable[Violation]) -> list[tuple[str, str, tuple[str, ...]]]:
    """(rule, subject, evidence) of each violation, sorted: what most assertions compare."""
    return sorted((v.rule, v.subject, v.evidence) for v in vs)


def pytest_addoption(parser: pytest.Parser) -> None:
    """`pytest --update-golden` rewrites the golden files instead of comparing with them."""
    parser.addoption("--update-golden", action="store_true", help="rewrite tests/golden/*.txt from current output")


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Any:
    """Compare text with tests/golden/<name>, or rewrite it under --update-golden."""
    from pathlib import Path

    update = request.config.getoption("--update-golden")

    def check(name: str, text: str) -> None:
        path = Path(__file__).parent / "golden" / name
        if update or not path.exists():
            path.write_text(text, encoding="utf-8")
            if not update:
                pytest.fail(f"golden file {path} did not exist; wrote it -- review and commit it")
        assert text == path.read_text(encoding="utf-8"), f"output differs from {path} (pytest --update-golden)"

    return check
