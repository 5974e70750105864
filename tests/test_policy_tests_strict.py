"""`tosengine test` checks its files as `check` checks policies: diagnostics at their lines, never a pass by mistake."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

from tests.support import policy_set, tosengine
from tosengine.policy.sources import Source
from tosengine.policy.testfile import check_test_file

POLICY = """policy: no-scraping
title: No scraping
clause: You will not collect data by automated means.
severity: high
action: restrict
rules:
  - id: headless
    match: event.type == "account.profile_view" and event.data.client == "headless"
  - id: old-rule
    match: event.type == "account.profile_view" and event.data.client == "curl"
    enabled: false
"""

# What a new user wrote (the report): misspelt keys and a misspelt rule used to give "2 passed".
NEW_USER = """tests:
  - name: headless views are caught
    evnts:
      - {id: v1, type: account.profile_view, time: "+0s", subject: "account:1", data: {client: headless}}
    expcet:
      - {rule: headless}
    expect_absent: [{rule: no-such-rule, sevrity: high}]

  - name: a burst, half a second apart
    events:
      - repeat: 3
        every: 0.5x
        event: {type: account.profile_view, subject: "account:2", data: {client: headless}}
      - {tpye: account.profile_view, time: "+1m", subject: "account:2"}
    expect:
      - {rule: headless, severity: hihg, evidence: [v9]}
      - {policy: no-scrapping, rule: headless}
      - {rule: old-rule}
"""


def write(tmp_path: Path, tests: str, policy: str = POLICY) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "no-scraping.yaml").write_text(policy, encoding="utf-8")
    (tmp_path / "no-scraping_test.yaml").write_text(tests, encoding="utf-8")
    return tmp_path


def test_a_new_users_mistakes_are_diagnostics_at_their_lines(
    tmp_path: Path, golden: Callable[[str, str], None]
) -> None:
    p = tosengine("test", str(write(tmp_path / "pol", NEW_USER).relative_to(tmp_path)), cwd=tmp_path)
    assert p.returncode == 1
    assert "Traceback" not in p.stdout + p.stderr
    # Each mistake at its line and column, with a did-you-mean where one is close.
    for where, what in [
        ("3:5", "error[unknown-field]: unknown field `evnts` in a case"),
        ("5:5", "error[unknown-field]: unknown field `expcet` in a case"),
        ("7:28", "error[unknown-name]: policy `no-scraping` has no rule `no-such-rule`"),
        ("7:42", "error[unknown-field]: unknown field `sevrity` in an expectation"),
        ("12:16", "error[invalid-value]: `every` is a duration"),
        ("14:10", "error[unknown-field]: unknown event attribute `tpye`"),
        ("16:36", "error[invalid-value]: `severity` must be one of low, medium, high, critical"),
        ("16:53", "error[unknown-name]: no event of this case has id `v9`"),
        ("17:18", "error[unknown-name]: no policy `no-scrapping` here"),
        ("18:16", "warning[disabled-rule]: rule `no-scraping/old-rule` is disabled"),
    ]:
        assert f"pol/no-scraping_test.yaml:{where}: {what}" in p.stdout, (where, p.stdout)
    for hint in ("`events`", "`expect`", "`severity`", "`type`", "`high`", "`no-scraping`"):
        assert f"did you mean {hint}?" in p.stdout
    assert p.stdout.rstrip().endswith("0 passed, 0 failed, 9 error(s) in 1 test file(s) that did not run")
    golden("policy-tests-broken.txt", p.stdout)


def test_a_misspelt_rule_in_expect_absent_can_no_longer_pass(tmp_path: Path) -> None:
    tests = """tests:
  - name: nothing headless here
    events:
      - {id: v1, type: account.profile_view, time: "+0s", subject: "account:1", data: {client: headless}}
    expect_absent: [{rule: headles}]
"""
    p = tosengine("test", str(write(tmp_path, tests)))
    assert p.returncode == 1
    assert "error[unknown-name]: policy `no-scraping` has no rule `headles`" in p.stdout
    assert "did you mean `headless`?" in p.stdout


def test_sub_second_durations_are_read_as_in_policies(tmp_path: Path) -> None:
    tests = """tests:
  - name: three views half a second apart
    start: "2026-05-01T00:00:00Z"
    events:
      - repeat: 3
        every: 0.5s
        event: {id: "v{i}", type: account.profile_view, subject: "account:1", data: {client: headless}}
      - {id: w, type: account.profile_view, time: "+1s250ms", subject: "account:2", data: {client: headless}}
    expect:
      - {rule: headless, evidence: [v1], time: "2026-05-01T00:00:00.5Z"}
      - {rule: headless, evidence: [v2], time: "+1s"}
      - {rule: headless, evidence: [w], time: "+1250ms"}
"""
    p = tosengine("test", str(write(tmp_path, tests)))
    assert p.returncode == 0, p.stdout
    assert "1 passed, 0 failed" in p.stdout


def test_a_failure_shows_the_whole_violation_action_and_severity_included(tmp_path: Path) -> None:
    tests = """tests:
  - name: the rule is expected to warn
    events:
      - {id: v1, type: account.profile_view, time: "+0s", subject: "account:1", data: {client: headless}}
    expect:
      - {rule: headless, subject: "account:1", action: warn, severity: low}
"""
    p = tosengine("test", str(write(tmp_path, tests)))
    assert p.returncode == 1
    assert "- expected (line 6) rule=no-scraping/headless subject=account:1 action=warn severity=low" in p.stdout
    assert (
        "nearest: no-scraping/headless with action=restrict (expected warn), severity=high (expected low)" in p.stdout
    )
    assert (
        "no-scraping/headless  subject=account:1  key=account:1  severity=high  action=restrict  mode=enforce  "
        "ladder_step=0" in p.stdout
    )
    assert "time=2026-01-01T00:00:00Z  evidence=[v1]  id=" in p.stdout


def test_a_malformed_file_is_a_diagnostic_not_a_crash(tmp_path: Path) -> None:
    for text, where, code in [
        ("tests: [\n", "2:1", "yaml-syntax"),
        ("tests: 3\n", "1:8", "missing-field"),
        ("- just a list\n", "1:1", "not-a-mapping"),
        ("tests:\n  - [a, b]\n", "2:5", "not-a-mapping"),
        ("tests:\n  - name: x\n    events: [{id: e, type: t.t, time: soon, subject: 'a:1'}]\n    expect: []\n", "3:39",
         "invalid-value"),
    ]:  # fmt: skip
        p = tosengine("test", str(write(tmp_path, text)))
        assert p.returncode == 1, text
        assert "Traceback" not in p.stdout + p.stderr
        assert f"no-scraping_test.yaml:{where}: error[{code}]" in p.stdout, (text, p.stdout)


def test_run_verbose_and_junit_xml(tmp_path: Path) -> None:
    tests = """tests:
  - name: headless views are caught
    events:
      - {id: v1, type: account.profile_view, time: "+0s", subject: "account:1", data: {client: headless}}
    expect: [{rule: headless, evidence: [v1]}]
  - name: apps are fine
    events:
      - {id: v2, type: account.profile_view, time: "+0s", subject: "account:1", data: {client: headless}}
    expect_absent: [{rule: headless}]
"""
    d = write(tmp_path / "p", tests)
    p = tosengine("test", str(d), "--run", "^headless", "-v", "--junit-xml", str(tmp_path / "j.xml"))
    assert p.returncode == 0, p.stdout
    assert "PASS  headless views are caught" in p.stdout
    assert "apps are fine" not in p.stdout
    assert "1 passed, 0 failed, 1 not run (--run)" in p.stdout
    p = tosengine("test", str(d), "-v", "--junit-xml", str(tmp_path / "j.xml"))
    assert p.returncode == 1
    assert "FAIL  apps are fine" in p.stdout
    suite = ET.parse(tmp_path / "j.xml").getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("2", "1", "0")
    failed = [c for c in suite.findall("testcase") if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["apps are fine"]
    assert "+ unexpected no-scraping/headless account:1 [v2]" in (failed[0].find("failure").text or "")  # type: ignore[union-attr]
    p = tosengine("test", str(d), "--run", "(")
    assert p.returncode == 2 and "not a regular expression" in p.stderr


def test_junit_xml_reports_a_broken_file_as_an_error(tmp_path: Path) -> None:
    d = write(tmp_path / "p", NEW_USER)
    tosengine("test", str(d), "--junit-xml", str(tmp_path / "j.xml"))
    suite = ET.parse(tmp_path / "j.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("errors") == "1"
    err = suite.find("testcase/error")
    assert err is not None and "unknown field `evnts`" in (err.text or "")


def test_a_file_beside_no_policy_names_its_rules_in_full() -> None:
    policies = policy_set(POLICY)
    src = Source(
        "elsewhere_test.yaml",
        "tests:\n  - name: a\n    events: []\n    expect: [{rule: headless}, {rule: no-scraping/headless}]\n",
    )
    tf = check_test_file(src, policies, None)
    assert [(d.span.line, d.span.col, d.code) for d in tf.diagnostics] == [(4, 21, "unknown-name")]
    assert "names its policy" in tf.diagnostics[0].message and not tf.cases


def test_the_checked_cases_carry_full_rule_ids_and_times() -> None:
    policies = policy_set(POLICY)
    src = Source(
        "no-scraping_test.yaml",
        'tests:\n  - name: a\n    start: "2026-02-01T00:00:00Z"\n    events:\n'
        '      - {id: v1, type: account.profile_view, time: "+90s", subject: "account:1"}\n'
        '    advance: "+1d"\n    expect: [{rule: headless, evidence: [v1], time: "+90s"}]\n',
    )
    tf = check_test_file(src, policies, "no-scraping")
    assert tf.ok, [d.render() for d in tf.diagnostics]
    (case,) = tf.cases
    assert case.events[0]["time"] == "2026-02-01T00:01:30+00:00"
    assert case.until is not None and case.until.isoformat() == "2026-02-02T00:01:30+00:00"
    (exp,) = case.expect
    assert exp.pattern["rule"] == "no-scraping/headless" and exp.pattern["policy"] == "no-scraping"
    assert exp.span.line == 7
