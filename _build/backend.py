"""The in-tree build backend: setuptools', plus mypy when a native build is asked for (setup.py).

An editable install of a native build is refused: its compiled modules would sit beside the sources
and be imported instead of them, so an edit to one of them would silently not take effect.
"""

from __future__ import annotations

import os
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403 - every other hook is setuptools' own

# The mypy (and so mypyc) that compiles the native build: pinned, so that a wheel is reproducible.
MYPYC = "mypy==2.4.1"


def _native() -> bool:
    return os.environ.get("TOSENGINE_NATIVE") == "1"


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    """setuptools' requirements, and mypy for a native build."""
    if not _native():
        return list(_setuptools.get_requires_for_build_wheel(config_settings))
    # setuptools runs setup.py to find its requirements, and a native setup.py needs mypyc, which is
    # what is being asked for: ask as a plain build, then add it.
    os.environ.pop("TOSENGINE_NATIVE")
    try:
        return [*_setuptools.get_requires_for_build_wheel(config_settings), MYPYC]
    finally:
        os.environ["TOSENGINE_NATIVE"] = "1"


def get_requires_for_build_editable(config_settings: dict[str, Any] | None = None) -> list[str]:
    """setuptools' requirements for an editable install (never native: see build_editable)."""
    return list(_setuptools.get_requires_for_build_editable(config_settings))


def build_editable(
    wheel_directory: str, config_settings: dict[str, Any] | None = None, metadata_directory: str | None = None
) -> str:
    """setuptools' editable install, refused for a native build."""
    if _native():
        raise SystemExit(
            "TOSENGINE_NATIVE=1 builds compiled modules, and an editable install would import them instead "
            "of the sources you edit: build a wheel instead (TOSENGINE_NATIVE=1 pip wheel .), or unset it"
        )
    return str(_setuptools.build_editable(wheel_directory, config_settings, metadata_directory))
