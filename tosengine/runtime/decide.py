"""Stage decide (stateful rules): per-(rule, key) state of thresholds, sequences and obligations, and
the decisions over it. The engine calls these in rule order; each calls back `fire` when a rule matches.
The semantics are in docs/semantics.md."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any, Protocol

from tosengine.runtime.clock import DueHeap
from tosengine.runtime.evaluate import MISSING, Env, Fn
from tosengine.runtime.rules import ABSENT, CompiledRule, Item, Obligation, Partial, ThresholdState

__all__ = ["Decisions"]


class Fire(Protocol):
    """The engine's callback when a rule matches."""

    def __call__(self, cr: CompiledRule, key: str, time: datetime, items: list[Item], env: Env,
                 *, deadline: datetime | None = None) -> None: ...


class Decisions:
    """All per-key state of the stateful rule kinds. `expiry` is shared with the engine's sweep."""

    def __init__(self, joined: list[Fn | None], fire: Fire, expiry: DueHeap[tuple[str, int, str]],
                 max_partials: int, stats: dict[str, int]) -> None:
        self._joined = joined
        self._fire_rule = fire
        self._expiry = expiry
        self._max_partials = max_partials
        self._stats = stats
        self.thresholds: dict[tuple[int, str], ThresholdState] = {}
        self.partials: dict[tuple[int, str], list[Partial]] = {}
        self.obligations: dict[tuple[int, str], list[Obligation]] = {}
        self.deadlines: DueHeap[tuple[int, str, Obligation]] = DueHeap()

    def threshold(self, cr: CompiledRule, key: str, item: Item, now: datetime) -> None:
        """Count the item in its window; fire at `count`, then stay quiet until the window drops below it."""
        th = cr.rule.threshold
        assert th is not None
        st = self.thresholds.get((cr.index, key))
        if st is None:
            st = self.thresholds[(cr.index, key)] = ThresholdState()
            self._expiry.push(item.time + th.within, ("threshold", cr.index, key))
        horizon = now - th.within
        while st.items and st.items[0][0].time < horizon:
            st.forget()
        value = hashable(cr.distinct({item.kind: item.fields})) if cr.distinct is not None else None
        if item.time == now:
            # The usual case: an item at the clock's time has every kept item in its window.
            if cr.distinct is None:
                n = len(st.items) + 1
            else:
                n = len(st.counts) + (value is not ABSENT and value not in st.counts)
            window = None
        else:
            # A late item: its window [t - within, t] may leave out kept items on either side.
            lo = max(item.time - th.within, horizon)
            window = [(it, v) for it, v in st.items if lo <= it.time <= item.time]
            window.append((item, value))
            n = len({v for _, v in window if v is not ABSENT}) if cr.distinct is not None else len(window)
        if st.armed and n >= th.count:
            st.armed = False
            members = window if window is not None else [*st.items, (item, value)]
            # Kept items are in time order (for trimming); evidence is in stream order.
            self._fire_rule(cr, key, item.time, sorted((it for it, _ in members), key=lambda it: it.seq),
                       {item.kind: item.fields})
        elif not st.armed and n < th.count:
            st.armed = True
        st.keep(item, value)

    def sequence(self, cr: CompiledRule, key: str, item: Item, roles: list[tuple[str, int, int]],
                 now: datetime) -> None:
        """Advance the partial matches the item fits (completing some), then start one if it is a first step."""
        steps = {step: tid for _, step, tid in roles}
        names = cr.step_names
        w = cr.seq_within
        parts = self.partials.get((cr.index, key))
        if parts:
            keep: list[Partial] = []
            for p in parts:
                if w is not None and p.items[0].time + w < now:
                    continue  # expired: the clock is past its window
                j = len(p.items)
                tid = steps.get(j)
                if tid is not None and item.time >= p.items[-1].time and \
                        (w is None or item.time - p.items[0].time <= w):
                    joined = self._joined[tid]
                    env: Env = {names[i]: it.fields for i, it in enumerate(p.items)}
                    env[item.kind] = item.fields
                    if joined is None or joined(env) is True:
                        if j + 1 == len(names):
                            env.update({names[j]: item.fields})
                            self._fire_rule(cr, key, item.time, [*p.items, item], env)
                            continue
                        p.items.append(item)
                keep.append(p)
            parts[:] = keep
        if 0 in steps:
            if parts is None:
                parts = self.partials[(cr.index, key)] = []
            parts.append(Partial([item]))
            if len(parts) > self._max_partials:
                parts.pop(0)
                self._stats["partials_dropped"] += 1
            if w is not None:
                self._expiry.push(item.time + w, ("sequence", cr.index, key))
        if parts is not None and not parts:
            del self.partials[(cr.index, key)]

    def expect(self, cr: CompiledRule, key: str, item: Item, roles: list[tuple[str, int, int]]) -> None:
        """Fulfil the open obligations the item satisfies, then open one if it is an `after` item."""
        role_ids = {role: tid for role, _, tid in roles}
        fulfil = role_ids.get("fulfil")
        if fulfil is not None:
            obs = self.obligations.get((cr.index, key))
            if obs:
                joined = self._joined[fulfil]
                for ob in list(obs):
                    a = ob.after
                    if a.seq < item.seq and a.time <= item.time <= ob.deadline and \
                            (joined is None or joined({"after": a.fields, item.kind: item.fields}) is True):
                        ob.open = False
                        obs.remove(ob)
                if not obs:
                    del self.obligations[(cr.index, key)]
        if "after" in role_ids:
            assert cr.within is not None
            offset = cr.within({"after": item.fields})
            if type(offset) is not timedelta:
                return
            try:
                deadline = item.time + offset
            except OverflowError:
                return
            ob = Obligation(item, deadline)
            self.obligations.setdefault((cr.index, key), []).append(ob)
            self.deadlines.push(deadline, (cr.index, key, ob))


    def lapsed(self, now: datetime) -> Iterator[tuple[datetime, int, str, Obligation]]:
        """Open obligations whose deadline is strictly before `now`, earliest first, each closed as it is
        yielded (the caller fires it; new obligations opened meanwhile are seen on the next step)."""
        while (due := self.deadlines.pop_before(now)) is not None:
            deadline, (ri, key, ob) = due
            if not ob.open:
                continue
            ob.open = False
            obs = self.obligations.get((ri, key))
            if obs is not None:
                obs.remove(ob)
                if not obs:
                    del self.obligations[(ri, key)]
            yield deadline, ri, key, ob

    def sweep(self, what: str, cr: CompiledRule, key: str, now: datetime) -> None:
        """Forget a threshold window or partial matches behind the clock (from the shared expiry heap)."""
        ri = cr.index
        if what == "threshold":
            st = self.thresholds.get((ri, key))
            assert cr.rule.threshold is not None
            if st is None:
                return
            until = st.items[-1][0].time + cr.rule.threshold.within if st.items else now
            if until < now or not st.items:
                # Dropping `armed` too is equivalent: count >= 2, so the next lone item re-arms anyway.
                del self.thresholds[(ri, key)]
            else:
                # One entry per live key: look again when its newest item leaves the window.
                self._expiry.push(until, ("threshold", ri, key))
            return
        parts = self.partials.get((ri, key))
        if parts is not None and cr.seq_within is not None:
            w = cr.seq_within
            parts[:] = [p for p in parts if p.items[0].time + w >= now]
            if not parts:
                del self.partials[(ri, key)]

    def size(self) -> dict[str, int]:
        """How much state is held."""
        return {
            "threshold_keys": len(self.thresholds),
            "threshold_items": sum(len(s.items) for s in self.thresholds.values()),
            "sequence_keys": len(self.partials),
            "partials": sum(len(v) for v in self.partials.values()),
            "obligations": sum(len(v) for v in self.obligations.values()),
            "deadline_heap": len(self.deadlines),
        }


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
