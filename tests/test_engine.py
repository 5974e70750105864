"""The library API and the durable_rules defects it must make unreachable (FINDINGS.md section 0)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.support import T0, ev, policy_set, run, summary
from tosengine import Engine, EventError, MatcherError, TosEngineError
from tosengine.event_model import validate_event
from tosengine.policy.compile import Plan, RulesetPlan, compile_policy_set
from tosengine.runtime.matcher import Matcher
from tosengine.runtime.reference import evaluate_reference


def fnv1a32(text: str) -> int:
    """durable_rules identifies sids and message ids by this hash only (FINDINGS.md section 6)."""
    h = 0x811C9DC5
    for b in text.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


MIXED = """
policy: mixed
title: Mixed
clause: Test clause.
severity: high
action: restrict
rules:
  - id: leak
    sequence:
      - minted: event.type == "token.minted"
      - exposed: event.type == "token.exposed" and event.data.token == minted.data.token
    within: 1d
  - id: burst
    threshold:
      match: event.type == "login.failed"
      count: 2
      within: 1h
  - id: unanswered
    expect:
      after: event.type == "info.requested"
      fulfilled_by: event.type == "info.answered"
      within: 1d
"""


def test_colliding_subjects_never_share_state() -> None:
    a, b = "account:2315246", "account:3054780"
    assert fnv1a32(a) == fnv1a32(b)  # the premise: durable_rules would give them one session
    events = [
        ev("m1", "token.minted", a, timedelta(0), token="t"),
        ev("x1", "token.exposed", b, timedelta(minutes=1), token="t"),
        ev("f1", "login.failed", a, timedelta(minutes=2)),
        ev("f2", "login.failed", b, timedelta(minutes=3)),
        ev("q1", "info.requested", a, timedelta(minutes=4)),
        ev("r1", "info.answered", b, timedelta(minutes=5)),
    ]
    got = run(policy_set(MIXED), events, until=T0 + timedelta(days=3))
    assert summary(got) == [("mixed/unanswered", a, ("q1",))]


def test_a_copy_is_dropped_until_the_clock_passes_its_time_plus_the_window() -> None:
    """The redelivery memory to the microsecond: a copy is dropped while the clock is at most the first
    copy's time + the window, counted as a conflict if its body differs, and processed again after."""
    window = timedelta(hours=1)
    tick = timedelta(microseconds=1)
    first = ev("a", "login.failed", "account:1", tick, n=1)
    with Engine(policy_set(MIXED), dedupe_window=window) as engine:
        engine.process(first)
        engine.process(ev("b", "login.failed", "account:2", window + tick))  # the clock: exactly the edge
        engine.process(first)
        engine.process({**first, "data": {"n": 2}})  # the same (source, id), another body
        assert (engine.stats["events"], engine.stats["duplicates"], engine.stats["conflicts"]) == (2, 2, 1)
        engine.process(ev("c", "login.failed", "account:3", window + 2 * tick))  # one microsecond past it
        engine.process(first)  # forgotten: processed as a new event
        assert (engine.stats["events"], engine.stats["duplicates"]) == (4, 2)


CLOCK_EDGES = """
policy: edges
clause: Deadlines and windows at the clock's edge.
rules:
  - id: unanswered
    expect:
      after: event.type == "info.requested"
      fulfilled_by: event.type == "info.answered" and event.data.n == after.data.n
      within: 1h
  - id: burst
    threshold:
      match: event.type == "login.failed"
      count: 3
      within: 1m
"""


def test_the_event_that_passes_a_deadline_returns_its_lapse_and_no_sooner() -> None:
    """An obligation lapses in the call whose event moves the clock strictly past its deadline, even when
    an obligation fulfilled earlier is due first: not at the deadline itself, and not a call later."""
    s = timedelta(seconds=1)
    with Engine(policy_set(CLOCK_EDGES)) as engine:
        engine.process(ev("q1", "info.requested", "developer:1", timedelta(0), n=1))
        engine.process(ev("q2", "info.requested", "developer:2", 30 * s, n=2))
        engine.process(ev("a1", "info.answered", "developer:1", 10 * 60 * s, n=1))  # q1 fulfilled, due first
        calls = {
            at: [v.rule for v in engine.process(ev(f"p{at}", "page.viewed", "account:9", timedelta(hours=1) + at * s))]
            for at in (0, 29, 30, 31)
        }
    assert calls == {0: [], 29: [], 30: [], 31: ["edges/unanswered"]}  # q2's deadline is 1:00:30


def test_a_window_is_forgotten_once_the_clock_passes_its_newest_item_plus_within() -> None:
    """The threshold window of a key is held while the clock is at most its newest item + `within`, and
    forgotten by the first event after (what `state_size` and the service's metrics show)."""
    with Engine(policy_set(CLOCK_EDGES)) as engine:
        engine.process(ev("f1", "login.failed", "account:1", timedelta(0)))
        engine.process(ev("f2", "login.failed", "account:2", timedelta(minutes=1)))
        at_edge = engine.state_size()["threshold_keys"]
        engine.process(ev("f3", "login.failed", "account:2", timedelta(minutes=1, microseconds=1)))
        past_edge = engine.state_size()["threshold_keys"]
    assert (at_edge, past_edge) == (2, 1)


def test_an_answered_request_leaves_the_deadline_heap_when_answered_not_at_its_deadline() -> None:
    """Requests answered in turn, each within a 30-day deadline: nothing is kept for them once answered
    (each held its request's event until the deadline otherwise: 1.35 KB per request for 30 days)."""
    policy = CLOCK_EDGES.replace("within: 1h", "within: 30d")
    with Engine(policy_set(policy)) as engine:
        for n in range(200):
            engine.process(ev(f"q{n}", "info.requested", "developer:1", timedelta(minutes=2 * n), n=n))
            engine.process(ev(f"a{n}", "info.answered", "developer:1", timedelta(minutes=2 * n + 1), n=n))
        size = engine.state_size()
    assert (size["obligations"], size["deadline_heap"]) == (0, 0)


def test_colliding_event_ids_are_distinct_events() -> None:
    i, j = "evt-49399", "evt-1155910"
    assert fnv1a32(i) == fnv1a32(j)
    events = [ev(i, "login.failed", "account:1"), ev(j, "login.failed", "account:1", timedelta(seconds=1))]
    assert summary(run(policy_set(MIXED), events)) == [("mixed/burst", "account:1", (i, j))]


def test_five_thousand_subjects_match_the_reference() -> None:
    events = []
    for n in range(5000):
        s = f"account:{n}"
        t = timedelta(seconds=n)
        events.append(ev(f"m{n}", "token.minted", s, t, token=f"t{n}"))
        events.append(ev(f"q{n}", "info.requested", s, t))
        if n % 2:
            events.append(ev(f"r{n}", "info.answered", s, t + timedelta(hours=1)))
        events.append(ev(f"x{n}", "token.exposed", s, t + timedelta(hours=2), token=f"t{n}"))
    checked = policy_set(MIXED)
    until = T0 + timedelta(days=5)
    got = run(checked, events, until)
    assert len([v for v in got if v.rule == "mixed/leak"]) == 5000
    assert len([v for v in got if v.rule == "mixed/unanswered"]) == 2500
    ref = evaluate_reference(checked, [validate_event(e) for e in events], until)
    assert sorted(v.id for v in got) == sorted(v.id for v in ref)


def test_invalid_event_names_the_field_and_leaves_state_alone() -> None:
    with Engine(policy_set(MIXED)) as engine:
        with pytest.raises(EventError) as info:
            engine.process({"id": "x", "type": "login.failed", "time": "yesterday", "subject": "account:1"})
        assert info.value.field == "time" and "RFC 3339" in str(info.value)
        with pytest.raises(EventError) as info:
            engine.process({"id": "x", "type": "login.failed", "time": "2026-01-01T00:00:00Z", "subject": "nokind"})
        assert info.value.field == "subject"
        assert engine.clock is None and engine.stats["events"] == 0


def test_process_many_stops_at_a_bad_event_or_reports_it_and_goes_on() -> None:
    fail = [ev(f"f{i}", "login.failed", "account:1", timedelta(minutes=i)) for i in range(3)]
    bad = {"id": "x", "type": "login.failed", "time": "yesterday", "subject": "account:1"}
    with Engine(policy_set(MIXED)) as engine:  # without on_error: the events before it count, then it raises
        with pytest.raises(EventError) as info:
            engine.process_many([fail[0], fail[1], bad, fail[2]])
        assert info.value.field == "time"
        assert engine.stats["events"] == 2 and engine.stats["violations"] == 1
    seen: list[tuple[int, str]] = []
    with Engine(policy_set(MIXED)) as engine:  # with on_error: reported by position, the rest processed
        got = engine.process_many(
            ["{not json", fail[0], bad, fail[1], fail[2]], on_error=lambda pos, _raw, exc: seen.append((pos, exc.field))
        )
        assert seen == [(0, ""), (2, "time")]
        assert engine.stats["events"] == 3
        assert summary(got) == [("mixed/burst", "account:1", ("f0", "f1"))]  # fires once, then re-arms below count


def test_redelivery_is_processed_once_per_source() -> None:
    """(source, id) is the identity: a copy from the same source is dropped, the same id from another
    source is another event, and the threshold counts and cites both."""
    e = ev("same", "login.failed", "account:1")
    other_source = {**e, "source": "svc/b"}
    got = run(policy_set(MIXED), [e, e, other_source])
    assert summary(got) == [("mixed/burst", "account:1", ("same", "same"))]
    assert got[0].evidence_sources == ("", "svc/b")


def test_advance_to_needs_an_aware_time_and_a_closed_engine_refuses_work() -> None:
    engine = Engine(policy_set(MIXED))
    with pytest.raises(TosEngineError):
        engine.advance_to(datetime(2026, 1, 1))
    engine.close()
    with pytest.raises(TosEngineError):
        engine.process(ev("a", "login.failed", "account:1"))


def _wide_policy(rules: int) -> str:
    body = "\n".join(
        f"""  - id: r{i}
    match: event.type == "wide" and event.data.f{i} == "x" and exists(event.data.g{i})
      and event.data.h{i} and event.data.k{i} != "no\""""
        for i in range(rules)
    )
    return f"policy: wide\ntitle: Wide\nclause: c\nrules:\n{body}\n"


@pytest.mark.parametrize("rules", [13, 70, 600])
def test_many_overlapping_rules_all_fire(rules: int) -> None:
    """One event passing 4 conditions of each of 600 rules: durable_rules alone fails at >64 nodes
    (error 303) and hangs creating a ruleset of >=513 rules; the compiler's budgets keep it working."""
    data: dict[str, Any] = {}
    for i in range(rules):
        data.update({f"f{i}": "x", f"g{i}": 1, f"h{i}": True, f"k{i}": "yes"})
    got = run(policy_set(_wide_policy(rules)), [ev("w", "wide", "account:1", **data)])
    assert len(got) == rules


def test_wide_events_do_not_reach_durable_rules_property_limit() -> None:
    data: dict[str, Any] = {f"f{i}": i for i in range(400)}
    data["nested"] = {f"k{i}": f"v{i}" for i in range(300)}
    policy = """
policy: wide
title: Wide
clause: c
rules:
  - id: deep
    match: event.data.nested.k299 == "v299" and event.data.f399 == 399
"""
    assert len(run(policy_set(policy), [ev("w", "t.x", "account:1", **data)])) == 1


def test_durable_rules_errors_surface_as_matcher_error() -> None:
    bogus = RulesetPlan("bad", "event", None, (0,), {"t0": {"all": [{"m": {"$in": {"x": 1}}}]}}, ())
    with pytest.raises(MatcherError):
        Matcher(Plan((), (bogus,)))


PUSHED = """
policy: pushed
title: Pushed
clause: Test clause.
severity: high
action: restrict
rules:
  - id: spoof
    match: event.type == "api.call" and event.data.client == "official" and event.data.signed != true
  - id: scrape
    match: event.type == "api.call" and event.data.client in ["bot", "crawler"]
  - id: any-call
    match: event.type == "api.call" and event.data.client != "official"
"""


def test_matcher_answers_a_repeated_projection_as_durable_rules_did() -> None:
    """A ruleset remembers what each projection fired: every item gets the triggers a fresh matcher
    (durable_rules, cold) gives it, each distinct projection reaches durable_rules once, a full memo
    starts again without changing an answer, and a closed matcher answers nothing."""
    plan = compile_policy_set(policy_set(PUSHED))
    clients: list[Any] = ["official", "bot", "crawler", "other", 7, None, True]
    signed: list[Any] = [True, False, "yes", None]
    items = [
        {"type": "api.call", "data": {"client": c, **({} if s is None else {"signed": s})}}
        for _ in range(3)
        for c in clients
        for s in signed
    ] + [{"type": "api.other", "data": {"client": "bot"}}]

    def cold(fields: dict[str, Any]) -> list[int]:
        fresh = Matcher(plan)
        try:
            return fresh.match("event", fields)
        finally:
            fresh.close()

    expected = [cold(f) for f in items]
    assert any(expected) and not all(expected)  # the premise: some items fire triggers, some none

    matcher = Matcher(plan)
    # What durable_rules was asked to match, after the warm-up messages (counted by the matcher itself:
    # in the native build a patched method would not be called by compiled code).
    warm = sum(rs.asserted for rs in matcher._rulesets)
    try:
        assert matcher.match_many("event", items) == expected
        distinct = sum(rs.asserted for rs in matcher._rulesets) - warm
        assert 0 < distinct <= len(clients) * len(signed)  # each distinct projection once, not 3 times
        assert [matcher.match("event", f) for f in items] == expected
        assert sum(rs.asserted for rs in matcher._rulesets) - warm == distinct  # all answered from the memo
        for rs in matcher._rulesets:  # a memo that keeps filling up and starting again
            rs.memo_limit = 2
            rs.memo.clear()
        assert [matcher.match("event", f) for f in items] == expected
        assert all(len(rs.memo) <= 2 for rs in matcher._rulesets)
    finally:
        matcher.close()
    with pytest.raises(MatcherError, match="closed"):  # even for a projection it has matched before
        matcher.match("event", items[-2])


def test_threads_get_the_same_violations_as_one_thread() -> None:
    checked = policy_set(MIXED)
    streams = [
        [
            ev(
                f"{t}-{n}",
                "login.failed" if n % 3 else "token.minted",
                f"account:{t}-{n % 7}",
                timedelta(seconds=n),
                token="tk",
            )
            for n in range(300)
        ]
        for t in range(8)
    ]
    single = run(checked, [e for s in streams for e in s])
    with Engine(checked) as engine:
        results: list[list[object]] = [[] for _ in streams]

        def work(i: int) -> None:
            results[i] = list(engine.process_many(streams[i]))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(streams))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    many = [v for r in results for v in r]
    assert sorted(v.id for v in many) == sorted(v.id for v in single)  # type: ignore[attr-defined]
    assert len(single) > 50  # the streams do produce violations: the comparison is not vacuous


def test_evidence_events_are_the_events_as_sent() -> None:
    """Evidence is rebuilt from the fields the engine keeps (not the pydantic objects): it must equal
    each event as the producer sent it, time text and offset included."""
    sent = {
        "id": "z1",
        "type": "login.failed",
        "time": "2026-01-01T02:00:00.5+02:00",
        "subject": "account:1",
        "source": "svc/auth",
        "specversion": "1.0",
        "region": "eu",
        "data": {"n": 1},
    }
    later = {**sent, "id": "z2", "time": "2026-01-01T00:10:00Z", "source": ""}
    later.pop("source")
    got = run(policy_set(MIXED), [sent, later])
    assert [v.rule for v in got] == ["mixed/burst"]
    assert list(got[0].evidence_events) == [validate_event(sent).to_dict(), validate_event(later).to_dict()]
