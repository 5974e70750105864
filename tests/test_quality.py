"""House rules checked by the test suite: mypy --strict and ruff are clean (conformance: test_conformance.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("tosengine", "tests", "bench", "examples", "migrations", "setup.py", "build_backend")


def _tool(name: str) -> list[str]:
    exe = Path(sys.executable).with_name(name)
    if exe.exists():
        return [str(exe)]
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[test]')")
    return [found]


def test_mypy_strict_is_clean() -> None:
    p = subprocess.run(
        [
            *_tool("mypy"),
            "--strict",
            "--explicit-package-bases",
            "tosengine",
            "tests",
            "bench",
            "examples",
            "setup.py",
            "build_backend/tosengine_build.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stdout + p.stderr


def test_ruff_is_clean() -> None:
    p = subprocess.run([*_tool("ruff"), "check", *SOURCES], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_the_code_is_formatted_by_ruff_format() -> None:
    p = subprocess.run([*_tool("ruff"), "format", "--check", *SOURCES], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
