"""Stage load: a policy directory -> Source records (path, text, content hash = policy version)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SCHEMA_SUFFIXES", "Source", "read_schemas", "read_sources"]

# Event schema files live beside the policies but are not policies.
SCHEMA_SUFFIXES = (".schema.yaml", ".schema.yml")


@dataclass(frozen=True)
class Source:
    """One policy file as read from disk; `problem` says why it was not read (then `text` is empty)."""

    path: str
    text: str
    problem: str = ""

    @property
    def version(self) -> str:
        """The policy version: a content hash of the file, so any edit is a new version."""
        return "sha256:" + hashlib.sha256(self.text.encode("utf-8")).hexdigest()[:16]


def _read(root: Path, p: Path) -> Source:
    """A file of the policy directory; a symlink, or a file outside the directory, is not read (a policy
    directory must not make `check` print the lines of a credentials file)."""
    if p.is_symlink() or any(parent.is_symlink() for parent in p.relative_to(root).parents if parent != Path(".")):
        return Source(str(p), "", "a symbolic link: policy files must be plain files inside the policy directory")
    if not p.resolve().is_relative_to(root.resolve()):
        return Source(str(p), "", "outside the policy directory")
    return Source(str(p), p.read_text(encoding="utf-8", errors="surrogateescape"))


def read_sources(directory: str | Path) -> list[Source]:
    """Every `*.yaml`/`*.yml` policy file under `directory` (not `*_test.yaml`), sorted by path. A file
    that is one (a directory file is a symlink, for instance) is a Source with a `problem`, which check
    reports; it is never read."""
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"policy directory not found: {root}")
    files = sorted(
        p
        for ext in ("*.yaml", "*.yml")
        for p in root.rglob(ext)
        if not p.stem.endswith("_test") and not p.name.endswith(SCHEMA_SUFFIXES) and (p.is_file() or p.is_symlink())
    )
    return [_read(root, p) for p in files]


def read_schemas(directory: str | Path) -> list[Source]:
    """Every `*.schema.yaml` event-schema file under `directory`, sorted by path (symlinks as above)."""
    root = Path(directory)
    files = sorted(p for ext in SCHEMA_SUFFIXES for p in root.rglob(f"*{ext}") if p.is_file() or p.is_symlink())
    return [_read(root, p) for p in files]
