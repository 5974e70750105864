"""Behaviour as data: every tests/cases/*.yaml runs through the library engine and the reference."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tosengine import Engine, check_sources
from tosengine.cases import load_behaviour_case
from tosengine.event_model import validate_event
from tosengine.events import parse_time
from tosengine.policy.sources import Source
from tosengine.runtime.reference import evaluate_records
from tosengine.violation import Repeat

CASES = sorted((Path(__file__).parent / "cases").glob("*.yaml"))


def _ident(v: dict[str, Any]) -> tuple[str, str, str, tuple[str, ...]]:
    return (v["policy"], v["rule"].split("/")[-1], v["subject"], tuple(sorted(v["evidence"])))


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_case(path: Path) -> None:
    case = load_behaviour_case(path)
    assert case.policies is not None
    checked, diags = check_sources([Source(n, t) for n, t in case.policies.items()])
    assert checked is not None, [d.render() for d in diags]
    events = [validate_event(e) for e in case.events]
    until = case.until
    repeats: list[Repeat] = []
    with Engine(checked, on_repeat=repeats.append) as engine:
        got = engine.process_many(events)
        if until is not None:
            got += engine.advance_to(until)
    want = Counter(_ident(w) for w in case.expect)
    have = Counter(_ident(v.to_json()) for v in got)
    assert have == want, f"{case.name}\nmissing: {want - have}\nunexpected: {have - want}"
    for w in case.expect:
        if "time" in w:
            times = [v.time for v in got if _ident(v.to_json()) == _ident(w)]
            assert parse_time(w["time"]) in times, f"time of {w}"

    def repeat(r: dict[str, Any]) -> tuple[Any, ...]:
        return r["policy"], r["rule"].split("/")[-1], r["subject"], r["count"], tuple(r["evidence"])

    assert Counter(repeat(r.to_json()) for r in repeats) == Counter(repeat(r) for r in case.expect_repeats)
    for w in case.expect_repeats:
        if "time" in w:
            assert parse_time(w["time"]) in [r.time for r in repeats if repeat(r.to_json()) == repeat(w)]
    # The reference renders messages too: everything printed must agree, the message included.
    ref, ref_repeats = evaluate_records(checked, events, until)
    assert sorted(json.dumps(v.to_json(), sort_keys=True) for v in got) == sorted(
        json.dumps(v.to_json(), sort_keys=True) for v in ref
    )
    assert sorted(json.dumps(r.to_json(), sort_keys=True) for r in repeats) == sorted(
        json.dumps(r.to_json(), sort_keys=True) for r in ref_repeats
    )
