"""Stage load: a policy directory -> Source records (path, text, content hash = policy version)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SCHEMA_SUFFIXES", "PolicyFiles", "Source", "read_paths", "read_schemas", "read_sources"]

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


@dataclass
class PolicyFiles:
    """What `read_paths` found: the policy files, the event schema files that apply to them, and whether
    the set is `partial` (some path was a single file, so references to other policies -- the ladder's
    `counts` -- cannot be looked up)."""

    sources: list[Source] = field(default_factory=list)
    schemas: list[Source] = field(default_factory=list)
    partial: bool = False


def _nearest_schemas(path: Path) -> list[Source]:
    """The event schemas of a single policy file: those of the nearest directory, from the file's own up,
    that has any (a policy directory keeps them at its top); never above a repository's root."""
    for d in path.resolve().parents:
        found = read_schemas(d) if any(any(d.glob(f"*{suffix}")) for suffix in SCHEMA_SUFFIXES) else []
        if found or (d / ".git").exists():
            return found
    return []


def read_paths(paths: Sequence[str | Path]) -> PolicyFiles:
    """Policy files from directories (as `read_sources` reads them, with their schemas) and single files
    (with the schemas beside them); each file once. FileNotFoundError names a path that does not exist."""
    out = PolicyFiles()
    seen: set[Path] = set()
    for given in paths:
        p = Path(given)
        if p.is_dir():
            found, schemas = read_sources(p), read_schemas(p)
        elif p.is_file():
            out.partial = True
            if p.name.endswith(SCHEMA_SUFFIXES):
                found, schemas = [], [Source(str(p), p.read_text(encoding="utf-8", errors="surrogateescape"))]
            else:
                found = [Source(str(p), p.read_text(encoding="utf-8", errors="surrogateescape"))]
                schemas = _nearest_schemas(p)
        else:
            raise FileNotFoundError(f"no policy file or directory: {p}")
        for src in found:
            if Path(src.path).resolve() not in seen:
                seen.add(Path(src.path).resolve())
                out.sources.append(src)
        for sch in schemas:
            if Path(sch.path).resolve() not in seen:
                seen.add(Path(sch.path).resolve())
                out.schemas.append(sch)
    return out
