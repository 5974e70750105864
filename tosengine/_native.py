"""The native build: which modules it compiles, and which of them this process runs compiled.

A wheel (`pip wheel .`, `pip install .`) compiles the modules below with mypyc, the compiler that
ships with mypy, into C extensions, unless TOSENGINE_NATIVE=0 asks for a pure one: the per-event path
from the JSON line to the decision, where the interpreter's own overhead is most of the time
(docs/performance.md, "The native build"). An editable install is pure Python (the build backend,
build_backend/tosengine_build.py). The code is the same typed Python either way; `mypy --strict` is
what lets it compile.
Everything else (the CLI, policy compilation, the audit log, serve, the workers) stays interpreted, and
so do the modules of the public API's classes (runtime/engine.py, violation.py): a compiled class loses
its docstrings, which `help()` and the API reference read.

This file is read by setup.py without importing the package, so it imports nothing at module level.
"""

from __future__ import annotations

__all__ = ["NATIVE_MODULES", "compiled_modules", "describe"]

# The hot path, in the order an event meets it (event -> validate -> route -> match -> decide).
NATIVE_MODULES: tuple[str, ...] = (
    "tosengine.lines",
    "tosengine.events",
    "tosengine.ingest",
    "tosengine.runtime.order",
    "tosengine.runtime.clock",
    "tosengine.runtime.evaluate",
    "tosengine.runtime.items",
    "tosengine.runtime.kinds.base",
    "tosengine.runtime.kinds.match",
    "tosengine.runtime.kinds.threshold",
    "tosengine.runtime.kinds.sequence",
    "tosengine.runtime.kinds.expect",
    "tosengine.runtime.once",
    "tosengine.runtime.ladder",
    "tosengine.runtime.matcher",
    "tosengine.runtime.partition",
    "tosengine.runtime.pipeline",
)


def compiled_modules() -> list[str]:
    """The modules of NATIVE_MODULES that this installation loads from compiled extensions (empty for a
    pure-Python install, such as the editable one the README makes, or a TOSENGINE_NATIVE=0 wheel).

    Read off the files, without importing anything: Python's importer tries a directory's extension
    modules before its sources, so a module is loaded compiled exactly when its extension is there."""
    from importlib.machinery import EXTENSION_SUFFIXES
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = []
    for name in NATIVE_MODULES:
        *package, leaf = name.split(".")
        folder = root.joinpath(*package)
        if any((folder / f"{leaf}{suffix}").is_file() for suffix in EXTENSION_SUFFIXES):
            out.append(name)
    return out


def describe() -> str:
    """The build, as `tosengine --version` says it."""
    n = len(compiled_modules())
    return f"native build, {n} of {len(NATIVE_MODULES)} hot-path modules compiled" if n else "pure Python"
