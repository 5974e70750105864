"""One place per rule kind: the policy side's table, the runtime's and the reference's name the same
kinds, every pass sees a kind through its conditions, and an unknown kind is an error everywhere."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import pytest

from tests.support import ev, policy_set
from tosengine import Engine
from tosengine.errors import PolicyError
from tosengine.event_model import validate_event
from tosengine.policy.compile import compile_policy_set
from tosengine.policy.expr import Lit
from tosengine.policy.kinds import KINDS, kind_of
from tosengine.policy.model import CheckedPolicySet, Condition, Match, Rule
from tosengine.runtime.kinds import RUNTIME_KINDS, runtime_kind
from tosengine.runtime.reference import HANDLERS, evaluate_reference

FOUR_KINDS = """
policy: kinds
clause: One of each kind.
rules:
  - id: m
    match: event.type == "a"
  - id: t
    threshold: {match: event.type == "a", count: 2, within: 1m, distinct: event.data.x}
  - id: s
    sequence:
      - first: event.type == "a"
      - then: event.type == "b" and event.data.x == first.data.x
    within: 1h
  - id: x
    expect:
      after: event.type == "a"
      fulfilled_by: event.type == "c" and event.data.x == after.data.x
      within: minutes(after.data.n)
"""


def test_the_policy_runtime_and_reference_tables_name_the_same_kinds() -> None:
    assert set(KINDS) == set(RUNTIME_KINDS) == set(HANDLERS) == {"match", "threshold", "sequence", "expect"}


def test_every_kind_declares_its_conditions_and_compile_sees_each_trigger() -> None:
    checked = policy_set(FOUR_KINDS)
    roles = {r.name: [(c.role, c.step) for c in r.conditions()] for r in checked.rules}
    assert roles == {
        "m": [("match", 0)],
        "t": [("threshold", 0), ("distinct", 0)],
        "s": [("step", 0), ("step", 1)],
        "x": [("after", 0), ("fulfil", 0), ("within", 0)],
    }
    plan = compile_policy_set(checked)
    triggers = {(checked.rules[t.rule].name, t.role, t.step) for t in plan.triggers}
    assert triggers == {
        (r, role, step)
        for r, rs in roles.items()
        for role, step in rs
        if role in ("match", "threshold", "step", "after", "fulfil")
    }
    # The second step and the fulfilment read what came before them.
    s = next(r for r in checked.rules if r.name == "s")
    assert [name for name, _ in s.conditions()[1].binds] == ["first"]


@dataclass(frozen=True)
class _Unknown(Match):
    """A body of a kind nobody registered."""

    KIND: ClassVar[str] = "window"


def test_an_unregistered_kind_is_an_error_not_a_fallthrough() -> None:
    checked = policy_set(FOUR_KINDS)
    body = _Unknown(Lit(True, checked.rules[0].span), "event")
    with pytest.raises(PolicyError, match="window"):
        kind_of(body)
    with pytest.raises(PolicyError, match="window"):
        runtime_kind("window")
    rule = Rule("kinds", "w", body, "low", "warn", None, None, None, True, body.match.span)
    policy = replace(checked.policies[0], rules=(rule,))
    odd = CheckedPolicySet((policy,))
    with pytest.raises(PolicyError, match="window"):
        Engine(odd)
    with pytest.raises(ValueError, match="window"):
        evaluate_reference(odd, [validate_event(ev("k1", "a", "account:1"))])


def test_a_condition_knows_whether_it_is_matched_against_items() -> None:
    e = Lit(True, policy_set(FOUR_KINDS).rules[0].span)
    assert Condition("fulfil", e, "event").trigger and not Condition("distinct", e, "event").trigger
