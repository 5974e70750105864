"""A policy author cannot run code, read files or hang the engine through a policy file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tosengine import check_sources
from tosengine.policy.sources import Source

HEAD = "policy: hostile\nclause: c\nrules:\n  - id: r\n    match: "


def _codes(text: str) -> list[str]:
    checked, diags = check_sources([Source("hostile.yaml", text)])
    assert checked is None
    return [d.code for d in diags]


@pytest.mark.parametrize(
    "expr,code",
    [
        ("event.__class__.__init__.__globals__", "invalid-value"),
        ("event._private", "invalid-value"),
        ('__import__("os").system("true")', "expr-syntax"),
        ('__import__("os")', "unknown-function"),
        ('eval("1")', "unknown-function"),
        ('open("/etc/passwd")', "unknown-function"),
        ("(lambda x: x)(1)", "expr-syntax"),
        ("[x for x in event.data.items]", "expr-syntax"),
        ("event.data.x if true else false", "expr-syntax"),
        ("event.data.items[0]", "expr-syntax"),
        ('matches(event.data.name, "(a)\\\\1")', "bad-regex"),  # RE2 has no backreferences
        ('matches(event.data.name, "(?=a)b")', "bad-regex"),  # nor lookaround
        ('matches(event.data.name, "([unclosed")', "bad-regex"),
        ("matches(event.data.name, event.data.pattern)", "type-mismatch"),
    ],
)
def test_hostile_expressions_are_refused(expr: str, code: str) -> None:
    assert code in _codes(HEAD + f"'{expr}'\n")


# Patterns that backtrack catastrophically in Python's `re`; on RE2 each runs in linear time.
CATASTROPHIC = ["((a+))+$", "(a+){20}$", "\\s+$", "^.*=.*=.*=.*;$", "(a|aa)+$", "(\\w*)*x"]


def test_patterns_that_would_backtrack_catastrophically_run_in_linear_time(tmp_path: Path) -> None:
    """Each pattern checks, and one event of a 1 MiB string built to defeat a backtracking matcher is
    judged at once: in a subprocess with a timeout, since on a backtracking engine it would never end."""
    rules = "".join(
        f'  - id: r{i}\n    match: matches(event.data.s, "{p.replace(chr(92), chr(92) * 2)}")\n'
        for i, p in enumerate(CATASTROPHIC)
    )
    policy = f"policy: p\nclause: c\nrules:\n{rules}"
    checked, diags = check_sources([Source("p.yaml", policy)])
    assert checked is not None, [d.render() for d in diags]
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text(policy, encoding="utf-8")
    hostile = "a" * 300_000 + "=" * 300_000 + " " * 300_000 + "!"
    code = (
        "import sys, json; from tosengine import Engine; e = Engine.from_directory(sys.argv[1], smoke_test=None); "
        "print(len(e.process({'id': '1', 'type': 't', 'time': '2026-01-01T00:00:00Z', 'subject': 'a:1', "
        "'data': {'s': sys.stdin.read()}})))"
    )
    p = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "policies")],
        input=hostile,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "0"  # none matches that string, and none took long to say so


def test_yaml_tags_are_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = f'policy: !!python/object/apply:os.system ["touch {marker}"]\nclause: c\nrules: []\n'
    assert _codes(text) == ["yaml-unsafe"]
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "x.yaml").write_text(text, encoding="utf-8")
    p = subprocess.run(
        [sys.executable, "-m", "tosengine", "check", str(tmp_path / "p")], capture_output=True, text=True
    )
    assert p.returncode == 1 and "yaml-unsafe" in p.stdout
    assert not marker.exists()


def test_billion_laughs_is_refused_before_expansion() -> None:
    lol = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    for i in range(1, 9):
        lol += f"{'abcdefghij'[i]}: &{'abcdefghij'[i]} [" + ", ".join([f"*{'abcdefghij'[i - 1]}"] * 9) + "]\n"
    assert _codes(lol + "policy: p\nclause: c\nrules: []\n") == ["yaml-unsafe"]


def test_huge_and_deep_inputs_give_diagnostics_not_crashes() -> None:
    assert "expr-syntax" in _codes(HEAD + "'" + "(" * 500 + "1" + ")" * 500 + "'\n")
    assert "expr-syntax" in _codes(HEAD + "'" + " or ".join(["true"] * 2000) + "'\n")
    assert "limit" in _codes("policy: p\nclause: '" + "x" * (2 << 20) + "'\nrules: []\n")
