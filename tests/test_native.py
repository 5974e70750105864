"""The native build (tosengine/_native.py, setup.py, build_backend/tosengine_build.py): what it
compiles, how a process tells, and what the build backend builds, asks for and refuses.

CI runs the whole suite a second time against a native wheel with TOSENGINE_EXPECT_NATIVE=1, so the
suite's behaviour is checked on the compiled modules too; this file makes sure that run really is native.
"""

from __future__ import annotations

import importlib
import os
import runpy
import subprocess
import sys
import tarfile
import zipfile
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


def _backend(monkeypatch: pytest.MonkeyPatch, asked: str | None) -> dict[str, Any]:
    """The build backend's hooks, loaded as a build frontend would, with TOSENGINE_NATIVE as `asked`."""
    monkeypatch.chdir(ROOT)  # setuptools runs setup.py from the project's folder
    if asked is None:
        monkeypatch.delenv("TOSENGINE_NATIVE", raising=False)
    else:
        monkeypatch.setenv("TOSENGINE_NATIVE", asked)
    return runpy.run_path(str(ROOT / "build_backend" / "tosengine_build.py"))


@pytest.mark.parametrize(("asked", "native"), [(None, True), ("", True), ("1", True), ("0", False)])
def test_a_wheel_is_native_unless_asked_not_to_be(
    monkeypatch: pytest.MonkeyPatch, asked: str | None, native: bool
) -> None:
    backend = _backend(monkeypatch, asked)
    wheel = backend["get_requires_for_build_wheel"]()
    assert (backend["MYPYC"] in wheel) is native
    if asked != "1":  # (asked for, a native editable install is refused: below)
        assert not any(r.startswith("mypy") for r in backend["get_requires_for_build_editable"]())
    assert os.environ.get("TOSENGINE_NATIVE") == asked  # the hooks put it back as it was


def test_an_unknown_answer_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = _backend(monkeypatch, "yes")
    with pytest.raises(SystemExit, match="TOSENGINE_NATIVE='yes': use 1"):
        backend["get_requires_for_build_wheel"]()


def test_an_editable_native_install_is_refused_with_the_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    backend = _backend(monkeypatch, "1")
    with pytest.raises(SystemExit, match="would import them instead of the sources you edit"):
        backend["build_editable"](str(tmp_path))
    assert list(tmp_path.iterdir()) == []  # nothing built


def test_a_pure_wheel_and_an_sdist_carry_no_compiled_code(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Even in a checkout where a native wheel was built before (CI's, for one): setuptools packs what its
    build folder holds, and a native build keeps to a folder of its own. The sdist carries the backend."""
    backend = _backend(monkeypatch, "0")
    wheel = tmp_path / backend["build_wheel"](str(tmp_path))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert wheel.name.endswith("-py3-none-any.whl")
    assert "tosengine/runtime/pipeline.py" in names
    assert not [n for n in names if n.endswith((".so", ".pyd", ".c"))]
    sdist = tmp_path / backend["build_sdist"](str(tmp_path))
    with tarfile.open(sdist) as archive:
        members = {m.name.split("/", 1)[1] for m in archive.getmembers() if "/" in m.name}
    backend_files = {"build_backend/tosengine_build.py", "build_backend/mypyc.ini"}
    assert {"setup.py", "tosengine/_native.py", *backend_files} <= members
    assert not [n for n in members if n.endswith((".so", ".pyd", ".c"))]


def test_pip_refuses_a_native_editable_install_first_thing_with_the_reason() -> None:
    """Through a real frontend: pip asks the backend for the editable build's requirements first, and
    that is where the refusal comes (before it, setup.py would have failed to import mypyc)."""
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--quiet", "-e", str(ROOT)],
        env={**os.environ, "TOSENGINE_NATIVE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert pip.returncode != 0
    assert "an editable install would import them instead of the sources you edit" in pip.stdout + pip.stderr
