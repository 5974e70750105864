"""Stage decide (threshold rules): a sliding event-time window of matching items per (rule, key).

The window of an item at time t is [t - within, t] (and no earlier than the clock - within); the rule
fires when the window holds `count` items (or distinct values) and stays quiet until an item's window
holds fewer, which re-arms it. docs/semantics.md has the precise rules.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from tosengine.policy.model import Rule, Threshold
from tosengine.runtime.clock import DueHeap
from tosengine.runtime.evaluate import MISSING, Fn, compile_expr
from tosengine.runtime.items import Firing, Item
from tosengine.runtime.kinds.base import NoDeadlines, Roles, RuntimeKind

if TYPE_CHECKING:
    from tosengine.runtime.program import CompiledRule
    from tosengine.runtime.snapshot import Decoder, Encoder

__all__ = ["ABSENT", "THRESHOLD", "ThresholdSpec", "ThresholdState", "hashable"]

# The `distinct` value of an item where the expression is absent: kept, but never counted. Compared
# with ==, not `is`: the native build (tosengine/_native.py) holds a fixed-length tuple unboxed, so it
# keeps no identity there. No value of the language is `==` to it (hashable() gives every value a 2-tuple).
ABSENT = ("absent",)


def hashable(v: Any) -> Any:
    """A hashable stand-in for a value, equal exactly when the values are `==` in the language."""
    if v is MISSING:
        return ABSENT
    if isinstance(v, list):
        return ("list", tuple(hashable(x) for x in v))
    if isinstance(v, dict):
        return ("dict", tuple(sorted((k, hashable(x)) for k, x in v.items())))
    if isinstance(v, bool):
        return ("bool", v)
    if isinstance(v, int | float):
        return ("num", v)
    return (type(v).__name__, v)


@dataclass(frozen=True)
class ThresholdSpec:
    """A threshold rule compiled: its count, window and `distinct` closure."""

    count: int
    within: timedelta
    distinct: Fn | None


def _time(entry: tuple[Item, Any]) -> datetime:
    return entry[0].time


@dataclass(slots=True)  # one per open window: many
class ThresholdState:
    """The matching items kept for one (rule, key) in time order, and whether the rule is armed.

    The items are a list in time order from `start` on (forgotten ones before it are dropped in bulk),
    so a late item is placed by bisection and a late item's window is sliced, not scanned. `counts`
    tracks how often each distinct value occurs among the kept items, so the distinct count of an
    in-order item's window is O(1).
    """

    entries: list[tuple[Item, Any]] = field(default_factory=list)
    start: int = 0
    counts: dict[Any, int] = field(default_factory=dict)
    armed: bool = True

    def __len__(self) -> int:
        return len(self.entries) - self.start

    @property
    def items(self) -> list[tuple[Item, Any]]:
        """The kept items, in time order."""
        return self.entries[self.start :]

    def newest(self) -> datetime | None:
        """The time of the newest kept item."""
        return self.entries[-1][0].time if len(self.entries) > self.start else None

    def keep(self, item: Item, value: Any) -> None:
        """Add an item, keeping time order (a late item is placed by bisection, after equal times)."""
        entries = self.entries
        if len(entries) == self.start or entries[-1][0].time <= item.time:
            entries.append((item, value))
        else:
            entries.insert(bisect.bisect_right(entries, item.time, lo=self.start, key=_time), (item, value))
        if value is not None and value != ABSENT:
            self.counts[value] = self.counts.get(value, 0) + 1

    def forget_before(self, horizon: datetime) -> None:
        """Drop the kept items older than `horizon`."""
        entries, start = self.entries, self.start
        while start < len(entries) and entries[start][0].time < horizon:
            value = entries[start][1]
            if value is not None and value != ABSENT:
                left = self.counts[value] - 1
                if left:
                    self.counts[value] = left
                else:
                    del self.counts[value]
            start += 1
        if start > 32 and start * 2 > len(entries):  # drop the forgotten prefix in one go, now and then
            del entries[:start]
            start = 0
        self.start = start

    def between(self, lo: datetime, hi: datetime) -> list[tuple[Item, Any]]:
        """The kept items with lo <= time <= hi, in time order."""
        entries = self.entries
        first = bisect.bisect_left(entries, lo, lo=self.start, key=_time)
        return entries[first : bisect.bisect_right(entries, hi, lo=first, key=_time)]


class ThresholdStore(NoDeadlines):
    """Every open window of every threshold rule in one partition."""

    sweeps: ClassVar[bool] = True

    def __init__(self) -> None:
        self.windows: dict[tuple[int, str], ThresholdState] = {}
        # One entry per live (rule, key): when its newest item may have left the window.
        self.expiry: DueHeap[tuple[int, str]] = DueHeap()

    def offer(self, rule: CompiledRule, key: str, item: Item, roles: Roles, now: datetime) -> list[Firing]:
        """Count the item in its window; fire at `count`, then stay quiet until the window drops below it."""
        spec: ThresholdSpec = rule.spec
        st = self.windows.get((rule.index, key))
        if st is None:
            st = self.windows[(rule.index, key)] = ThresholdState()
            self.expiry.push(item.time + spec.within, (rule.index, key))
        horizon = now - spec.within
        st.forget_before(horizon)
        value = hashable(spec.distinct({item.kind: item.fields})) if spec.distinct is not None else None
        if item.time == now:
            # The usual case: an item at the clock's time has every kept item in its window.
            n = len(st) + 1 if spec.distinct is None else len(st.counts) + (value != ABSENT and value not in st.counts)
            window = None
        else:
            # A late item: its window [t - within, t] may leave out kept items on either side.
            lo = max(item.time - spec.within, horizon)
            window = st.between(lo, item.time)
            window.append((item, value))
            n = len({v for _, v in window if v != ABSENT}) if spec.distinct is not None else len(window)
        out: list[Firing] = []
        if st.armed and n >= spec.count:
            st.armed = False
            members = window if window is not None else [*st.items, (item, value)]
            # Kept items are in time order (for trimming); evidence is in stream order.
            out.append(
                Firing(
                    rule,
                    key,
                    item.time,
                    sorted((it for it, _ in members), key=lambda it: it.seq),
                    {item.kind: item.fields},
                )
            )
        elif not st.armed and n < spec.count:
            st.armed = True
        st.keep(item, value)
        return out

    def sweep(self, rules: Sequence[CompiledRule], now: datetime) -> None:
        """Forget windows whose newest item is behind the clock."""
        head = self.expiry.entries
        if not head or head[0][0] >= now:  # the usual case: nothing is due
            return
        while (due := self.expiry.pop_before(now)) is not None:
            _, (ri, key) = due
            st = self.windows.get((ri, key))
            if st is None:
                continue
            spec: ThresholdSpec = rules[ri].spec
            newest = st.newest()
            until = newest + spec.within if newest is not None else now
            if until < now or newest is None:
                # Dropping `armed` too is equivalent: count >= 2, so the next lone item re-arms anyway.
                del self.windows[(ri, key)]
            else:
                self.expiry.push(until, (ri, key))

    def save(self, rules: Sequence[CompiledRule], enc: Encoder) -> list[Any]:
        """[[rule id, key, armed, [items in time order]], ...] (empty windows are not kept)."""
        return [
            [rules[ri].rule.id, key, st.armed, [enc.item(it) for it, _ in st.items]]
            for (ri, key), st in self.windows.items()
            if len(st)
        ]

    def load(self, data: list[Any], dec: Decoder) -> None:
        """The windows back, their distinct values recomputed, one expiry entry per window."""
        for rule_id, key, armed, items in data:
            cr = dec.rule(rule_id)
            if cr is None:
                continue
            spec: ThresholdSpec = cr.spec
            st = self.windows[(cr.index, key)] = ThresholdState(armed=armed)
            for at in items:
                it = dec.item(at)
                st.keep(it, hashable(spec.distinct({it.kind: it.fields})) if spec.distinct is not None else None)
            newest = st.newest()
            if newest is not None:
                self.expiry.push(newest + spec.within, (cr.index, key))

    @property
    def alarms(self) -> DueHeap[Any]:
        """When this store next has something to do: its earliest entry is never later."""
        return self.expiry

    def size(self) -> dict[str, int]:
        """Open windows and the items they keep."""
        return {
            "threshold_keys": len(self.windows),
            "threshold_items": sum(len(s) for s in self.windows.values()),
            "threshold_expiry": len(self.expiry),
        }


def _compile(rule: Rule) -> ThresholdSpec:
    body = rule.body
    assert isinstance(body, Threshold)
    return ThresholdSpec(body.count, body.within, compile_expr(body.distinct) if body.distinct is not None else None)


THRESHOLD = RuntimeKind("threshold", _compile, lambda options: ThresholdStore())
