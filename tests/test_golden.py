"""Golden files for everything an author or an investigator reads: diagnostics and explanations."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tosengine(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tosengine", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_five_broken_files_give_every_diagnostic_in_one_run(golden: Callable[[str, str], None]) -> None:
    p = tosengine("check", "tests/golden/broken")
    assert p.returncode == 1
    assert "Traceback" not in p.stdout + p.stderr
    codes = re.findall(r"error\[([a-z-]+)\]", p.stdout)
    assert {"yaml-syntax", "unknown-field", "unknown-name", "fact-cycle", "type-mismatch"} <= set(codes)
    golden("broken.txt", p.stdout)


def test_diagnostics_as_json(golden: Callable[[str, str], None]) -> None:
    p = tosengine("check", "tests/golden/broken", "--format", "json")
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    assert len({r["path"] for r in rows}) == 5  # every broken file, in one run
    where = [(r["path"], r["line"], r["col"]) for r in rows]
    assert where == sorted(where)  # sorted by file, then position
    golden("broken.jsonl", p.stdout)


def _explain(tmp_path: Path, rule: str) -> str:
    db = f"sqlite:///{tmp_path / 'q.db'}"
    tosengine("replay", "examples/quickstart/events.jsonl", "--policies", "examples/quickstart/policies", "--db", db)
    listed = tosengine("audit", "list", "--db", db, "--format", "json").stdout.splitlines()
    vid = next(json.loads(x)["id"] for x in listed if json.loads(x)["rule"].endswith(rule))
    out = tosengine("explain", vid, "--db", db).stdout
    return re.sub(r"\(recorded [^)]*\)", "(recorded <time>)", out)


def test_explain_an_unanswered_request(tmp_path: Path, golden: Callable[[str, str], None]) -> None:
    out = _explain(tmp_path, "/info-request-unanswered")
    assert "deadline 2026-03-08T10:00:00Z passed" in out and 'after.data.case_id = "IR-1"' in out
    golden("explain-expect.txt", out)


def test_explain_a_match_masks_sensitive_fields(tmp_path: Path, golden: Callable[[str, str], None]) -> None:
    out = _explain(tmp_path, "/offsite-login")
    assert 'data.origin = "massroot8.example"' in out and "hunter2" not in out
    golden("explain-match.txt", out)
