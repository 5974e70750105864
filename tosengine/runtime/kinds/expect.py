"""Stage decide (expect rules): obligations per (rule, key), fulfilled by a later item or lapsing at
their deadline (the clock strictly past it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from tosengine.policy.model import Expect, Rule
from tosengine.runtime.clock import DueHeap
from tosengine.runtime.evaluate import Fn, compile_expr
from tosengine.runtime.items import Firing, Item
from tosengine.runtime.kinds.base import Roles, RuntimeKind

if TYPE_CHECKING:
    from tosengine.runtime.program import CompiledRule
    from tosengine.runtime.snapshot import Decoder, Encoder

__all__ = ["EXPECT", "ExpectSpec", "Obligation"]


@dataclass(frozen=True)
class ExpectSpec:
    """An expect rule compiled: the deadline offset, computed from `after`."""

    within: Fn


@dataclass(slots=True)  # one per open obligation: many
class Obligation:
    """An open expect obligation."""

    after: Item
    deadline: datetime
    open: bool = True


class ExpectStore:
    """Every open obligation of every expect rule in one partition, and their deadlines."""

    sweeps: ClassVar[bool] = False
    lapses: ClassVar[bool] = True

    def __init__(self) -> None:
        self.obligations: dict[tuple[int, str], list[Obligation]] = {}
        self.deadlines: DueHeap[tuple[int, str, Obligation]] = DueHeap()

    def offer(self, rule: CompiledRule, key: str, item: Item, roles: Roles, now: datetime) -> list[Firing]:
        """Fulfil the open obligations the item satisfies, then open one if it is an `after` item."""
        fired = {role for role, _ in roles}
        if "fulfil" in fired:
            obs = self.obligations.get((rule.index, key))
            if obs:
                joined = rule.joined[("fulfil", 0)]
                for ob in list(obs):
                    a = ob.after
                    if (
                        a.seq < item.seq
                        and a.time <= item.time <= ob.deadline
                        and (joined is None or joined({"after": a.fields, item.kind: item.fields}) is True)
                    ):
                        ob.open = False
                        obs.remove(ob)
                if not obs:
                    del self.obligations[(rule.index, key)]
                # A fulfilled obligation leaves the heap once it reaches the head: now, not at its deadline
                # (the partition asks next_due only when a head's deadline has come).
                self._drop_fulfilled()
        if "after" in fired:
            spec: ExpectSpec = rule.spec
            offset = spec.within({"after": item.fields})
            if type(offset) is not timedelta:
                return []
            try:
                deadline = item.time + offset
            except OverflowError:
                return []
            ob = Obligation(item, deadline)
            self.obligations.setdefault((rule.index, key), []).append(ob)
            self.deadlines.push(deadline, (rule.index, key, ob))
        return []

    def sweep(self, rules: Sequence[CompiledRule], now: datetime) -> None:
        """Obligations leave by fulfilment or lapse, never by sweeping."""

    def next_due(self) -> datetime | None:
        """The earliest deadline of an open obligation (fulfilled ones are dropped from the heap's head)."""
        self._drop_fulfilled()
        return self.deadlines.peek()

    def _drop_fulfilled(self) -> None:
        """Pop fulfilled obligations off the heap's head, with the items they hold."""
        heap = self.deadlines
        while (head := heap.peek_entry()) is not None and not head[2].open:
            heap.pop()

    def pop_due(self, rules: Sequence[CompiledRule], now: datetime) -> Firing | None:
        """The earliest open obligation whose deadline is strictly before `now`, closed and fired."""
        while (due := self.deadlines.pop_before(now)) is not None:
            deadline, (ri, key, ob) = due
            if ob.open:
                return self._lapse(rules, ri, key, ob, deadline)
        return None

    def peek_due(self) -> tuple[datetime, Item, int] | None:
        """The earliest open obligation, left in place: (deadline, its `after` item, its rule's index)."""
        if self.next_due() is None:
            return None
        deadline, _, (ri, _key, ob) = self.deadlines.entries[0]
        return deadline, ob.after, ri

    def pop_next(self, rules: Sequence[CompiledRule]) -> Firing | None:
        """The earliest open obligation (the one `peek_due` names), closed and fired whatever the clock:
        a Kafka worker lapses it when the watermark passes it (tosengine/kafka/stage.py)."""
        while self.deadlines.entries:
            deadline, (ri, key, ob) = self.deadlines.pop()
            if ob.open:
                return self._lapse(rules, ri, key, ob, deadline)
        return None

    def _lapse(self, rules: Sequence[CompiledRule], ri: int, key: str, ob: Obligation, deadline: datetime) -> Firing:
        ob.open = False
        obs = self.obligations.get((ri, key))
        if obs is not None:
            obs.remove(ob)
            if not obs:
                del self.obligations[(ri, key)]
        after = ob.after
        return Firing(
            rules[ri], key, deadline, [after], {"after": after.fields, after.kind: after.fields}, deadline=deadline
        )

    def save(self, rules: Sequence[CompiledRule], enc: Encoder) -> list[Any]:
        """[[rule id, key, [[the after item, deadline], ...]], ...]: the open obligations."""
        return [
            [rules[ri].rule.id, key, [[enc.item(ob.after), enc.time(ob.deadline)] for ob in obs]]
            for (ri, key), obs in self.obligations.items()
        ]

    def load(self, data: list[Any], dec: Decoder) -> None:
        """The open obligations back, their deadlines pushed in the order they were opened: by deadline,
        then the `after` item's stream position, then rule order, as the live heap orders them."""
        opened: list[tuple[datetime, int, int, str, Obligation]] = []
        for rule_id, key, obs in data:
            cr = dec.rule(rule_id)
            if cr is None:
                continue
            restored = self.obligations[(cr.index, key)] = [Obligation(dec.item(a), dec.time(d)) for a, d in obs]
            opened += [(ob.deadline, ob.after.seq, cr.index, key, ob) for ob in restored]
        for deadline, _, ri, key, ob in sorted(opened, key=lambda o: o[:3]):
            self.deadlines.push(deadline, (ri, key, ob))

    @property
    def alarms(self) -> DueHeap[Any]:
        """When this store next has something to do: its earliest entry is never later."""
        return self.deadlines

    def size(self) -> dict[str, int]:
        """Open obligations, and the deadline heap (which also holds fulfilled ones until they are due)."""
        return {"obligations": sum(len(v) for v in self.obligations.values()), "deadline_heap": len(self.deadlines)}


def _compile(rule: Rule) -> ExpectSpec:
    body = rule.body
    assert isinstance(body, Expect)
    return ExpectSpec(compile_expr(body.within))


EXPECT = RuntimeKind("expect", _compile, lambda options: ExpectStore())
