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
        ('matches(event.data.name, "(a+)+$")', "bad-regex"),
        ('matches(event.data.name, "(\\\\w*)*x")', "bad-regex"),
        ('matches(event.data.name, "(a)\\\\1")', "bad-regex"),
        ('matches(event.data.name, "([unclosed")', "bad-regex"),
        ("matches(event.data.name, event.data.pattern)", "type-mismatch"),
    ],
)
def test_hostile_expressions_are_refused(expr: str, code: str) -> None:
    assert code in _codes(HEAD + f"'{expr}'\n")


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
