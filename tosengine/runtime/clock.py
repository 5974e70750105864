"""Event time: the clock (largest event time seen) and a heap of things due when it passes a time."""

from __future__ import annotations

import heapq
import itertools
from datetime import datetime
from typing import Generic, TypeVar

__all__ = ["Clock", "DueHeap"]

T = TypeVar("T")


class Clock:
    """The engine's notion of now: it only moves forward, driven by events or advance_to().

    `now` is the largest time seen. `settled` is the clock as of the last *completed* move: a move
    first lapses the obligations it passes, and the facts those lapses derive are judged against the
    settled clock (their windows measured from their own times, the deadlines), not against where the
    move is going; only then does the move settle (docs/semantics.md, "The clock and processing order").
    """

    def __init__(self) -> None:
        self.now: datetime | None = None
        self.settled: datetime | None = None

    def advance(self, t: datetime) -> bool:
        """Move to `t` if later (unsettled until `settle`); return whether the clock moved."""
        if self.now is None or t > self.now:
            self.now = t
            if self.settled is None:
                self.settled = t
            return True
        return False

    def settle(self) -> None:
        """The move is complete: windows are measured from the new clock from here on."""
        self.settled = self.now


class DueHeap(Generic[T]):
    """Entries ordered by (time, insertion order); pop those strictly before a given time."""

    def __init__(self) -> None:
        # The heap itself: callers on a hot path may look at entries[0][0] to skip a call.
        self.entries: list[tuple[datetime, int, T]] = []
        self._counter = itertools.count()

    def push(self, when: datetime, entry: T) -> None:
        """Schedule `entry` at `when`."""
        heapq.heappush(self.entries, (when, next(self._counter), entry))

    def peek(self) -> datetime | None:
        """The earliest time in the heap, if any."""
        return self.entries[0][0] if self.entries else None

    def peek_entry(self) -> T | None:
        """The earliest entry, left in place; None if the heap is empty."""
        return self.entries[0][2] if self.entries else None

    def pop(self) -> tuple[datetime, T]:
        """Remove and return the earliest entry."""
        when, _, entry = heapq.heappop(self.entries)
        return when, entry

    def due(self, t: datetime) -> bool:
        """Whether an entry is due strictly before `t`."""
        return bool(self.entries) and self.entries[0][0] < t

    def pop_before(self, t: datetime) -> tuple[datetime, T] | None:
        """The earliest entry due strictly before `t`, removed; None if there is none."""
        if self.entries and self.entries[0][0] < t:
            when, _, entry = heapq.heappop(self.entries)
            return when, entry
        return None

    def __len__(self) -> int:
        return len(self.entries)
