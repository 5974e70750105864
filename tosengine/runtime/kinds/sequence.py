"""Stage decide (sequence rules): partial matches per (rule, key), advanced step by step in order."""

from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from tosengine.policy.model import Rule, Sequence
from tosengine.runtime.clock import DueHeap
from tosengine.runtime.evaluate import Env
from tosengine.runtime.items import Firing, Item
from tosengine.runtime.kinds.base import NoDeadlines, Roles, RuntimeKind

if TYPE_CHECKING:
    from tosengine.runtime.program import CompiledRule
    from tosengine.runtime.snapshot import Decoder, Encoder

__all__ = ["SEQUENCE", "Partial", "SequenceSpec"]


@dataclass(frozen=True)
class SequenceSpec:
    """A sequence rule compiled: its step names (bound in the environment) and `within`."""

    names: tuple[str, ...]
    within: timedelta | None


@dataclass(slots=True)  # one per open partial match: many
class Partial:
    """A sequence's partial match: the items of its first steps."""

    items: list[Item]


class SequenceStore(NoDeadlines):
    """Every open partial match of every sequence rule in one partition."""

    sweeps: ClassVar[bool] = True

    def __init__(self, max_partials: int) -> None:
        self.partials: dict[tuple[int, str], list[Partial]] = {}
        self.expiry: DueHeap[tuple[int, str]] = DueHeap()
        self.max_partials = max_partials
        self.dropped = 0  # partial matches dropped by the per-key cap (sequences without `within`)

    def offer(self, rule: CompiledRule, key: str, item: Item, roles: Roles, now: datetime) -> list[Firing]:
        """Advance the partial matches the item fits (completing some), then start one if it is a first step."""
        spec: SequenceSpec = rule.spec
        steps = {step for _, step in roles}
        names, w = spec.names, spec.within
        out: list[Firing] = []
        parts = self.partials.get((rule.index, key))
        if parts:
            keep: list[Partial] = []
            for p in parts:
                if w is not None and p.items[0].time + w < now:
                    continue  # expired: the clock is past its window
                j = len(p.items)
                if j in steps and item.time >= p.items[-1].time and (w is None or item.time - p.items[0].time <= w):
                    joined = rule.joined[("step", j)]
                    env: Env = {names[i]: it.fields for i, it in enumerate(p.items)}
                    env[item.kind] = item.fields
                    if joined is None or joined(env) is True:
                        if j + 1 == len(names):
                            env[names[j]] = item.fields
                            out.append(Firing(rule, key, item.time, [*p.items, item], env))
                            continue
                        p.items.append(item)
                keep.append(p)
            parts[:] = keep
        if 0 in steps:
            if parts is None:
                parts = self.partials[(rule.index, key)] = []
            parts.append(Partial([item]))
            if len(parts) > self.max_partials:
                parts.pop(0)
                self.dropped += 1
            if w is not None:
                self.expiry.push(item.time + w, (rule.index, key))
        if parts is not None and not parts:
            del self.partials[(rule.index, key)]
        return out

    def sweep(self, rules: Seq[CompiledRule], now: datetime) -> None:
        """Forget partial matches whose window the clock has passed."""
        head = self.expiry.entries
        if not head or head[0][0] >= now:  # the usual case: nothing is due
            return
        while (due := self.expiry.pop_before(now)) is not None:
            _, (ri, key) = due
            parts = self.partials.get((ri, key))
            w = rules[ri].spec.within
            if parts is not None and w is not None:
                parts[:] = [p for p in parts if p.items[0].time + w >= now]
                if not parts:
                    del self.partials[(ri, key)]

    def save(self, rules: Seq[CompiledRule], enc: Encoder) -> list[Any]:
        """[[rule id, key, [[items of a partial match], ...]], ...], partial matches in the order started."""
        return [
            [rules[ri].rule.id, key, [[enc.item(it) for it in p.items] for p in parts]]
            for (ri, key), parts in self.partials.items()
        ]

    def load(self, data: list[Any], dec: Decoder) -> None:
        """The partial matches back, with an expiry entry for each (as when it was started)."""
        for rule_id, key, parts in data:
            cr = dec.rule(rule_id)
            if cr is None:
                continue
            restored = self.partials[(cr.index, key)] = [Partial([dec.item(at) for at in p]) for p in parts]
            w = cr.spec.within
            if w is not None:
                for p in restored:
                    self.expiry.push(p.items[0].time + w, (cr.index, key))

    @property
    def alarms(self) -> DueHeap[Any]:
        """When this store next has something to do: its earliest entry is never later."""
        return self.expiry

    def size(self) -> dict[str, int]:
        """Keys with partial matches, and how many."""
        return {
            "sequence_keys": len(self.partials),
            "partials": sum(len(v) for v in self.partials.values()),
            "sequence_expiry": len(self.expiry),
        }


def _compile(rule: Rule) -> SequenceSpec:
    body = rule.body
    assert isinstance(body, Sequence)
    return SequenceSpec(tuple(s.name for s in body.steps), body.within)


SEQUENCE = RuntimeKind("sequence", _compile, lambda options: SequenceStore(options.max_partials_per_key))
