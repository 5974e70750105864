"""The in-tree build backend: setuptools', deciding whether a build is native (setup.py).

A wheel is native unless TOSENGINE_NATIVE=0: its hot path is compiled with mypyc, which needs a C
compiler, as durable_rules already does (PyPI has no wheels for it), and a pinned mypy, which this
backend adds to the build's requirements. An editable install is pure Python, so an edit takes effect
at once; asked to be native (TOSENGINE_NATIVE=1), it is refused: its compiled modules would sit beside
the sources and be imported instead of them. An sdist is sources only.

The decision reaches setup.py as TOSENGINE_NATIVE set to "1" or "0" around each hook.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403 - every other hook is setuptools' own

# The mypy (and so mypyc) that compiles the native build: pinned, so that a wheel is reproducible.
MYPYC = "mypy==2.4.1"


def _native(default: bool) -> bool:
    """What TOSENGINE_NATIVE asks for: "1" native, "0" pure, unset or empty the hook's default."""
    asked = os.environ.get("TOSENGINE_NATIVE", "")
    if asked not in ("", "0", "1"):
        raise SystemExit(f"TOSENGINE_NATIVE={asked!r}: use 1 (a native build) or 0 (pure Python)")
    return default if asked == "" else asked == "1"


@contextlib.contextmanager
def _building(native: bool) -> Iterator[None]:
    """setup.py's TOSENGINE_NATIVE for the length of one setuptools hook, then as it was."""
    before = os.environ.get("TOSENGINE_NATIVE")
    os.environ["TOSENGINE_NATIVE"] = "1" if native else "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TOSENGINE_NATIVE")
        else:
            os.environ["TOSENGINE_NATIVE"] = before


def _pure(hook: Callable[..., Any], *args: Any) -> Any:
    """One of setuptools' hooks, run as a pure-Python build."""
    with _building(native=False):
        return hook(*args)


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    """setuptools' requirements, and mypy for a native build."""
    # setuptools runs setup.py to find its requirements, and a native setup.py needs mypyc, which is
    # what is being asked for: ask as a pure build, then add it.
    plain = list(_pure(_setuptools.get_requires_for_build_wheel, config_settings))
    return [*plain, MYPYC] if _native(default=True) else plain


def prepare_metadata_for_build_wheel(metadata_directory: str, config_settings: dict[str, Any] | None = None) -> str:
    """setuptools' metadata, which the compiled modules do not change (so they are not compiled for it)."""
    return str(_pure(_setuptools.prepare_metadata_for_build_wheel, metadata_directory, config_settings))


def build_wheel(
    wheel_directory: str, config_settings: dict[str, Any] | None = None, metadata_directory: str | None = None
) -> str:
    """setuptools' wheel: native unless TOSENGINE_NATIVE=0."""
    native = _native(default=True)
    if native:
        # setuptools packs whatever the build folder holds: a module compiled by an earlier build and
        # since dropped from NATIVE_MODULES (or renamed) would ship too, and fail to import.
        shutil.rmtree("build/native", ignore_errors=True)
    with _building(native):
        return str(_setuptools.build_wheel(wheel_directory, config_settings, metadata_directory))


def _refuse_native_editable() -> None:
    if _native(default=False):
        raise SystemExit(
            "TOSENGINE_NATIVE=1 builds compiled modules, and an editable install would import them instead "
            "of the sources you edit: build a wheel instead (pip wheel . is native by default), or unset it"
        )


def get_requires_for_build_editable(config_settings: dict[str, Any] | None = None) -> list[str]:
    """setuptools' requirements for an editable install (refused when a native one is asked for: the
    first hook a frontend calls, so the reason comes first)."""
    _refuse_native_editable()
    return list(_pure(_setuptools.get_requires_for_build_editable, config_settings))


def prepare_metadata_for_build_editable(metadata_directory: str, config_settings: dict[str, Any] | None = None) -> str:
    """setuptools' metadata for an editable install."""
    return str(_pure(_setuptools.prepare_metadata_for_build_editable, metadata_directory, config_settings))


def build_editable(
    wheel_directory: str, config_settings: dict[str, Any] | None = None, metadata_directory: str | None = None
) -> str:
    """setuptools' editable install: pure Python, and refused when a native one is asked for."""
    _refuse_native_editable()
    return str(_pure(_setuptools.build_editable, wheel_directory, config_settings, metadata_directory))


def get_requires_for_build_sdist(config_settings: dict[str, Any] | None = None) -> list[str]:
    """setuptools' requirements for an sdist (sources only, whatever TOSENGINE_NATIVE says)."""
    return list(_pure(_setuptools.get_requires_for_build_sdist, config_settings))


def build_sdist(sdist_directory: str, config_settings: dict[str, Any] | None = None) -> str:
    """setuptools' sdist: the sources, which build natively or not where they are installed."""
    return str(_pure(_setuptools.build_sdist, sdist_directory, config_settings))
