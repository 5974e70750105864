"""The native build (tosengine/_native.py, setup.py, _build/backend.py): what it compiles, how a process
tells, and what the build backend asks for and refuses.

CI runs the whole suite a second time against a native wheel with TOSENGINE_EXPECT_NATIVE=1, so the
suite's behaviour is checked on the compiled modules too; this file makes sure that run really is native.
"""

from __future__ import annotations

import importlib
import os
import runpy
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from typing import Any

import pytest

from tests.support import tosengine
from tosengine._native import NATIVE_MODULES, compiled_modules

ROOT = Path(__file__).resolve().parent.parent
EXPECT_NATIVE = os.environ.get("TOSENGINE_EXPECT_NATIVE") == "1"


def test_the_build_this_process_runs_is_the_one_it_reports() -> None:
    """compiled_modules() reads the files; the importer must have loaded exactly those compiled, and
    `--version` says so. Under TOSENGINE_EXPECT_NATIVE=1 (CI's native run) every hot module is compiled."""
    compiled = compiled_modules()
    loaded = [
        name
        for name in NATIVE_MODULES
        if str(importlib.import_module(name).__file__).endswith(tuple(EXTENSION_SUFFIXES))
    ]
    assert compiled == loaded
    version = tosengine("--version")
    assert version.returncode == 0, version.stderr
    if EXPECT_NATIVE:
        assert compiled == list(NATIVE_MODULES)
        n = len(NATIVE_MODULES)
        assert f"(native build, {n} of {n} hot-path modules compiled)" in version.stdout
    else:
        assert compiled == []
        assert version.stdout.strip().endswith("(pure Python)")


def test_the_public_classes_stay_interpreted_so_their_docstrings_stay() -> None:
    """A compiled class loses its docstrings; the public API's classes live in modules never compiled."""
    import tosengine

    for name in tosengine.__all__:
        module = getattr(getattr(tosengine, name), "__module__", None)
        assert module not in NATIVE_MODULES, f"{name} is defined in compiled module {module}"


def _backend(monkeypatch: pytest.MonkeyPatch, native: bool) -> dict[str, Any]:
    monkeypatch.chdir(ROOT)  # setuptools runs setup.py from the project's folder
    if native:
        monkeypatch.setenv("TOSENGINE_NATIVE", "1")
    else:
        monkeypatch.delenv("TOSENGINE_NATIVE", raising=False)
    return runpy.run_path(str(ROOT / "_build" / "backend.py"))


def test_the_backend_asks_for_mypy_only_for_a_native_build(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = _backend(monkeypatch, native=False)["get_requires_for_build_wheel"]()
    assert not any(r.startswith("mypy") for r in plain)
    backend = _backend(monkeypatch, native=True)
    native = backend["get_requires_for_build_wheel"]()
    assert backend["MYPYC"] in native and set(plain) <= set(native)
    assert os.environ["TOSENGINE_NATIVE"] == "1"  # put back after asking setuptools as a plain build


def test_an_editable_native_install_is_refused_with_the_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    backend = _backend(monkeypatch, native=True)
    with pytest.raises(SystemExit, match="would import them instead of the sources you edit"):
        backend["build_editable"](str(tmp_path))
    assert list(tmp_path.iterdir()) == []  # nothing built
