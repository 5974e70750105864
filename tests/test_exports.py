"""The public API is what tosengine.__all__ says, each name documented; internals stay internal."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import tosengine

ROOT = Path(__file__).resolve().parents[1]


def test_public_names_are_pinned() -> None:
    assert sorted(tosengine.__all__) == [
        "AuditError",
        "CheckedPolicySet",
        "Engine",
        "Event",
        "EventError",
        "Explanation",
        "MatcherError",
        "PolicyError",
        "TosEngineError",
        "Violation",
        "check_policy_set",
        "check_sources",
        "explain_violation",
        "read_sources",
        "validate_event",
    ]
    for name in tosengine.__all__:
        assert getattr(tosengine, name).__doc__, f"{name} has no docstring"


def test_errors_share_one_base() -> None:
    from tosengine.policy.expr import ExprSyntaxError
    from tosengine.policy.yaml import YamlError

    for error in (
        tosengine.EventError,
        tosengine.MatcherError,
        tosengine.PolicyError,
        tosengine.AuditError,
        ExprSyntaxError,
        YamlError,
    ):
        assert issubclass(error, tosengine.TosEngineError)


def test_the_policy_stages_load_no_engine_and_no_database() -> None:
    """Checking policies (editors, CI) needs neither durable_rules nor SQLAlchemy nor Alembic."""
    code = (
        "import sys, tosengine.policy, tosengine.policy.check, tosengine.policy.compile; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('durable', 'durable_rules_engine', 'sqlalchemy', 'alembic')))"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


def test_only_the_matcher_imports_durable_rules() -> None:
    """The engine reaches durable_rules through the matcher alone; the load-time smoke test's child
    script imports it too, but runs in its own process and no module imports it."""
    importers: dict[str, list[str]] = {"durable": [], "smoke_child": []}
    for path in (ROOT / "tosengine").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for what in importers:
                if any(n.startswith(what) or n.endswith(f".{what}") for n in names):
                    importers[what].append(path.relative_to(ROOT).as_posix())
    assert sorted(importers["durable"]) == ["tosengine/runtime/matcher.py", "tosengine/runtime/smoke_child.py"]
    assert importers["smoke_child"] == []


def test_every_module_opens_with_a_docstring() -> None:
    for path in (ROOT / "tosengine").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assert ast.get_docstring(tree), f"{path} has no module docstring"
