"""Stage decide (order): an item's provenance -> its place in the one total order Kafka workers agree on.

A single process handles a stream sorted by event time in an order that follows from the items
themselves (docs/semantics.md, "The clock and processing order"): event by event; after each event,
the facts it derives, breadth first (each derived item offered to every rule before the next, rules in
rule order, a firing's violation fact before its emitted fact); and when the clock passes a deadline,
the obligation's lapse, with its own facts, after everything at or before that time. Workers that hold
the rules of one key group each see part of that stream; they process their part in this order, so
every rule and every key sees its items exactly as the single process would (docs/scale-out.md).

A position is `(root, depth, path)`, compared as tuples:

* `root` is what started the cascade: `(time, 0, source, id)` for an event (ties in time broken by
  source, then id), `(time, 1, deadline, opening item's position, rule index)` for an obligation's lapse,
  where `time` is the deadline, or the time of the item that opened it if that is later (an obligation
  opened already overdue lapses at once). Times are integer microseconds since the Unix epoch.
* `depth` counts derivations from the root; `path` names them: one `(rule index, firing index, 0 for
  the violation fact or 1 for the emitted fact)` per step. Breadth first is `(depth, path)` order.

A *frontier* `(W, k)` is what a watermark promises: every root before it is complete. `(W, 0)`: every
event before time W and every lapse before W; `(W, 1)`: the events at W too. Lapses at W wait for a
frontier past W, as the single process lapses an obligation only when the clock is strictly past it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["EPOCH", "Frontier", "Pos", "before", "child_pos", "event_pos", "lapse_pos", "micros", "time_of"]

# (root, depth, path): see the module docstring. Nested tuples of ints and strings.
Pos = tuple[Any, ...]
# (W, k): roots before (W, k) are complete.
Frontier = tuple[int, int]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def micros(t: datetime) -> int:
    """An instant as integer microseconds since the Unix epoch (exact: datetimes hold microseconds)."""
    return (t - EPOCH) // _MICRO


def time_of(us: int) -> datetime:
    """The instant `micros` gave."""
    return EPOCH + timedelta(microseconds=us)


def event_pos(t: datetime, source: str, ident: str) -> Pos:
    """The position of an event (a root)."""
    return ((micros(t), 0, source, ident), 0, ())


def lapse_pos(deadline: datetime, opened_by: Pos, rule: int) -> Pos:
    """The position of an obligation's lapse (a root): at its deadline, or at the root of the item that
    opened it if that is later; equal times are ordered by deadline, then by the opening item's position
    and the rule, which is the order the obligations were opened in."""
    d = micros(deadline)
    return ((max(d, opened_by[0][0]), 1, d, opened_by, rule), 0, ())


def child_pos(parent: Pos, rule: int, firing: int, which: int) -> Pos:
    """The position of a fact derived from the item at `parent`: by rule `rule`'s `firing`-th firing on
    it, its violation fact (`which` 0) or its emitted fact (1)."""
    return (parent[0], parent[1] + 1, (*parent[2], (rule, firing, which)))


def before(pos: Pos, frontier: Frontier | tuple[()]) -> bool:
    """Whether the item at `pos` is complete behind `frontier` (and so may be processed)."""
    root: tuple[Any, ...] = pos[0]
    return root < frontier
