"""`check` on the options every rule kind shares: subject, once_per, and strings joined with +."""

from __future__ import annotations

import pytest

from tosengine import check_sources
from tosengine.policy.sources import Source

BASE = """
policy: p
clause: c
{policy_extra}
rules:
  - id: one
    match: event.type == "a"
{rule_extra}
  - id: two
    sequence:
      - first: event.type == "a"
      - then: event.type == "b"
"""


def _diags(policy_extra: str = "", rule_extra: str = "") -> list[tuple[int, str, str]]:
    text = BASE.format(policy_extra=policy_extra, rule_extra=rule_extra)
    _, diags = check_sources([Source("p.yaml", text)])
    return [(d.span.line, d.code, d.message) for d in diags]


def test_a_valid_subject_and_once_per_check() -> None:
    assert _diags(rule_extra="    subject: '\"origin:\" + event.data.origin'\n    once_per: 1d") == []


def test_once_per_on_a_rule_that_records_no_violation_is_refused() -> None:
    diags = _diags(rule_extra="    emit: {fact: x.y}\n    violation: false\n    once_per: 1d")
    assert [(code, "violation: false" in msg) for _, code, msg in diags] == [("invalid-value", True)]


@pytest.mark.parametrize("bad", ["0s", "1w", "99999999d", "soon"])
def test_once_per_is_a_positive_bounded_duration(bad: str) -> None:
    assert [code for _, code, _ in _diags(rule_extra=f"    once_per: {bad}")] == ["invalid-value"]


def test_a_subject_reading_a_name_the_rule_lacks_says_what_is_there() -> None:
    diags = _diags(rule_extra="    subject: then.subject")
    assert len(diags) == 1 and diags[0][1] == "unknown-name" and "`then`" in diags[0][2]


def test_a_policy_subject_must_be_valid_in_every_rule_and_names_the_rule_that_cannot() -> None:
    diags = _diags(policy_extra="subject: first.subject")
    assert len(diags) == 1
    line, code, msg = diags[0]
    assert code == "unknown-name" and "rule `one`" in msg and line == 4


def test_strings_join_with_plus_but_not_with_numbers() -> None:
    assert _diags(rule_extra='    subject: \'"a:" + "b"\'') == []
    diags = _diags(rule_extra="    subject: '\"a:\" + 1'")
    assert [code for _, code, _ in diags] == ["type-mismatch"]
