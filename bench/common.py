"""What the benchmarks share: the repository root, the generated stream, a throwaway PostgreSQL schema."""

from __future__ import annotations

import compileall
import os
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text

__all__ = ["ROOT", "byte_compile", "drop_bytecode", "generate", "native_build", "pg_schema"]

ROOT = Path(__file__).resolve().parents[1]


def byte_compile() -> Path:
    """Byte-compile tosengine's modules where they are imported from, as pip does when it installs the
    package and as Python does on a module's first import wherever it may write bytecode; the directory.

    The benches time `tosengine replay` as a subprocess, start-up included. On a machine that sets
    PYTHONDONTWRITEBYTECODE (the one docs/performance.md reports), nothing ever writes tosengine's
    bytecode in an editable install, so every run would compile each module from source again: about
    60 ms of a replay's start-up that an installed engine does not pay. Unchanged modules are skipped."""
    where = _package()
    if not compileall.compile_dir(where, quiet=1):
        raise RuntimeError(f"could not byte-compile {where}")
    return where


def drop_bytecode() -> Path:
    """Remove tosengine's byte-compiled modules (its `__pycache__` directories); the directory. With
    PYTHONDONTWRITEBYTECODE set, each replay then compiles them from source, as the benches measured
    before they byte-compiled them (`python -m bench --from-source`)."""
    import shutil

    where = _package()
    for cache in where.rglob("__pycache__"):
        shutil.rmtree(cache)
    return where


def native_build(into: Path) -> Path:
    """Build this checkout's native wheel (TOSENGINE_NATIVE=1: tosengine/_native.py) and unpack it, byte-
    compiled as pip would install it, into `into`/site; that folder. A subprocess started there with it
    first on PYTHONPATH runs the compiled build (run elsewhere, `python -m` would find the checkout's
    sources in its working folder)."""
    wheels, site = into / "wheel", into / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(ROOT)],
        env={**os.environ, "TOSENGINE_NATIVE": "1"},
        check=True,
    )
    (wheel,) = wheels.glob("tosengine-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    compileall.compile_dir(site / "tosengine", quiet=1)
    return site


def _package() -> Path:
    import tosengine

    return Path(tosengine.__file__).parent


def generate(
    events: int,
    *,
    seed: int | None = None,
    days: float | None = None,
    accounts: int | None = None,
    abuse_rate: float | None = None,
) -> list[str]:
    """The default pack's stream from examples/generate.py, as JSON lines: about `events` events, with
    the generator's own default for each option left out."""
    args = [sys.executable, str(ROOT / "examples" / "generate.py"), "--events", str(events)]
    for option, value in (("--accounts", accounts), ("--days", days), ("--seed", seed), ("--abuse-rate", abuse_rate)):
        if value is not None:
            args += [option, str(value)]
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout.splitlines()


@contextmanager
def pg_schema(base: str) -> Iterator[str]:
    """The URL of a new schema in the PostgreSQL database at `base`, dropped afterwards."""
    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base)
    with admin.begin() as c:
        c.execute(text(f"CREATE SCHEMA {name}"))
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{name}"
    finally:
        with admin.begin() as c:
            c.execute(text(f"DROP SCHEMA {name} CASCADE"))
        admin.dispose()
