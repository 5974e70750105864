"""Stage load (from git): `git:REV[:PATH]` -> the policy files at that revision, without a work tree.

`tosengine diff --base git:main` compares the policies of the working tree with those of `main`: the
files are read with `git ls-tree` and `git cat-file` into Sources, so nothing is checked out and the
work tree is never touched. PATH defaults to the candidate's directory, relative to the repository.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tosengine.errors import TosEngineError
from tosengine.policy.sources import SCHEMA_SUFFIXES, PolicyFiles, Source

__all__ = ["GitSourceError", "parse_git_spec", "read_git_policies"]

_SYMLINK = "120000"


class GitSourceError(TosEngineError):
    """The revision or path cannot be read from git (not a repository, unknown revision, no files)."""


def _git(cwd: Path, *args: str, stdin: bytes | None = None) -> bytes:
    try:
        p = subprocess.run(["git", "-C", str(cwd), *args], input=stdin, capture_output=True, check=False, timeout=120)
    except FileNotFoundError:
        raise GitSourceError("git is not installed: a git: base needs it") from None
    if p.returncode != 0:
        raise GitSourceError(f"git {args[0]}: {p.stderr.decode('utf-8', 'replace').strip()}")
    return p.stdout


def parse_git_spec(spec: str) -> tuple[str, str | None]:
    """`git:REV[:PATH]` -> (REV, PATH or None)."""
    body = spec.removeprefix("git:")
    rev, _, path = body.partition(":")
    if not rev:
        raise GitSourceError(f"{spec!r}: expected git:REV or git:REV:PATH, e.g. git:main or git:HEAD~1:policies")
    return rev, (path.strip("/") or None) if path else None


def read_git_policies(spec: str, default_path: str | Path, cwd: str | Path = ".") -> tuple[PolicyFiles, str]:
    """The policy and event schema files under PATH at REV (`spec` is `git:REV[:PATH]`), and the full
    commit id. `default_path` (a directory, relative to `cwd` or absolute) is used when PATH is not given.
    Each Source is named `git:REV:path` so diagnostics say where it came from."""
    rev, path = parse_git_spec(spec)
    here = Path(cwd).resolve()
    root = Path(_git(here, "rev-parse", "--show-toplevel").decode().strip())
    try:
        commit = _git(root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").decode().strip()
    except GitSourceError:
        raise GitSourceError(f"{spec!r}: no revision {rev!r} in the git repository at {root}") from None
    if path is None:
        full = (here / default_path).resolve()
        rel = os.path.relpath(full, root)
        path = "policies" if rel.startswith("..") else rel.replace(os.sep, "/")
    listing = _git(root, "ls-tree", "-r", "-z", "--full-tree", commit, "--", path).split(b"\0")
    entries: list[tuple[str, str, str]] = []  # (mode, object id, path)
    for item in filter(None, listing):
        meta, _, name = item.decode("utf-8", "surrogateescape").partition("\t")
        mode, kind, oid = meta.split()
        if kind != "blob" or not name.endswith((".yaml", ".yml")):
            continue
        stem = name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        if stem.endswith("_test"):
            continue
        entries.append((mode, oid, name))
    if not entries:
        raise GitSourceError(f"no policy files under {path!r} at {rev} ({commit[:12]})")
    texts = _blobs(root, [oid for mode, oid, _ in entries if mode != _SYMLINK])
    out = PolicyFiles()
    for mode, oid, name in sorted(entries, key=lambda e: e[2]):
        label = f"git:{rev}:{name}"
        if mode == _SYMLINK:
            source = Source(label, "", "a symbolic link: policy files must be plain files inside the policy directory")
        else:
            source = Source(label, texts[oid])
        (out.schemas if name.endswith(SCHEMA_SUFFIXES) else out.sources).append(source)
    return out, commit


def _blobs(root: Path, oids: list[str]) -> dict[str, str]:
    """The contents of the blobs, read in one `git cat-file --batch`."""
    if not oids:
        return {}
    raw = _git(root, "cat-file", "--batch", stdin="".join(f"{o}\n" for o in oids).encode())
    out: dict[str, str] = {}
    pos = 0
    for oid in oids:
        end = raw.index(b"\n", pos)
        header = raw[pos:end].decode().split()  # "<oid> blob <size>"
        size = int(header[2])
        out[oid] = raw[end + 1 : end + 1 + size].decode("utf-8", "surrogateescape")
        pos = end + 1 + size + 1  # the blob, then a newline
    return out
