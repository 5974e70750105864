"""The CLI as a user runs it: real subprocesses of `python -m tosengine`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

GOOD = """policy: no-scraping
title: No scraping
clause: You will not collect data by automated means.
severity: high
action: restrict
rules:
  - id: headless
    match: event.type == "account.profile_view" and event.data.client == "headless"
    message: "{event.subject} viewed {event.data.target} headless"
  - id: unanswered
    expect:
      after: event.type == "enforcement.info_request"
      fulfilled_by: event.type == "developer.info_response"
      within: 1d
"""


def tosengine(*args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tosengine", *args], input=stdin, capture_output=True, text=True, cwd=cwd, timeout=120
    )


def write_policies(tmp_path: Path, text: str = GOOD) -> Path:
    d = tmp_path / "policies"
    d.mkdir()
    (d / "no-scraping.yaml").write_text(text, encoding="utf-8")
    return d


def test_check_valid_directory_exits_0(tmp_path: Path) -> None:
    p = tosengine("check", str(write_policies(tmp_path)))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "1 policies, 2 rules" in p.stdout


def test_check_reports_every_problem_with_location_and_exits_1(tmp_path: Path) -> None:
    bad = (
        GOOD.replace('event.data.client == "headless"', 'event.data.client == "headless" and lowr(x)')
        .replace("within: 1d", "within: 0d")
        .replace("severity: high", "severity: hihg")
    )
    p = tosengine("check", str(write_policies(tmp_path, bad)))
    assert p.returncode == 1
    lines = [line for line in p.stdout.splitlines() if ": error[" in line]
    codes = [line.split("error[")[1].split("]")[0] for line in lines]
    assert sorted(codes) == ["invalid-value", "invalid-value", "unknown-function", "unknown-name"], p.stdout
    assert all(line.startswith(str(tmp_path / "policies" / "no-scraping.yaml") + ":") for line in lines)
    assert "did you mean `high`?" in p.stdout and "did you mean `lower`?" in p.stdout
    assert "Traceback" not in p.stdout + p.stderr


def test_check_json_diagnostics(tmp_path: Path) -> None:
    p = tosengine("check", str(write_policies(tmp_path, "policy: x\nrules: [\n")), "--format", "json")
    assert p.returncode == 1
    diag = json.loads(p.stdout.splitlines()[0])
    assert diag["code"] == "yaml-syntax" and diag["line"] >= 2


def test_replay_json_output_and_rejected_lines(tmp_path: Path) -> None:
    policies = write_policies(tmp_path)
    events = [
        {
            "id": "v1",
            "type": "account.profile_view",
            "time": "2026-01-01T00:00:00Z",
            "subject": "account:1",
            "data": {"client": "headless", "target": "account:9"},
        },
        "not json",
        {"id": "v2", "type": "account.profile_view", "time": "2026-01-01", "subject": "account:1"},
        {"id": "q1", "type": "enforcement.info_request", "time": "2026-01-01T01:00:00Z", "subject": "developer:4"},
    ]
    f = tmp_path / "events.jsonl"
    f.write_text("".join((e if isinstance(e, str) else json.dumps(e)) + "\n" for e in events), encoding="utf-8")
    p = tosengine(
        "replay",
        str(f),
        "--policies",
        str(policies),
        "--dry-run",
        "--format",
        "json",
        "--until",
        "2026-01-03T00:00:00Z",
    )
    assert p.returncode == 1, p.stderr  # two lines were rejected
    assert f"{f}:2: rejected:" in p.stderr and f"{f}:3: rejected: field `time`" in p.stderr
    got = [json.loads(line) for line in p.stdout.splitlines()]
    assert [(v["rule"], v["subject"], v["evidence"]) for v in got] == [
        ("no-scraping/headless", "account:1", ["v1"]),
        ("no-scraping/unanswered", "developer:4", ["q1"]),
    ]
    first = got[0]
    for field in (
        "id",
        "policy",
        "rule",
        "subject",
        "severity",
        "action",
        "time",
        "evidence",
        "message",
        "clause",
        "policy_version",
    ):
        assert field in first
    assert first["message"] == "account:1 viewed account:9 headless"
    assert got[1]["time"] == "2026-01-02T01:00:00Z"


def test_replay_from_stdin_with_table(tmp_path: Path) -> None:
    policies = write_policies(tmp_path)
    line = json.dumps(
        {
            "id": "v1",
            "type": "account.profile_view",
            "time": "2026-01-01T00:00:00Z",
            "subject": "account:1",
            "data": {"client": "headless"},
        }
    )
    p = tosengine("replay", "-", "--policies", str(policies), "--dry-run", stdin=line + "\n")
    assert p.returncode == 0, p.stderr
    assert "no-scraping/headless" in p.stdout and "account:1" in p.stdout


def test_replay_with_broken_policies_prints_diagnostics(tmp_path: Path) -> None:
    policies = write_policies(tmp_path, GOOD.replace("rules:", "rulez:"))
    p = tosengine("replay", "-", "--policies", str(policies), "--dry-run", stdin="")
    assert p.returncode == 2
    assert "error[unknown-field]" in p.stderr and "did you mean `rules`?" in p.stderr


def test_reading_a_missing_audit_database_is_an_error_not_a_new_file(tmp_path: Path) -> None:
    for args in (["audit", "list"], ["audit", "verify"], ["explain", "0" * 32]):
        p = tosengine(*args, "--db", f"sqlite:///{tmp_path / 'typo.db'}")
        assert p.returncode == 2 and "no audit database" in p.stderr
    assert not (tmp_path / "typo.db").exists()
