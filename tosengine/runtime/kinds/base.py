"""Stage decide (the kinds' common shape): what every rule kind's runtime half provides."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from tosengine.policy.model import Rule
from tosengine.runtime.clock import DueHeap
from tosengine.runtime.items import Firing, Item

if TYPE_CHECKING:
    from tosengine.runtime.program import CompiledRule
    from tosengine.runtime.snapshot import Decoder, Encoder

__all__ = ["KindStore", "Roles", "RuntimeKind", "StateOptions"]

# The triggers of one rule an item satisfied: (role, step) pairs, e.g. ("step", 1) or ("fulfil", 0).
Roles = list[tuple[str, int]]


@dataclass(frozen=True)
class StateOptions:
    """The engine's settings that shape per-partition state."""

    dedupe_window: timedelta = timedelta(days=7)
    max_partials_per_key: int = 10_000


class KindStore(Protocol):
    """One rule kind's state in one partition, keyed by (rule index, key).

    `offer` decides on one item (the rule's triggers it satisfied are `roles`) and returns the firings;
    `sweep` forgets what no future item can use once the clock is at `now`; `next_due`/`pop_due` are
    the kind's own deadlines (obligations lapse strictly before the clock). `sweeps` and `lapses` say
    whether the store has anything to sweep or anything that lapses (the others are not asked).
    """

    sweeps: ClassVar[bool]
    lapses: ClassVar[bool]

    @property
    def alarms(self) -> DueHeap[Any]:
        """When the store next has work on a clock move (a sweep, a deadline). Its earliest entry is never
        later than that, though it may be an entry already done (a fulfilled obligation), so while the
        clock has not passed it the store need not be asked. Read only of stores that sweep or lapse."""
        ...

    def offer(self, rule: CompiledRule, key: str, item: Item, roles: Roles, now: datetime) -> list[Firing]:
        """Decide on one item for one rule and key."""
        ...

    def sweep(self, rules: Sequence[CompiledRule], now: datetime) -> None:
        """Forget state behind the clock."""
        ...

    def next_due(self) -> datetime | None:
        """The earliest time at which `pop_due` can give a firing, if any."""
        ...

    def pop_due(self, rules: Sequence[CompiledRule], now: datetime) -> Firing | None:
        """The earliest firing due strictly before `now`, removed; None if there is none."""
        ...

    def peek_due(self) -> tuple[datetime, Item, int] | None:
        """The next thing due, left in place: (its deadline, the item that opened it, its rule's index)."""
        ...

    def pop_next(self, rules: Sequence[CompiledRule]) -> Firing | None:
        """The next thing due (the one `peek_due` names), removed and fired, whatever the clock."""
        ...

    def size(self) -> dict[str, int]:
        """How much state is held, by what."""
        ...

    def save(self, rules: Sequence[CompiledRule], enc: Encoder) -> list[Any]:
        """The store as JSON (docs/state.md), rules named by id, items by their index in `enc`."""
        ...

    def load(self, data: list[Any], dec: Decoder) -> None:
        """Fill an empty store from `save`'s output; entries of rules `dec` does not carry over are skipped."""
        ...


@dataclass(frozen=True)
class RuntimeKind:
    """The runtime half of a rule kind: its expressions compiled for deciding, and its state."""

    name: str
    compile: Callable[[Rule], Any]  # -> the kind's spec, kept on CompiledRule.spec
    new_store: Callable[[StateOptions], KindStore]


class NoDeadlines:
    """For kinds with nothing that lapses."""

    lapses: ClassVar[bool] = False

    def next_due(self) -> datetime | None:
        """Nothing is ever due."""
        return None

    def pop_due(self, rules: Sequence[CompiledRule], now: datetime) -> Firing | None:
        """Nothing is ever due."""
        return None

    def peek_due(self) -> tuple[datetime, Item, int] | None:
        """Nothing is ever due."""
        return None

    def pop_next(self, rules: Sequence[CompiledRule]) -> Firing | None:
        """Nothing is ever due."""
        return None
