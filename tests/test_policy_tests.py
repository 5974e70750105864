"""`tosengine test`: authors' *_test.yaml cases, their diffs, and rule coverage."""

from __future__ import annotations

from pathlib import Path

from tests.support import tosengine

ROOT = Path(__file__).resolve().parents[1]

POLICY = """policy: no-scraping
title: No scraping
clause: You will not collect data by automated means.
rules:
  - id: headless
    match: event.type == "account.profile_view" and event.data.client == "headless"
  - id: never-fires
    match: event.type == "nothing.ever"
"""

TESTS = """tests:
  - name: headless views are caught
    events:
      - {id: v1, type: account.profile_view, time: "+0s", subject: "account:1", data: {client: headless}}
    expect:
      - {rule: headless, subject: "account:1", evidence: [v1]}

  - name: this case expects the wrong subject
    events:
      - {id: v2, type: account.profile_view, time: "+1m", subject: "account:2", data: {client: headless}}
    expect:
      - {rule: headless, subject: "account:3"}
"""


def test_the_default_pack_passes_its_tests_with_every_rule_covered() -> None:
    p = tosengine("test", str(ROOT / "policies"), "--coverage")
    assert p.returncode == 0, p.stdout + p.stderr
    assert " 0 failed" in p.stdout
    total = p.stdout.split("coverage: ")[1].split()[0]
    covered, rules = total.split("/")
    assert covered == rules and int(rules) >= 11


def test_one_failing_case_exits_1_and_shows_only_its_diff(tmp_path: Path) -> None:
    (tmp_path / "no-scraping.yaml").write_text(POLICY, encoding="utf-8")
    (tmp_path / "no-scraping_test.yaml").write_text(TESTS, encoding="utf-8")
    p = tosengine("test", str(tmp_path), "--coverage")
    assert p.returncode == 1
    assert "1 passed, 1 failed" in p.stdout
    assert f"{tmp_path / 'no-scraping_test.yaml'}:8:5: FAIL this case expects the wrong subject" in p.stdout
    assert "- expected (line 12) rule=no-scraping/headless subject=account:3" in p.stdout
    assert "nearest: no-scraping/headless with subject=account:2 (expected account:3)" in p.stdout
    # The whole violation: what a reader compares the expectation with.
    assert "no-scraping/headless  subject=account:2  key=account:2  severity=medium  action=warn" in p.stdout
    assert "evidence=[v2]" in p.stdout
    assert "headless views are caught" not in p.stdout
    assert "not covered: no-scraping/never-fires" in p.stdout


def test_expect_absent_reports_the_violation_that_should_not_be_there(tmp_path: Path) -> None:
    (tmp_path / "no-scraping.yaml").write_text(POLICY, encoding="utf-8")
    (tmp_path / "no-scraping_test.yaml").write_text(
        """tests:
  - name: apps are fine
    events:
      - {id: v1, type: account.profile_view, time: "2026-05-01T00:00:00Z", subject: "account:1",
         data: {client: headless}}
    expect_absent:
      - {rule: headless}
""",
        encoding="utf-8",
    )
    p = tosengine("test", str(tmp_path))
    assert p.returncode == 1
    assert "+ unexpected no-scraping/headless account:1 [v1]" in p.stdout
    assert "matches expect_absent (line 7) rule=no-scraping/headless" in p.stdout
