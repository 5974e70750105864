"""The shared conformance suite (../shared/conformance), case by case, through the real CLI.

Each case runs twice, as `run.py` runs it: once as one `tosengine replay --dry-run`, and once split into
two replays into one SQLite audit log (`run.py --split`), which holds the engine to state that
outlives the process. Cases pinned by an open issue are expected failures (strict: a case that starts
passing fails here until its mark is removed), with the issue's title as the reason.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.support import CONFORMANCE, PENDING

if not (CONFORMANCE / "run.py").is_file():
    pytest.skip(f"the shared conformance suite is not at {CONFORMANCE}", allow_module_level=True)


def _runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("conformance_run", CONFORMANCE / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # This checkout's CLI, whatever `tosengine` is on PATH.
    setattr(module, "ENGINE", [sys.executable, "-m", "tosengine"])  # noqa: B010 (not typed)
    return module


RUN = _runner()
CASES = sorted((CONFORMANCE / "cases").rglob("*.yaml"))


def _name(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def _params() -> list[object]:
    out: list[object] = []
    for path in CASES:
        name = _name(path)
        reason = PENDING.get(name)
        marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
        out.append(pytest.param(path, id=name, marks=marks))
    return out


def test_every_pending_case_exists() -> None:
    names = {_name(p) for p in CASES}
    assert set(PENDING) <= names


@pytest.mark.parametrize("path", _params())
def test_case(path: Path) -> None:
    problems = RUN.run_case(path)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", _params())
def test_case_split_in_two_runs(path: Path) -> None:
    problems = RUN.run_case(path, split=True)
    assert not problems, "\n".join(problems)
