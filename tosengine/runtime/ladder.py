"""Stage decide (escalation): the ladder that raises a subject's recorded action with each repeat."""

from __future__ import annotations

import bisect
from datetime import datetime

from tosengine.policy.model import ACTIONS, Ladder

__all__ = ["LadderState"]


class LadderState:
    """Per subject, the times of its counted violations within the ladder's window (docs/semantics.md).

    The times are a sorted tuple: a year-long window can remember hundreds of thousands of subjects,
    most with a single violation, and a 1-tuple costs 64 bytes where an empty deque costs 600.
    """

    def __init__(self, ladder: Ladder | None) -> None:
        self.ladder = ladder
        self.seen: dict[str, tuple[datetime, ...]] = {}

    def climb(self, policy: str, subject: str, time: datetime, action: str, now: datetime) -> tuple[str, int, bool]:
        """(recorded action, ladder step, whether the subject's memory grew) for a violation at `time`.

        A subject's n-th counted violation within the window is recorded at least at steps[n-1]; a
        violation of a policy the ladder does not count records the step without climbing.
        """
        ladder = self.ladder
        if ladder is None:
            return action, 0, False
        horizon = now - ladder.within
        seen = self.seen.get(subject, ())
        if seen and seen[0] < horizon:
            seen = seen[bisect.bisect_left(seen, horizon):]
        lo = max(time - ladder.within, horizon)
        n = bisect.bisect_right(seen, time) - bisect.bisect_left(seen, lo)
        if ladder.counts is not None and policy not in ladder.counts:
            if seen:
                self.seen[subject] = seen
            else:
                self.seen.pop(subject, None)
            return action, min(n, len(ladder.steps)), False
        pos = bisect.bisect_right(seen, time)  # after equal times: the order of a late violation
        self.seen[subject] = (*seen[:pos], time, *seen[pos:])
        step = min(n + 1, len(ladder.steps))
        return max(action, ladder.steps[step - 1], key=ACTIONS.index), step, True

    def expires(self, subject: str) -> datetime | None:
        """When the subject's memory can be forgotten, as it stands."""
        seen = self.seen.get(subject)
        return seen[-1] + self.ladder.within if seen and self.ladder is not None else None

    def forget_if_expired(self, subject: str, now: datetime) -> None:
        """Drop a subject whose newest counted violation is behind the window."""
        until = self.expires(subject)
        if until is not None and until < now:
            del self.seen[subject]
