"""The oracle can fail: naive durable_rules compilations disagree with the reference; the Engine does not.

A differential test is only worth something if the thing it checks can be wrong in ways it notices. Each
test here hand-compiles a conformance semantics onto durable_rules *directly*, the way a first attempt
would (see ../shared/durable_rules/FINDINGS.md), runs the same policy and events through the reference
evaluator, and asserts

* the raw durable_rules result DIFFERS from the reference: comparing against the reference catches it;
* `tosengine.Engine` on the same policy and events EQUALS the reference: the engine's compilation
  avoids the defect.

This is the only test module that imports durable_rules; the product code reaches it only through
tosengine/runtime/matcher.py.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from durable import engine as dr_engine

from tosengine import Engine, check_sources
from tosengine.event_model import validate_event
from tosengine.events import parse_time
from tosengine.policy.model import CheckedPolicySet
from tosengine.policy.sources import Source
from tosengine.runtime.reference import evaluate_reference
from tosengine.violation import Violation

# What a raw result and the reference are compared on: (rule id, subject, evidence ids).
Found = tuple[str, str, tuple[str, ...]]
Action = Callable[[Any], None]


class QuietHost(dr_engine.Host):  # type: ignore[misc]  # durable_rules has no type hints
    """A durable_rules Host that starts no background timer threads and runs actions given by name."""

    def __init__(self, actions: dict[str, Action]) -> None:
        self._actions = actions
        super().__init__()

    def _run(self) -> None:  # the two threading.Timer loops (dispatch, timers) never start
        pass

    def get_action(self, action_name: str) -> Action:
        return self._actions[action_name]


def checked(text: str) -> CheckedPolicySet:
    """One policy file (YAML text) checked; fails the test with the diagnostics if `check` rejects it."""
    policies, diags = check_sources([Source("p.yaml", text)])
    assert policies is not None, [d.render() for d in diags]
    return policies


def found(vs: Iterable[Violation]) -> Counter[Found]:
    """The multiset of (rule, subject, evidence) of violations."""
    return Counter((v.rule, v.subject, v.evidence) for v in vs)


def reference(
    policies: CheckedPolicySet,
    events: list[dict[str, Any]],
    until: datetime | None = None,
) -> Counter[Found]:
    """What docs/semantics.md says, by the reference evaluator."""
    return found(evaluate_reference(policies, [validate_event(e) for e in events], until))


def engine(
    policies: CheckedPolicySet,
    events: list[dict[str, Any]],
    until: datetime | None = None,
) -> Counter[Found]:
    """What tosengine.Engine reports."""
    with Engine(policies) as eng:
        out = eng.process_many(events)
        if until is not None:
            out += eng.advance_to(until)
    return found(out)


def event(eid: str, etype: str, subject: str, time: str, **data: Any) -> dict[str, Any]:
    """An event envelope."""
    return {"id": eid, "type": etype, "subject": subject, "time": time, "data": data}


# ---------------------------------------------------------------- (a) events are consumed by one rule

THREE_RULES = """\
policy: uploads
clause: You will not upload malware, disguised files or oversized files.
rules:
  - id: malware
    match: event.type == "file.uploaded" and event.data.sha == "bad"
  - id: disguised
    match: event.type == "file.uploaded" and event.data.ext == "exe"
  - id: oversized
    match: event.type == "file.uploaded" and event.data.mb > 100
"""


def test_one_ruleset_with_post_reports_one_of_three_violations() -> None:
    """Naive: every match rule in ONE ruleset, events sent with post(). An event violating 3 rules fires 1.

    durable_rules consumes an event with the first action that fires on it (FINDINGS §0 #6), so the
    other two violations are silently lost. The reference reports 3; the Engine reports 3.
    """
    policies = checked(THREE_RULES)
    events = [event("u1", "file.uploaded", "account:1", "2026-03-01T10:00:00Z", sha="bad", ext="exe", mb=500)]
    raw: Counter[Found] = Counter()

    def fired(rule: str) -> Action:
        def action(c: Any) -> None:
            raw[(f"uploads/{rule}", c.m.subject, (c.m.id,))] += 1

        return action

    host = QuietHost({r: fired(r) for r in ("malware", "disguised", "oversized")})
    host.set_rulesets(
        {
            "uploads": {
                "malware": {"all": [{"m": {"$and": [{"type": "file.uploaded"}, {"sha": "bad"}]}}], "run": "malware"},
                "disguised": {
                    "all": [{"m": {"$and": [{"type": "file.uploaded"}, {"ext": "exe"}]}}],
                    "run": "disguised",
                },
                "oversized": {
                    "all": [{"m": {"$and": [{"type": "file.uploaded"}, {"$gt": {"mb": 100}}]}}],
                    "run": "oversized",
                },
            }
        }
    )
    for e in events:
        host.post("uploads", {"id": e["id"], "subject": e["subject"], "type": e["type"], **e["data"]})

    want = reference(policies, events)
    assert sum(want.values()) == 3
    assert sum(raw.values()) == 1 and raw != want  # the differential test would catch this
    assert engine(policies, events) == want


# ---------------------------------------------------------------- (b) expect as `$not` misses fulfilment

EXPECT = """\
policy: audit-requests
clause: You will provide each document our auditors request within three days.
rules:
  - id: unanswered
    expect:
      after: event.type == "audit.document_requested"
      fulfilled_by: event.type == "audit.document_provided" and event.data.doc == after.data.doc
      within: 3d
"""


def test_expect_as_negation_reports_an_answered_request() -> None:
    """Naive: expect = [after, $not fulfilment, clock >= deadline]. A fulfilment after the request is ignored.

    durable_rules' `$not` only blocks when the negated fact is already there when the earlier elements
    match (an indexing bug in deleteDownstreamFrames, FINDINGS §1.4). A document provided a day after
    it was requested still gives a violation when the clock passes the deadline. The reference reports
    nothing for that request; so does the Engine.
    """
    policies = checked(EXPECT)
    events = [
        event("rq-1", "audit.document_requested", "developer:1", "2026-03-01T00:00:00Z", doc="D-7"),
        event("pv-1", "audit.document_provided", "developer:1", "2026-03-02T00:00:00Z", doc="D-7"),
        event("hb-1", "audit.heartbeat", "developer:9", "2026-03-05T00:00:00Z"),
    ]
    raw: Counter[Found] = Counter()

    def unanswered(c: Any) -> None:
        raw[("audit-requests/unanswered", c.x.subject, (c.x.id,))] += 1

    host = QuietHost({"unanswered": unanswered})
    host.set_rulesets(
        {
            "expect": {
                "unanswered": {
                    "all": [
                        {"x": {"type": "audit.document_requested"}},
                        {
                            "m_1$not": {
                                "$and": [
                                    {"type": "audit.document_provided"},
                                    {"doc": {"x": "doc"}},
                                    {"subject": {"x": "subject"}},
                                ]
                            }
                        },
                        {"clock": {"$and": [{"type": "clock"}, {"$gte": {"now": {"x": "deadline"}}}]}},
                    ],
                    "run": "unanswered",
                }
            }
        }
    )
    for e in events:
        t = parse_time(e["time"])
        fact = {
            "id": e["id"],
            "subject": e["subject"],
            "type": e["type"],
            **e["data"],
            "deadline": int((t + timedelta(days=3)).timestamp()),
        }
        with contextlib.suppress(dr_engine.MessageNotHandledException):  # an event no rule element wants
            host.assert_fact("expect", fact)  # facts, so the $not can see them
        # The logical clock: event time as data, since durable_rules' timers run on wall time.
        host.post("expect", {"id": f"clock-{e['id']}", "type": "clock", "now": int(t.timestamp())})

    want = reference(policies, events)
    assert want == Counter()  # answered within the deadline: no violation
    assert raw == Counter({("audit-requests/unanswered", "developer:1", ("rq-1",)): 1}) and raw != want
    assert engine(policies, events) == want


# ---------------------------------------------------------------- (c) one session per subject

ONE_RULE = """\
policy: logins
clause: You will not log in from a banned client.
rules:
  - id: banned-client
    match: event.type == "account.login" and event.data.client == "banned"
"""

N_SUBJECTS = 1100

# Run in a child process: durable_rules can segfault once its session pool is exhausted (FINDINGS §0 #1).
SESSION_PER_SUBJECT = textwrap.dedent("""\
    import json, sys
    from durable import engine

    class QuietHost(engine.Host):
        def __init__(self, actions):
            self._actions = actions
            super().__init__()
        def _run(self):
            pass
        def get_action(self, name):
            return self._actions[name]

    found, errors = [], []
    def banned(c):
        found.append(["logins/banned-client", c.m.sid, [c.m.id]])
    host = QuietHost({"banned": banned})
    host.set_rulesets({"logins": {"banned-client": {
        "all": [{"m": {"$and": [{"type": "account.login"}, {"client": "banned"}]}}], "run": "banned"}}})
    for e in json.load(sys.stdin):
        try:  # one durable_rules session (sid) per subject, so state is kept apart by subject
            host.post("logins", {"id": e["id"], "sid": e["subject"], "type": e["type"], **e["data"]})
        except BaseException as exc:  # record and go on, as a naive consumer loop would
            errors.append(type(exc).__name__)
    print(json.dumps({"found": found, "errors": errors}))
""")


def test_session_per_subject_fails_at_subject_1025() -> None:
    """Naive: one durable_rules session per subject. The 1,025th subject raises MemoryError.

    A ruleset holds at most 1,024 sessions (FINDINGS §0 #1), so from the 1,025th subject on every
    event is lost. The reference reports all 1,100 violations; so does the Engine.
    """
    policies = checked(ONE_RULE)
    events = [
        event(f"l{i}", "account.login", f"account:{i}", "2026-03-01T00:00:00Z", client="banned")
        for i in range(N_SUBJECTS)
    ]
    proc = subprocess.run(
        [sys.executable, "-c", SESSION_PER_SUBJECT],
        input=json.dumps(events),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode <= 0, proc.stderr[-2000:]  # > 0: the script itself is broken
    if proc.returncode < 0:  # killed by a signal (a segfault): a louder way of losing every violation
        raw: Counter[Found] = Counter()
        errors = [f"signal {-proc.returncode}"]
    else:
        result = json.loads(proc.stdout)
        raw = Counter((r, s, tuple(ev)) for r, s, ev in result["found"])
        errors = result["errors"]

    want = reference(policies, events)
    assert sum(want.values()) == N_SUBJECTS
    assert raw != want  # the differential test would catch this
    if errors != ["signal 11"]:  # the subjects after the 1,024th are lost, each with a MemoryError
        assert sum(raw.values()) == 1024 and errors == ["MemoryError"] * (N_SUBJECTS - 1024), errors[:3]
    assert engine(policies, events) == want
