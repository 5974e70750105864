"""The Kafka workers' dataflow, without Kafka: its output equals a single process's, whatever happens.

The routers, stage partitions and ladder partitions run on in-memory topic partitions
(tests/kafka_dataflow.py), scheduled at random: partitions crash and restart from what they wrote,
routers restart from their committed offsets and send copies, zombies go on sending. The violations
written (their ids, actions and ladder steps) and the repeat records must equal those of one Engine
over the same events sorted by time -- ties broken by source, then id. The pieces are tested on their
own too: the stages a policy set splits into, lateness, the binary binding, idle partitions, positions.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.kafka_cluster import distinct_times, end_event
from tests.kafka_dataflow import Result, simulate
from tests.support import policy_set
from tosengine import Engine
from tosengine.kafka.partition import PartitionRuntime
from tosengine.kafka.records import REJECT, Record
from tosengine.kafka.router import Router, decode_message, held_back
from tosengine.kafka.topology import Topology, TopologyError
from tosengine.policy.check import check_policy_set
from tosengine.policy.model import CheckedPolicySet
from tosengine.policy.sources import read_schemas, read_sources
from tosengine.runtime.order import child_pos, event_pos, lapse_pos
from tosengine.runtime.program import Program
from tosengine.violation import Repeat

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 1, 1, tzinfo=UTC)

# Rules of every kind, keyed by subject, by device (events) and by device (facts), facts that cross
# key groups three strata deep, an expect on a fact that an event fulfils, once_per, and a ladder.
STRESS = [
    """
policy: acct
clause: c
severity: medium
action: warn
rules:
  - id: bad
    match: event.type == "bad"
  - id: burst
    threshold: {match: event.type == "ping", count: 3, within: 1h}
  - id: unanswered
    expect:
      after: event.type == "ask"
      fulfilled_by: event.type == "answer"
      within: 2h
    emit: {fact: asked.lapsed, data: {dev: after.data.device}}
  - id: quiet
    match: event.type == "bad" and event.data.loud == true
    once_per: 1h
""",
    """
policy: dev
clause: c
key: event.data.device
rules:
  - id: shared
    threshold: {match: 'event.type in ["ping", "bad"]', count: 3, within: 2h, distinct: event.subject}
    emit: {fact: device.shared, data: {device: event.data.device}}
  - id: seq
    sequence:
      - a: event.type == "ask"
      - b: event.type == "bad" and event.subject != a.subject
    within: 3h
    subject: b.subject
    once_per: 2h
""",
    """
policy: facts
clause: c
rules:
  - id: repeat-offender
    threshold: {match: fact.type == "violation" and fact.policy == "acct", count: 3, within: 1d}
  - id: appeal-missing
    expect:
      after: fact.type == "violation" and fact.policy == "dev"
      fulfilled_by: event.type == "appeal"
      within: 1h
    emit: {fact: appeal.missing, data: {x: 1}}
""",
    """
policy: devfacts
clause: c
key: fact.data.device
rules:
  - id: shared-twice
    threshold: {match: fact.type == "device.shared", count: 2, within: 1d}
""",
    """
policy: chain
clause: c
rules:
  - id: lapsed-chain
    sequence:
      - x: fact.type == "asked.lapsed"
      - y: 'fact.type in ["appeal.missing", "violation"] and fact.policy != "chain" and fact.policy != "facts"'
    within: 1d
""",
    """
policy: esc
clause: c
ladder: {within: 1d, steps: [warn, restrict, disable, permanent_ban]}
""",
]


def _z(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _stream(seed: int, n: int = 300, ties: bool = False) -> tuple[list[str], list[str]]:
    """Random events over two days (distinct times unless `ties`), and one end event per input partition."""
    rng = random.Random(seed)
    if ties:
        seconds = sorted(rng.randrange(0, 2 * 86400 // 60) * 60 for _ in range(n))
    else:
        seconds = sorted(rng.sample(range(2 * 86400), n))
    lines = []
    for i, s in enumerate(seconds):
        event = {
            "id": f"e{i}",
            "type": rng.choice(["bad", "ping", "ping", "ask", "answer", "appeal", "bad"]),
            "time": _z(T0 + timedelta(seconds=s)),
            "subject": f"account:{rng.randrange(6)}",
            "source": rng.choice(["s1", "s2"]) if ties else "s",
            "data": {"device": f"d{rng.randrange(4)}", "loud": rng.random() < 0.5},
        }
        lines.append(json.dumps(event))
    end = _z(T0 + timedelta(days=3))
    ends = [
        json.dumps({"id": f"end{i}", "type": "end", "time": end, "subject": f"x:{i}", "source": "t"}) for i in range(4)
    ]
    return lines, ends


def _one_process(policies: CheckedPolicySet, lines: list[str]) -> tuple[dict[str, tuple[str, int]], dict[str, Repeat]]:
    repeats: list[Repeat] = []
    with Engine(policies, on_repeat=repeats.append) as engine:
        violations = engine.process_many(lines)
    return {v.id: (v.action, v.ladder_step) for v in violations}, {r.id: r for r in repeats}


def _assert_same(result: Result, expected: dict[str, tuple[str, int]], repeats: dict[str, Repeat]) -> None:
    got = {i: (v.action, v.ladder_step) for i, v in result.violations.items()}
    assert set(got) == set(expected), (sorted(set(expected) - set(got))[:5], sorted(set(got) - set(expected))[:5])
    assert got == expected, "ladder steps differ"
    assert result.duplicates_written == 0
    assert {i: (r.count, r.evidence) for i, r in result.repeats.items()} == {
        i: (r.count, r.evidence) for i, r in repeats.items()
    }


@pytest.fixture(scope="module")
def default_pack() -> CheckedPolicySet:
    return check_policy_set(read_sources(ROOT / "policies"), read_schemas(ROOT / "policies"))


@pytest.fixture
def programs() -> Iterator[Callable[[CheckedPolicySet], Program]]:
    """Programs made for a test, closed after it: durable_rules keeps its rulesets in process-wide
    state, and rulesets left behind can crash a later test that uses durable_rules directly."""
    made: list[Program] = []

    def make(policies: CheckedPolicySet) -> Program:
        made.append(Program(policies))
        return made[-1]

    yield make
    for p in made:
        p.close()


def test_the_default_pack_splits_into_stages_by_key_group_and_stratum(
    default_pack: CheckedPolicySet, programs: Callable[[CheckedPolicySet], Program]
) -> None:
    topo = Topology(programs(default_pack), "g1", "in")
    stages = {s.id: s for s in topo.stages.values()}
    assert sorted(stages) == [
        "event.data.device_id/s0",
        "event.data.operator/s0",
        "event.data.origin/s0",
        "ladder",
        "subject/s0",
        "subject/s1",
        "subject/s2",
    ]
    # the operator's facts reach the fact rule keyed by their subject; every violation reaches the notice
    assert stages["event.data.operator/s0"].downstream == ("subject/s1",)
    assert stages["subject/s2"].upstream == (
        "event.data.device_id/s0",
        "event.data.origin/s0",
        "subject/s0",
        "subject/s1",
    )
    assert not stages["subject/s1"].events and stages["subject/s2"].events
    assert topo.topic("event.data.device_id/s0") == "g1-event.data.device_id-s0-repartition"
    assert topo.topic("ladder") == "g1-ladder-repartition"


def test_a_rule_reading_a_violation_facts_action_is_refused_when_a_ladder_climbs(
    programs: Callable[[CheckedPolicySet], Program],
) -> None:
    policies = policy_set(
        "policy: a\nclause: c\nrules:\n  - id: x\n    match: event.type == 'x'\n",
        "policy: b\nclause: c\nrules:\n  - id: y\n"
        "    match: fact.type == 'violation' and fact.policy == 'a' and fact.action == 'disable'\n",
        "policy: esc\nclause: c\nladder: {within: 1d, steps: [warn, disable]}\n",
    )
    with pytest.raises(TopologyError, match="b/y read the `action` of a violation fact"):
        Topology(programs(policies), "g", "in")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_seed_cases_through_simulated_workers_equal_one_process(default_pack: CheckedPolicySet, seed: int) -> None:
    lines = distinct_times((ROOT / "examples" / "seed-cases.jsonl").read_text(encoding="utf-8").splitlines())
    ends = [end_event(lines, f"end{i}") for i in range(4)]
    expected, repeats = _one_process(default_pack, [*lines, *ends])
    _assert_same(simulate(default_pack, lines, ends=ends, seed=seed), expected, repeats)


@pytest.mark.parametrize("seed", range(8))
def test_facts_crossing_key_groups_and_strata_equal_one_process(seed: int) -> None:
    policies = policy_set(*STRESS)
    lines, ends = _stream(seed)
    expected, repeats = _one_process(policies, [*lines, *ends])
    assert len(expected) > 100
    _assert_same(simulate(policies, lines, ends=ends, seed=seed), expected, repeats)


@pytest.mark.parametrize("seed", range(4))
def test_events_at_equal_times_are_ordered_by_source_then_id(seed: int) -> None:
    policies = policy_set(*STRESS)
    lines, ends = _stream(100 + seed, ties=True)

    def order(line: str) -> tuple[str, str, str]:
        e = json.loads(line)
        return e["time"], e["source"], e["id"]

    expected, repeats = _one_process(policies, sorted([*lines, *ends], key=order))
    _assert_same(simulate(policies, lines, ends=ends, seed=seed), expected, repeats)


def test_positions_order_a_lapse_after_its_time_and_facts_breadth_first() -> None:
    t = T0 + timedelta(hours=1)
    e = event_pos(t, "s", "e1")
    later = event_pos(t + timedelta(microseconds=1), "s", "e0")
    lapse = lapse_pos(t, event_pos(T0, "s", "e0"), 3)
    assert e < child_pos(e, 0, 0, 0) < child_pos(e, 0, 0, 1) < child_pos(e, 2, 0, 0) < lapse < later
    assert child_pos(e, 5, 0, 0) < child_pos(child_pos(e, 0, 0, 0), 0, 0, 0)  # depth first in the order
    assert event_pos(t, "a", "z") < event_pos(t, "b", "a")  # equal times: by source, then id


def _router(program: Program, mark: str | None = None) -> Router:
    topo = Topology(program, "g", "in")
    topo.set_partitions(1, dict.fromkeys(topo.stages, 2))
    return Router(topo, 0, mark=mark)


def test_a_router_sends_late_events_to_the_dead_letter_and_its_successor_agrees(
    programs: Callable[[CheckedPolicySet], Program],
) -> None:
    program = programs(policy_set(*STRESS))
    r = _router(program)
    first = json.dumps({"id": "a", "type": "bad", "time": "2026-01-01T10:00:00Z", "subject": "account:1"})
    late = json.dumps({"id": "b", "type": "bad", "time": "2026-01-01T09:00:00Z", "subject": "account:1"})
    outs, etype, refused = r.route(None, first.encode(), 0)
    assert refused is None and etype == "bad" and {o[0] for o in outs} >= {"subject/s0"}
    assert r.watermark() and not r.watermark()  # sent once, then only when it moves
    outs, _, refused = r.route(None, late.encode(), 1)
    assert refused is not None and refused.problem.startswith("late") and [o[3].kind for o in outs] == [REJECT]
    successor = _router(program, r.mark())  # takes over from the committed offset and its metadata
    _, _, refused = successor.route(None, late.encode(), 1)
    assert refused is not None and refused.problem.startswith("late")


def test_the_binary_binding_gives_the_event_the_structured_one_gives() -> None:
    headers: list[tuple[str, str | bytes | None]] = [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"e1"),
        ("ce_type", b"account.login"),
        ("ce_time", b"2026-01-01T00:00:00Z"),
        ("ce_subject", b"account:1"),
        ("ce_source", b"app"),
        ("content-type", b"application/json"),
    ]
    decoded = json.loads(decode_message(headers, b'{"origin": "evil.example"}'))
    assert decoded == {
        "specversion": "1.0",
        "id": "e1",
        "type": "account.login",
        "time": "2026-01-01T00:00:00Z",
        "subject": "account:1",
        "source": "app",
        "data": {"origin": "evil.example"},
    }
    assert decode_message(None, b'{"id": "x"}') == '{"id": "x"}'


def test_an_idle_input_partition_stops_holding_the_frontier_back(
    programs: Callable[[CheckedPolicySet], Program],
) -> None:
    topo = Topology(programs(policy_set(*STRESS)), "g", "in")
    topo.set_partitions(2, dict.fromkeys(topo.stages, 1))
    part = PartitionRuntime(topo, "subject/s0", 0)
    part.receive(Record.watermark("in/0", (100, 1)), 0)
    part.receive(Record.watermark("in/1", (50, 0)), 1)
    assert part.frontier() == (50, 0)
    part.receive(Record.watermark("in/1", (50, 0), idle=True), 2)
    assert part.frontier() == (100, 1)
    part.receive(Record.watermark("in/1", (40, 0)), 3)  # back, behind: promises never move back
    assert part.frontier() == (50, 0)
    assert part.resume_offset() == 4


def test_records_round_trip() -> None:
    r = Record.of_kafka(Record.watermark("subject/s0/1", (5, 1), idle=True).headers(), b'{"f": [5, 1], "idle": true}')
    assert r.frontier() == ((5, 1), True) and r.source == "subject/s0/1"
    with pytest.raises(ValueError, match="not a tosengine repartition record"):
        Record.of_kafka([("k", b"zz")], b"")


def test_pacing_holds_back_only_routers_far_ahead_of_the_slowest(
    programs: Callable[[CheckedPolicySet], Program],
) -> None:
    program = programs(policy_set(*STRESS))
    routers = {i: _router(program) for i in range(3)}
    for i, w in enumerate((10, 10 + 3_600_000_000, 10 + 90_000_000_000)):
        routers[i].promised = (w, 0)
    promises = {f"in/{i}": r.promised for i, r in routers.items()}
    assert held_back(routers, promises, set(), timedelta(hours=2)) == {2}
    assert held_back(routers, promises, {"in/0", "in/1"}, timedelta(hours=2)) == set()  # the slowest left idle
    assert held_back(routers, {**promises, "in/0": ()}, set(), timedelta(hours=2)) == set()  # not heard yet
