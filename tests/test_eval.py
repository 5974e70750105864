"""`tosengine eval`: one event against the policies, rule by rule, as a user reads it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support import tosengine

ROOT = Path(__file__).resolve().parents[1]

POLICY = """policy: kinds
title: Every kind
clause: Be nice.
severity: high
action: restrict
sensitive: [data.password]
rules:
  - id: offsite
    match: event.type == "account.login" and event.data.origin != "facebook.com" and exists(event.data.password)
  - id: burst
    threshold: {match: event.type == "account.login", count: 5, within: 10m, distinct: event.data.origin}
  - id: leak
    sequence:
      - created: event.type == "developer.api_key_created"
      - leaked: event.type == "developer.api_key_pasted" and event.data.key_id == created.data.key_id
    within: 1d
  - id: answer
    expect:
      after: event.type == "enforcement.info_request"
      fulfilled_by: event.type == "developer.info_response" and event.data.case_id == after.data.case_id
      within: days(after.data.due_days)
  - id: by-operator
    match: event.type == "account.login"
    key: event.data.operator
    emit: {fact: login.by_operator, data: {account: event.subject}}
    violation: false
  - id: operator-logins
    match: fact.type == "login.by_operator"
  - id: retired
    match: event.type == "account.login"
    enabled: false
  - id: trial
    match: event.type == "account.login"
    mode: shadow
  - id: weak-password
    match: event.type == "account.login" and event.data.password == "letmein"
"""


def event(etype: str, **data: Any) -> str:
    body = {"id": "e1", "type": etype, "time": "2026-03-01T09:00:00Z", "subject": "account:1", "data": data}
    return json.dumps(body)


def traces(tmp_path: Path, ev: str) -> dict[str, dict[str, Any]]:
    (tmp_path / "kinds.yaml").write_text(POLICY, encoding="utf-8")
    p = tosengine("eval", "--policies", str(tmp_path), ev, "--format", "json")
    assert p.returncode == 0, p.stderr
    return {r["rule"]: r for r in json.loads(p.stdout)["rules"]}


def test_a_login_shows_every_rule_and_why(tmp_path: Path) -> None:
    (tmp_path / "kinds.yaml").write_text(POLICY, encoding="utf-8")
    ev = event("account.login", origin="evil.example", password="hunter2", operator="operator:x")
    p = tosengine("eval", "--policies", str(tmp_path), ev)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert out.startswith("event e1  account.login  account:1  2026-03-01T09:00:00Z\n9 rule(s) in ")
    assert "MATCHED    kinds/offsite" in out and "violation against account:1: high, restrict" in out
    assert "matches the threshold's condition: counts 1 of 5 distinct values of event.data.origin within 10m" in out
    assert 'failed: event.type == "developer.api_key_created"\n' in out
    assert '  event.type = "account.login"' in out
    assert "emits a `login.by_operator` fact under key operator:x" in out
    assert "fired on a fact this event led to" in out  # kinds/operator-logins, through the fact
    assert "disabled   kinds/retired" in out
    assert "(match) [shadow]" in next(line for line in out.splitlines() if "kinds/trial" in line)
    assert "violation against account:1: high, restrict (shadow: recorded, acted on by no one)" in out
    assert 'event.data.password = "<sensitive>"' in out  # weak-password's failed condition, not its value
    assert "hunter2" not in out
    assert out.endswith("5 of 9 rule(s) took the event\n")


def test_what_one_event_does_to_each_kind(tmp_path: Path) -> None:
    t = traces(tmp_path, event("developer.api_key_created", key_id="k1"))
    assert t["kinds/leak"]["outcome"] == "starts"
    assert (
        t["kinds/leak"]["detail"]
        == "would start step `created` (1 of 2) under key account:1; next: `leaked`, all within 1d"
    )
    t = traces(tmp_path, event("developer.api_key_pasted", key_id="k1"))
    assert t["kinds/leak"]["outcome"] == "no-match"
    assert t["kinds/leak"]["notes"] == [
        "could take step `leaked` (2 of 2) of a sequence already started, if event.data.key_id == created.data.key_id"
    ]
    t = traces(tmp_path, event("enforcement.info_request", case_id="C-1", due_days=7))
    assert t["kinds/answer"]["outcome"] == "opens"
    assert "due 2026-03-08T09:00:00Z (7d after this event)" in t["kinds/answer"]["detail"]
    t = traces(tmp_path, event("enforcement.info_request", case_id="C-1"))
    assert t["kinds/answer"]["failed"] == {"condition": "days(after.data.due_days)", "values": {}}
    t = traces(tmp_path, event("developer.info_response", case_id="C-1"))
    assert t["kinds/answer"]["notes"] == [
        "could fulfil an obligation opened earlier under the same key, if event.data.case_id == after.data.case_id"
    ]


def test_the_first_failed_condition_is_named_with_its_value(tmp_path: Path) -> None:
    t = traces(tmp_path, event("account.login", origin="facebook.com", password="x"))
    failed = t["kinds/offsite"]["failed"]
    assert failed == {
        "condition": 'event.data.origin != "facebook.com"',
        "values": {"event.data.origin": "facebook.com"},
    }
    t = traces(tmp_path, event("account.login", origin="facebook.com", password="hunter2"))
    assert t["kinds/offsite"]["failed"]["values"] == {"event.data.origin": "facebook.com"}
    t = traces(tmp_path, event("account.login", origin="evil.example"))
    assert t["kinds/offsite"]["failed"] == {
        "condition": "exists(event.data.password)",
        "values": {"event.data.password": None},
    }
    # No operator: the rule keyed by it matches but cannot take the event.
    assert t["kinds/by-operator"]["outcome"] == "no-key"
    assert "its key `event.data.operator` is absent" in t["kinds/by-operator"]["detail"]


def test_the_event_from_stdin_or_a_file_and_a_bad_event(tmp_path: Path) -> None:
    (tmp_path / "kinds.yaml").write_text(POLICY, encoding="utf-8")
    ev = event("account.login", origin="evil.example", password="x")
    p = tosengine("eval", "--policies", str(tmp_path), "--matched", stdin=ev)
    assert p.returncode == 0 and "kinds/offsite" in p.stdout and "kinds/leak" not in p.stdout
    (tmp_path / "e.json").write_text(ev, encoding="utf-8")
    p = tosengine("eval", "--policies", str(tmp_path), str(tmp_path / "e.json"), "--matched")
    assert p.returncode == 0 and "kinds/offsite" in p.stdout
    p = tosengine("eval", "--policies", str(tmp_path), '{"id": "e1", "type": "x.y", "subject": "account:1"}')
    assert p.returncode == 1
    assert "not a valid event" in p.stderr and "time" in p.stderr and "Traceback" not in p.stderr


def test_eval_on_the_default_pack_and_a_seed_event() -> None:
    line = (ROOT / "examples" / "seed-cases.jsonl").read_text(encoding="utf-8").splitlines()[0]
    p = tosengine("eval", "--policies", str(ROOT / "policies"), line, "--format", "json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert len(doc["rules"]) == 11
    assert all(r["matched"] is False for r in doc["rules"])
