"""The escalation ladder's memory (a sorted tuple per subject, trimmed by bisection) against the rule
as docs/semantics.md words it, written out naively: late violations, equal times, uncounted policies,
and a clock far past a subject's memory."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, seed, settings
from hypothesis import strategies as st

from tosengine.policy.diagnostics import Span
from tosengine.policy.model import ACTIONS, Ladder
from tosengine.runtime.ladder import LadderState

T0 = datetime(2026, 3, 1, tzinfo=UTC)
LADDER = Ladder(
    policy="ladder",
    within=timedelta(days=3),
    steps=("restrict", "disable", "permanent_ban"),
    counts=frozenset({"counted"}),
    span=Span(1, 1),
)


def naive(
    seen: dict[str, list[datetime]], policy: str, subject: str, time: datetime, action: str, now: datetime
) -> tuple[str, int]:
    """A subject's n-th counted violation within the window is recorded at least at steps[n-1]."""
    horizon = now - LADDER.within
    kept = [t for t in seen.get(subject, []) if t >= horizon]
    n = sum(1 for t in kept if max(time - LADDER.within, horizon) <= t <= time)
    if LADDER.counts is not None and policy not in LADDER.counts:
        seen[subject] = kept
        return action, min(n, len(LADDER.steps))
    seen[subject] = sorted([*kept, time])
    step = min(n + 1, len(LADDER.steps))
    return max(action, LADDER.steps[step - 1], key=ACTIONS.index), step


violations = st.lists(
    st.tuples(
        st.sampled_from(["counted", "other"]),
        st.sampled_from(["account:1", "account:2"]),
        st.integers(0, 240),  # the violation's time, in hours after T0
        st.integers(0, 120),  # how far the clock is past it (a late violation, maybe behind the window)
        st.sampled_from(ACTIONS),
    ),
    max_size=40,
)


@seed(20261128)
@settings(max_examples=300, deadline=None)
@given(violations)
def test_the_ladder_climbs_as_the_semantics_say(stream: list[tuple[str, str, int, int, str]]) -> None:
    state = LadderState()
    model: dict[str, list[datetime]] = {}
    now = T0
    for policy, subject, hours, late, action in stream:
        time = T0 + timedelta(hours=hours)
        now = max(now, time + timedelta(hours=late))  # the clock never goes back
        got = state.climb(LADDER, policy, subject, time, action, now)
        assert got[:2] == naive(model, policy, subject, time, action, now), (policy, subject, time, now)
