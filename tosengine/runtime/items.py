"""Stage decide (data): items as rules see them, and a rule's firing on some of them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tosengine.events import EventRecord
from tosengine.policy.model import ItemKind
from tosengine.runtime.evaluate import Env

__all__ = ["Firing", "Item"]


class Item:
    """An event or a fact as rules see it, with its place in the stream and the evidence behind it.

    `fields` is what the rule reads (`event.*` or `fact.*`); `events` are the records of the events
    behind it (for an event, itself), whose ids are `evidence`; `chain` (facts only) is the derived
    facts behind it, itself last, as `explain` shows them. `pos` is the item's place in the one order
    every Kafka worker agrees on (tosengine/kafka/position.py); None in a single process.
    """

    __slots__ = ("causes", "chain", "events", "evidence", "fields", "id", "kind", "pos", "seq", "time")

    def __init__(
        self,
        kind: ItemKind,
        fields: dict[str, Any],
        time: datetime,
        seq: int,
        ident: str,
        evidence: tuple[str, ...],
        events: tuple[EventRecord, ...],
        chain: tuple[dict[str, Any], ...] = (),
    ) -> None:
        self.kind = kind
        self.fields = fields
        self.time = time
        self.seq = seq
        self.id = ident
        self.evidence = evidence
        self.events = events
        self.causes: tuple[str, ...] = (ident,) if kind == "fact" else ()
        self.chain = chain
        self.pos: tuple[Any, ...] | None = None

    @classmethod
    def of_event(cls, record: EventRecord, seq: int) -> Item:
        """The item of an accepted event at stream position `seq`."""
        return cls("event", record.fields, record.time, seq, record.id, (record.id,), (record,))


@dataclass(slots=True)
class Firing:
    """A rule matched: on these items (in stream order), for this key, at this time (an expect's deadline
    for a lapse). `env` binds what the message and emitted data read."""

    rule: Any  # CompiledRule (runtime/program.py imports this module)
    key: str
    time: datetime
    items: list[Item]
    env: Env
    deadline: datetime | None = None
