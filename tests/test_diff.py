"""`tosengine diff`: two replays of the same events compared, as a CI job and a reviewer use it."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from tosengine.policy.check import check_policy_set
from tosengine.policy.sources import read_schemas, read_sources
from tosengine.runtime.engine import ruleset_hash

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "examples" / "seed-cases.jsonl"
QUICK = ROOT / "examples" / "quickstart"


def tosengine(*args: str, cwd: Path | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tosengine", *args], capture_output=True, text=True, timeout=600, cwd=cwd, input=stdin
    )


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


@pytest.fixture(scope="module")
def candidate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default pack with a change of every sort: a tuned threshold (added and removed), a severity
    (changed), a ladder that no longer counts a policy (actions changed), a policy removed, a rule added."""
    d = tmp_path_factory.mktemp("candidate") / "policies"
    shutil.copytree(ROOT / "policies", d, ignore=shutil.ignore_patterns("*_test.yaml"))
    edit(d / "fake-engagement.yaml", "burst_count: 60", "burst_count: 45")
    edit(d / "unauthorized-data-collection.yaml", "severity: high", "severity: critical")
    edit(d / "escalation.yaml", "credential-harvesting, data-scraping, unauthorized-data-collection,", "data-scraping,")
    (d / "credential-harvesting.yaml").unlink()
    edit(
        d / "data-scraping.yaml",
        "rules:\n",
        'rules:\n  - id: any-view\n    match: event.type == "account.profile_view"\n    tags: [experiment]\n',
    )
    return d


def _replay(policies: Path) -> dict[str, dict[str, Any]]:
    p = tosengine("replay", str(SEED), "--policies", str(policies), "--dry-run", "--format", "json")
    assert p.returncode == 0, p.stderr
    return {v["id"]: v for v in map(json.loads, p.stdout.splitlines()) if "repeat_of" not in v}


def test_diff_counts_per_rule_are_what_two_dry_run_replays_imply(candidate: Path) -> None:
    p = tosengine(
        "diff", str(SEED), "--base", str(ROOT / "policies"), "--candidate", str(candidate), "--format", "json"
    )
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    base, cand = _replay(ROOT / "policies"), _replay(candidate)
    want: dict[str, dict[str, int]] = defaultdict(
        lambda: dict.fromkeys(("base", "candidate", "both", "added", "removed", "changed"), 0)
    )
    for vid, v in base.items():
        want[v["rule"]]["base"] += 1
        if vid not in cand:
            want[v["rule"]]["removed"] += 1
        else:
            want[v["rule"]]["both"] += 1
            o = cand[vid]
            want[v["rule"]]["changed"] += (o["action"], o["severity"]) != (v["action"], v["severity"])
    for vid, v in cand.items():
        want[v["rule"]]["candidate"] += 1
        want[v["rule"]]["added"] += vid not in base
    got = {
        r: {k: row[k] for k in ("base", "candidate", "both", "added", "removed", "changed")}
        for r, row in report["rules"].items()
    }
    assert {r: c for r, c in got.items() if any(c.values())} == dict(want)
    # Every sort of change is there, so the comparison above means something.
    t = report["totals"]
    assert t["added"] and t["removed"] and t["changed"] and t["both"]
    assert report["rules"]["credential-harvesting/third-party-login-ring"]["in_candidate"] is False
    assert report["rules"]["data-scraping/any-view"]["in_base"] is False
    # The header: events, span, both ruleset hashes.
    assert (report["events"], report["rejected"]) == (3580, 0)
    assert (report["first"], report["last"]) == ("2026-03-02T00:00:00Z", "2026-03-21T23:59:58Z")
    for side, d in (("base", ROOT / "policies"), ("candidate", candidate)):
        assert report[side]["ruleset"] == ruleset_hash(check_policy_set(read_sources(d), read_schemas(d)))
    assert report["base"]["ruleset"] != report["candidate"]["ruleset"]
    # Per subject counts add up to the totals.
    for cell in ("base", "candidate", "added", "removed", "changed"):
        assert sum(s[cell] for s in report["subjects"].values()) == t[cell]


def test_samples_say_why_they_fired(candidate: Path) -> None:
    p = tosengine(
        "diff", str(SEED), "--base", str(ROOT / "policies"), "--candidate", str(candidate), "--format", "json"
    )
    rule = json.loads(p.stdout)["rules"]["unauthorized-data-collection/unapproved-sdk"]
    (sample,) = rule["samples"]["changed"][:1]
    assert (sample["base"]["severity"], sample["severity"]) == ("high", "critical")
    assert [
        "match",
        'event.type == "developer.data_access" and exists(event.data.sdk) and event.data.sdk not in approved_sdks',
    ] in sample["why"]["conditions"]
    assert sample["why"]["read"][0]["fields"]["data.sdk"] == "oneaudience-sdk"


def test_fail_on_sets_the_exit_status_for_ci(candidate: Path) -> None:
    args = ("diff", str(SEED), "--base", str(ROOT / "policies"), "--candidate", str(candidate))
    p = tosengine(*args, "--fail-on", "added>0,removed>1000")
    assert p.returncode == 1
    assert "tosengine diff: --fail-on added>0" in p.stderr and "removed>1000" not in p.stderr
    p = tosengine(*args, "--fail-on", "added>100000,changed>=100000")
    assert p.returncode == 0, p.stderr
    p = tosengine(*args, "--fail-on", "adds>1")
    assert p.returncode == 2 and "a condition is CELL>N" in p.stderr
    same = tosengine(
        "diff",
        str(SEED),
        "--base",
        str(ROOT / "policies"),
        "--candidate",
        str(ROOT / "policies"),
        "--fail-on",
        "added>0,removed>0,changed>0",
    )
    assert same.returncode == 0 and same.stdout.rstrip().endswith("no differences")


def test_markdown_for_a_pull_request(tmp_path: Path) -> None:
    cand = tmp_path / "cand"
    shutil.copytree(QUICK / "policies", cand)
    edit(cand / "no-password-collection.yaml", "severity: critical", "severity: high")
    events = tmp_path / "e.jsonl"
    events.write_text(
        (QUICK / "events.jsonl").read_text(encoding="utf-8").replace('"account:18"', '"account:a|b`<x>"'),
        encoding="utf-8",
    )
    p = tosengine(
        "diff", str(events), "--base", str(QUICK / "policies"), "--candidate", str(cand), "--format", "markdown"
    )
    assert p.returncode == 0, p.stderr
    md = p.stdout
    assert md.startswith("### tosengine diff\n\n**4 events** (2026-03-01T09:00:00Z .. 2026-03-09T00:00:00Z)")
    assert "**0 added**, **0 removed**, **2 changed**" in md
    assert "| `no-password-collection/offsite-login` | 1 | 1 | 1 | 0 | 0 | **~1** |  |" in md
    assert "| `account:a\\|b'<x>` |" in md  # a subject cannot break the table or inject HTML outside code
    assert "critical disable → high disable" in md and "<details>" in md


def test_base_from_a_git_revision_without_touching_the_work_tree(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(QUICK, repo)
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@x",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@x",
    }
    for cmd in (["init", "-q"], ["add", "."], ["commit", "-qm", "policies"]):
        subprocess.run(["git", *cmd], cwd=repo, check=True, env=env)
    edit(repo / "policies" / "no-password-collection.yaml", "action: disable", "action: restrict")
    before = (repo / "policies" / "no-password-collection.yaml").read_text(encoding="utf-8")
    for base in ("git:HEAD", "git:HEAD:policies"):
        p = tosengine("diff", "events.jsonl", "--base", base, "--candidate", "policies", "--format", "json", cwd=repo)
        assert p.returncode == 0, p.stderr
        report = json.loads(p.stdout)
        assert report["totals"]["changed"] == 2 and report["totals"]["both"] == 2
        assert report["base"]["label"].startswith(f"{base} (")
    assert (repo / "policies" / "no-password-collection.yaml").read_text(encoding="utf-8") == before
    status = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, check=True)
    assert status.stdout.split() == ["M", "policies/no-password-collection.yaml"]
    p = tosengine("diff", "events.jsonl", "--base", "git:no-such-branch", "--candidate", "policies", cwd=repo)
    assert p.returncode == 2 and "no revision 'no-such-branch'" in p.stderr


def test_tags_until_and_rejected_lines(tmp_path: Path, candidate: Path) -> None:
    p = tosengine(
        "diff",
        str(SEED),
        "--base",
        str(ROOT / "policies"),
        "--candidate",
        str(candidate),
        "--tag",
        "experiment",
        "--format",
        "json",
    )
    assert list(json.loads(p.stdout)["rules"]) == ["data-scraping/any-view"]
    # replay --tag prints the violations of the tagged rules only (and records all, without --dry-run).
    p = tosengine(
        "replay", str(SEED), "--policies", str(candidate), "--dry-run", "--format", "json", "--tag", "experiment"
    )
    rules = {json.loads(x)["rule"] for x in p.stdout.splitlines()}
    assert rules == {"data-scraping/any-view"} and "violation(s)" in p.stderr
    # A deadline after the last event fires only when the clock is moved past it.
    events = tmp_path / "e.jsonl"
    lines = (QUICK / "events.jsonl").read_text(encoding="utf-8").splitlines()
    events.write_text("\n".join([*lines[:3], "not json", '{"id": "x"}']) + "\n", encoding="utf-8")
    cand = tmp_path / "cand"
    shutil.copytree(QUICK / "policies", cand)
    edit(
        cand / "no-password-collection.yaml",
        "within: days(after.data.due_days)",
        "within: days(after.data.due_days + 1)",
    )
    args = ("diff", str(events), "--base", str(QUICK / "policies"), "--candidate", str(cand), "--format", "json")
    p = tosengine(*args)
    report = json.loads(p.stdout)
    assert report["totals"]["removed"] == 0 and (report["events"], report["rejected"]) == (3, 2)
    assert p.stderr.count("rejected:") == 2  # once, not once per side
    replay = tosengine("replay", str(events), "--policies", str(QUICK / "policies"), "--dry-run")
    assert "3 event(s) accepted, 2 rejected" in replay.stderr
    report = json.loads(tosengine(*args, "--until", "2026-03-08T12:00:00Z").stdout)
    assert report["totals"]["removed"] == 1 and report["until"] == "2026-03-08T12:00:00Z"


def _on_a_terminal(*args: str) -> tuple[str, str]:
    """Run with stderr on a pseudo-terminal and stdout to a file: (stdout, what the terminal showed)."""
    main, child = pty.openpty()
    with tempfile.TemporaryFile() as out:
        p = subprocess.Popen([sys.executable, "-m", "tosengine", *args], stdout=out, stderr=child, cwd=ROOT)
        os.close(child)
        shown = b""
        while True:
            try:
                chunk = os.read(main, 1 << 16)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        p.wait(timeout=300)
        os.close(main)
        out.seek(0)
        return out.read().decode(), shown.decode("utf-8", "replace")


def test_a_progress_bar_on_a_terminal_and_never_in_the_output(candidate: Path) -> None:
    out, shown = _on_a_terminal(
        "diff", str(SEED), "--base", "policies", "--candidate", str(candidate), "--format", "json"
    )
    assert "diff" in shown and "━" in shown  # rich's bar, on stderr
    assert json.loads(out)["events"] == 3580  # stdout is the document and nothing else
    out, shown = _on_a_terminal("replay", str(SEED), "--dry-run", "--format", "json")
    assert "replay" in shown and "━" in shown
    assert all(json.loads(line) for line in out.splitlines())
    # Not a terminal: no bar.
    p = tosengine(
        "diff", str(SEED), "--base", str(ROOT / "policies"), "--candidate", str(candidate), "--format", "json"
    )
    assert "━" not in p.stderr
