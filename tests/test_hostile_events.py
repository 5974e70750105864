"""Hostile events: every bad line is rejected with a reason in the dead letter, nothing crashes or
hangs, and the good events around it are processed. Fixed seed in CI; TOSENGINE_FUZZ_EXAMPLES for more."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, func, select

from tosengine import Engine, EventError, events
from tosengine.audit import AuditLog
from tosengine.audit.models import AcceptedEvent, RejectedEvent
from tosengine.event_model import parse_event_line
from tosengine.events import validate_record

ROOT = Path(__file__).resolve().parents[1]
POLICIES = ROOT / "policies"
EXAMPLES = int(os.environ.get("TOSENGINE_FUZZ_EXAMPLES", "150"))

GOOD = {
    "id": "g",
    "type": "account.login",
    "time": "2026-03-01T00:00:00Z",
    "subject": "account:1",
    "data": {"origin": "massroot8.example"},
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _mutations() -> st.SearchStrategy[str]:
    """Lines that a broken or hostile producer could send."""
    field = st.sampled_from(["id", "type", "time", "subject", "source", "specversion", "data", "Data", "x_y"])
    return st.one_of(
        st.builds(lambda k, v: json.dumps({**GOOD, k: v}), field, json_values),  # wrong types
        st.builds(lambda k: json.dumps({x: y for x, y in GOOD.items() if x != k}), field),  # missing fields
        st.builds(lambda n: json.dumps({**GOOD, "data": {"s": "x" * n}}), st.sampled_from([10, 1 << 21])),
        st.builds(
            lambda d: (
                '{"id":"d","type":"a.b","time":"2026-03-01T00:00:00Z","subject":"a:1","data":' + "[" * d + "]" * d + "}"
            ),
            st.integers(30, 3000),
        ),  # deep nesting
        st.builds(lambda n: json.dumps({**GOOD, "data": {f"f{i}": i for i in range(n)}}), st.integers(250, 400)),
        st.sampled_from(
            [
                '{"id":"n","type":"a.b","time":"2026-03-01T00:00:00Z","subject":"a:1","data":{"x":NaN}}',
                '{"id":"n","type":"a.b","time":"2026-03-01T00:00:00Z","subject":"a:1","data":{"x":-Infinity}}',
                '{"id":"s","type":"a.b","time":"2026-03-01T00:00:00Z","subject":"a:1","data":{"x":"\\ud800"}}',
                "",
                "{",
                "[]",
                "null",
                "42",
                '"text"',
                "{}",
                '{"id": 1}',
            ]
        ),
        st.builds(
            lambda t: json.dumps({**GOOD, "time": t}),
            st.sampled_from(
                [
                    "0001-01-01T00:00:00Z",
                    "9999-12-31T23:59:59Z",
                    "2026-13-01T00:00:00Z",
                    "2026-02-30T00:00:00Z",
                    "2026-03-01T24:00:00Z",
                    "2026-03-01 00:00:00Z",
                ]
            ),
        ),
        st.text(max_size=60),
    )


@seed(20261128)
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), _mutations()), min_size=1, max_size=12))
def test_bad_lines_are_rejected_with_a_reason_and_good_ones_processed(lines: list[tuple[bool, str]]) -> None:
    engine = Engine.from_directory(POLICIES, smoke_test=None)  # the load-time check is not what is fuzzed
    accepted = rejected = 0
    for n, (good_first, bad) in enumerate(lines):
        stream = [json.dumps({**GOOD, "id": f"good-{n}"}), bad] if good_first else [bad]
        for text in stream:
            try:
                ev = parse_event_line(text, line=n)
            except EventError as exc:
                assert exc.problem  # a reason, never an empty message
                rejected += 1
                continue
            engine.process(ev)
            accepted += 1
    assert engine.stats["events"] + engine.stats["duplicates"] == accepted
    assert accepted >= sum(g for g, _ in lines)
    engine.close()


def test_cli_replay_records_every_rejection_and_keeps_going(tmp_path: Path) -> None:
    bad = [
        "{",
        "[1,2]",
        '{"id":"x"}',
        json.dumps({**GOOD, "time": "9999-12-31T23:59:59Z"}),
        json.dumps({**GOOD, "data": {"x": "y" * (1 << 21)}}),
        '{"id":"n","type":"a.b","time":"2026-03-01T00:00:00Z","subject":"a:1","data":{"x":NaN}}',
    ]
    lines = []
    for i, b in enumerate(bad):
        lines += [json.dumps({**GOOD, "id": f"good-{i}"}), b]
    raw = (
        "\n".join(lines) + "\n"
    ).encode() + b'{"id":"u","type":"a.b","time":"2026-03-01T00:00:00Z","subject":"a:1","data":{"x":"\xff"}}\n'
    f = tmp_path / "hostile.jsonl"
    f.write_bytes(raw)
    url = f"sqlite:///{tmp_path / 'h.db'}"
    p = subprocess.run(
        [sys.executable, "-m", "tosengine", "replay", str(f), "--policies", str(POLICIES), "--db", url],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr
    eng = create_engine(url)
    with eng.connect() as c:
        assert c.execute(select(func.count()).select_from(RejectedEvent)).scalar_one() == len(bad) + 1
        assert c.execute(select(func.count()).select_from(AcceptedEvent)).scalar_one() == len(bad)
        reasons = [r for (r,) in c.execute(select(RejectedEvent.reason))]
    eng.dispose()
    assert all(reasons) and any("UTF-8" in r for r in reasons) and any("between 1970" in r for r in reasons)
    AuditLog(url).close()


python_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=6)
    | st.sampled_from(["\ud800", "x" * ((1 << 20) + 1), "é", float("nan"), float("-inf")]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=4) | st.sampled_from(["\udfff", 7]), inner, max_size=3)
    ),
    max_leaves=10,
)


def _nested(depth: int) -> dict[str, object]:
    v: dict[str, object] = {}
    for _ in range(depth):
        v = {"a": v}
    return v


@seed(20261128)
@settings(max_examples=EXAMPLES * 2, deadline=None)
@given(
    st.one_of(
        python_values, st.dictionaries(st.text(max_size=4), python_values, max_size=4), st.integers(28, 36).map(_nested)
    )
)
def test_events_given_as_objects_are_accepted_exactly_when_every_value_is_acceptable(data: object) -> None:
    """validate_event and the walker that names the place of a bad value must agree on every value an
    embedding service could pass as `data`: lone surrogates, NaN, huge strings, non-string keys, depth."""
    from tosengine.event_model import validate_event
    from tosengine.events import _check_value

    try:
        _check_value("data", data)
        acceptable = data is None or isinstance(data, dict)  # an object; null is no data (CloudEvents)
    except EventError:
        acceptable = False
    try:
        validate_event({**GOOD, "data": data})
        accepted = True
    except EventError as exc:
        assert exc.field.startswith("data") and exc.problem
        accepted = False
    assert accepted == acceptable


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("id", "x" * 1001, "at most 1000 characters"),
        ("subject", "account:\ud800", "lone surrogate"),
        ("source", "svc/\udfff", "lone surrogate"),
        ("source", "s" * 1001, "at most 1000 characters"),
        ("subject", "account:\x00", "NUL"),
        ("type", "t" * 401, "at most 400 characters"),
        ("dept", "\ud800", "lone surrogate"),  # an extension attribute
    ],
)
def test_envelope_strings_are_checked_like_data(field: str, value: str, problem: str) -> None:
    from tosengine.event_model import validate_event

    with pytest.raises(EventError) as info:
        validate_event({**GOOD, field: value})
    assert info.value.field == field and problem in info.value.problem


def test_a_json_text_holding_a_lone_surrogate_is_rejected_and_recorded(tmp_path: Path) -> None:
    """A Python str can hold a lone surrogate that no UTF-8 text can (a producer's decoding gone wrong):
    given as the event's JSON text it is an EventError like any bad JSON, and goes to the dead letter."""
    url = f"sqlite:///{tmp_path / 'surrogate.db'}"
    text = json.dumps({**GOOD, "id": "s-1"}, ensure_ascii=False).replace("massroot8", "mass\ud800root8")
    with Engine.from_directory(POLICIES, audit=url, smoke_test=None) as engine:
        with pytest.raises(EventError) as info:
            engine.process(text)
        assert info.value.field == "" and "lone surrogate" in info.value.problem
        engine.process(json.dumps({**GOOD, "id": "s-2"}))  # the engine goes on
    eng = create_engine(url)
    with eng.connect() as c:
        rejected = c.execute(select(RejectedEvent.reason, RejectedEvent.raw)).all()
        assert c.execute(select(func.count()).select_from(AcceptedEvent)).scalar_one() == 1
    eng.dispose()
    ((reason, raw),) = rejected
    assert "lone surrogate" in reason and "mass\\ud800root8" in raw  # stored as its escape


def _verdict(etype: str, subject: str) -> tuple[str, str] | None:
    """What validation says of an event with this type and subject: (field, problem), or None."""
    try:
        validate_record({**GOOD, "type": etype, "subject": subject})
    except EventError as exc:
        return exc.field, exc.problem
    return None


@seed(1606)
@settings(max_examples=EXAMPLES, deadline=None)
@given(
    etype=st.one_of(
        st.sampled_from(["account.login", "a" * 400, "a" * 401, "a." * 200 + "b", "bad type", ""]),
        st.from_regex(r"[A-Za-z0-9_.-]{1,12}", fullmatch=True),
        st.text(max_size=12),
    ),
    subject=st.sampled_from(["account:1", "Account:1", "account", "x:\x00"]),
)
def test_an_event_type_is_judged_the_same_whether_or_not_it_was_seen_before(etype: str, subject: str) -> None:
    # Validation remembers the well-formed types it has seen, to skip their pattern: a remembered type must
    # be judged exactly as a new one, problem for problem and in the same order (the subject's before the
    # type's length).
    events._GOOD_TYPES.clear()
    cold = _verdict(etype, subject)
    _verdict(etype, "account:1")  # seen once with a good subject: remembered if it is well formed
    assert _verdict(etype, subject) == cold
    if etype == "a" * 401:
        # A subject that breaks its pattern is named first; a NUL in it is checked after the type's length.
        assert cold is not None and cold[0] == ("subject" if subject in ("Account:1", "account") else "type")


def test_a_full_memory_of_types_still_judges_new_types() -> None:
    events._GOOD_TYPES.clear()
    for n in range(events._GOOD_TYPES_MAX + 10):
        assert _verdict(f"made.up{n}", "account:1") is None
    assert len(events._GOOD_TYPES) == events._GOOD_TYPES_MAX
    assert _verdict("yet.another", "account:1") is None
    assert _verdict("not a type", "account:1") == ("type", "must be a dotted name such as account.engagement")
    events._GOOD_TYPES.clear()
