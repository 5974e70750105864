"""Stage decide (escalation): the ladder that raises a subject's recorded action with each repeat."""

from __future__ import annotations

import bisect
from datetime import datetime
from typing import Any

from tosengine.policy.model import ACTIONS, Ladder
from tosengine.runtime.clock import DueHeap

__all__ = ["LadderState"]


class LadderState:
    """Per subject, the times of its counted violations within the ladder's window (docs/semantics.md).

    The times are a sorted tuple: a year-long window can remember hundreds of thousands of subjects,
    most with a single violation, and a 1-tuple costs 64 bytes where an empty deque costs 600.
    """

    def __init__(self) -> None:
        self.seen: dict[str, tuple[datetime, ...]] = {}
        # One entry per remembered subject: when its newest counted violation leaves the window.
        self.expiry: DueHeap[str] = DueHeap()

    def climb(
        self,
        ladder: Ladder | None,
        policy: str,
        subject: str,
        time: datetime,
        action: str,
        now: datetime,
        *,
        count: bool = True,
    ) -> tuple[str, int]:
        """(recorded action, ladder step) for a violation at `time`.

        A subject's n-th counted violation within the window is recorded at least at steps[n-1]; a
        violation of a policy the ladder does not count records the step without climbing. A shadow
        violation (`count=False`) is recorded at the step it would reach, and adds nothing to the count.
        """
        if ladder is None:
            return action, 0
        horizon = now - ladder.within
        seen = self.seen.get(subject, ())
        if seen and seen[0] < horizon:
            seen = seen[bisect.bisect_left(seen, horizon) :]
        lo = max(time - ladder.within, horizon)
        n = bisect.bisect_right(seen, time) - bisect.bisect_left(seen, lo)
        if ladder.counts is not None and policy not in ladder.counts:
            if seen:
                self.seen[subject] = seen
            else:
                self.seen.pop(subject, None)
            return action, min(n, len(ladder.steps))
        step = min(n + 1, len(ladder.steps))
        if not count:
            if seen:
                self.seen[subject] = seen
            else:
                self.seen.pop(subject, None)
            return max(action, ladder.steps[step - 1], key=ACTIONS.index), step
        pos = bisect.bisect_right(seen, time)  # after equal times: the order of a late violation
        self.seen[subject] = (*seen[:pos], time, *seen[pos:])
        if not seen:
            self.expiry.push(self.seen[subject][-1] + ladder.within, subject)
        return max(action, ladder.steps[step - 1], key=ACTIONS.index), step

    def save(self) -> list[list[Any]]:
        """[[subject, [times]], ...]."""
        return [[subject, [t.isoformat() for t in times]] for subject, times in self.seen.items()]

    def load(self, data: list[list[Any]], ladder: Ladder) -> None:
        """The memory back, with one expiry entry per subject."""
        for subject, times in data:
            seen = self.seen[subject] = tuple(datetime.fromisoformat(t) for t in times)
            self.expiry.push(seen[-1] + ladder.within, subject)

    def sweep(self, ladder: Ladder | None, now: datetime) -> None:
        """Forget subjects whose newest counted violation is behind the window."""
        head = self.expiry.entries
        if not head or head[0][0] >= now:  # the usual case: nothing is due
            return
        while (due := self.expiry.pop_before(now)) is not None:
            _, subject = due
            seen = self.seen.get(subject)
            if not seen or ladder is None:
                self.seen.pop(subject, None)
                continue
            until = seen[-1] + ladder.within
            if until < now:
                del self.seen[subject]
            else:  # still remembered: look again when its newest violation ages out
                self.expiry.push(until, subject)
