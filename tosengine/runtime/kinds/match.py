"""Stage decide (match rules): every matching item is a violation; no state."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from tosengine.policy.model import Rule
from tosengine.runtime.clock import DueHeap
from tosengine.runtime.items import Firing, Item
from tosengine.runtime.kinds.base import NoDeadlines, Roles, RuntimeKind

if TYPE_CHECKING:
    from tosengine.runtime.program import CompiledRule
    from tosengine.runtime.snapshot import Decoder, Encoder

__all__ = ["MATCH"]

_NEVER: DueHeap[Any] = DueHeap()  # MatchStore's alarms: always empty


class MatchStore(NoDeadlines):
    """Match rules keep nothing: the item that matched is the whole of the evidence."""

    sweeps: ClassVar[bool] = False

    def offer(self, rule: CompiledRule, key: str, item: Item, roles: Roles, now: datetime) -> list[Firing]:
        """One firing on the item."""
        return [Firing(rule, key, item.time, [item], {item.kind: item.fields})]

    def sweep(self, rules: Sequence[CompiledRule], now: datetime) -> None:
        """Nothing to forget."""

    @property
    def alarms(self) -> DueHeap[Any]:
        """Never rings: nothing is swept and nothing lapses."""
        return _NEVER

    def size(self) -> dict[str, int]:
        """Nothing held."""
        return {}

    def save(self, rules: Sequence[CompiledRule], enc: Encoder) -> list[Any]:
        """Nothing to save."""
        return []

    def load(self, data: list[Any], dec: Decoder) -> None:
        """Nothing to load."""


def _compile(rule: Rule) -> None:
    return None


MATCH = RuntimeKind("match", _compile, lambda options: MatchStore())
