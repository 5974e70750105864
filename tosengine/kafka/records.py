"""Stage route (wire format): events, facts, violations, watermarks and rejections <-> repartition records.

Every record of a repartition topic says in its headers what it is (`k`: e event, f fact, v violation,
w watermark, r rejection), who sent it (`s`: `in/<n>` for the router of an input partition, `<stage>/<n>`
for a stage partition) and, for what is processed in order, its position (`p`, runtime/order.py). The
value is the event's JSON text as received, or a JSON object (orjson) for the rest.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import orjson

from tosengine.errors import EventError
from tosengine.events import EventRecord, parse_time
from tosengine.runtime.items import Item
from tosengine.runtime.order import Frontier, Pos
from tosengine.runtime.snapshot import from_json_value, json_value
from tosengine.violation import Violation

__all__ = [
    "EVENT",
    "FACT",
    "REJECT",
    "VIOLATION",
    "WATERMARK",
    "Headers",
    "Out",
    "Record",
    "header_items",
    "tuples",
]

EVENT, FACT, VIOLATION, WATERMARK, REJECT = "e", "f", "v", "w", "r"
# A Kafka record's headers as confluent-kafka gives and takes them.
Headers = dict[str, str | bytes | None] | list[tuple[str, str | bytes | None]] | None
_TUPLE_FIELDS = frozenset(f.name for f in dataclasses.fields(Violation) if str(f.type).startswith("tuple"))


def tuples(v: Any) -> Any:
    """A position decoded from JSON: its lists as tuples (positions compare as tuples)."""
    return tuple(tuples(x) for x in v) if isinstance(v, list) else v


@dataclass(slots=True)
class Record:
    """One repartition record: what it is, who sent it, its position (if processed in order), its value."""

    kind: str
    source: str
    pos: Pos | None
    value: bytes

    # ------------------------------------------------------------------ Kafka

    def headers(self) -> list[tuple[str, str | bytes | None]]:
        """The record's headers as produced."""
        out: list[tuple[str, str | bytes | None]] = [("k", self.kind.encode()), ("s", self.source.encode())]
        if self.pos is not None:
            out.append(("p", orjson.dumps(self.pos)))
        return out

    @classmethod
    def of_kafka(cls, headers: Headers, value: bytes | None) -> Record:
        """A consumed record back (ValueError if it is not one of ours)."""
        kind = source = ""
        pos: Pos | None = None
        for name, raw in header_items(headers):
            if raw is None:
                continue
            if name == "k":
                kind = raw.decode()
            elif name == "s":
                source = raw.decode()
            elif name == "p":
                pos = tuples(orjson.loads(raw))
        if kind not in (EVENT, FACT, VIOLATION, WATERMARK, REJECT) or not source:
            raise ValueError(f"not a tosengine repartition record (kind {kind!r}, source {source!r})")
        return cls(kind, source, pos, value or b"")

    # ------------------------------------------------------------------ what records carry

    @classmethod
    def event(cls, source: str, pos: Pos, text: bytes) -> Record:
        """An event, as its JSON text."""
        return cls(EVENT, source, pos, text)

    @classmethod
    def fact(cls, source: str, item: Item) -> Record:
        """A derived fact at its position: its fields, the events behind it and its derivation chain."""
        body = {
            "f": json_value(item.fields),
            "r": [[r.time_text, {k: v for k, v in r.fields.items() if k != "time"}] for r in item.events],
            "c": list(item.chain),
        }
        return cls(FACT, source, item.pos, orjson.dumps(body))

    def item(self) -> Item:
        """The fact a FACT record carries, at its position (its stream position is set where offered)."""
        body = orjson.loads(self.value)
        fields = from_json_value(body["f"])
        events = tuple(EventRecord({**f, "time": parse_time(t)}, t) for t, f in body["r"])
        it = Item(
            "fact", fields, fields["time"], 0, fields["id"], tuple(r.id for r in events), events, tuple(body["c"])
        )
        it.pos = self.pos
        return it

    @classmethod
    def violation(cls, source: str, pos: Pos, v: Violation) -> Record:
        """A violation on its way to the ladder, at its position."""
        body = {f.name: json_value(getattr(v, f.name)) for f in dataclasses.fields(v)}
        return cls(VIOLATION, source, pos, orjson.dumps(body))

    def violation_of(self) -> Violation:
        """The violation a VIOLATION record carries."""
        body = from_json_value(orjson.loads(self.value))
        known = {f.name for f in dataclasses.fields(Violation)}
        values: dict[str, Any] = {k: tuple(v) if k in _TUPLE_FIELDS else v for k, v in body.items() if k in known}
        return Violation(**values)

    @classmethod
    def watermark(cls, source: str, frontier: Frontier | tuple[()], idle: bool = False) -> Record:
        """A promise: every record `source` will send with a position before `frontier` has been sent.
        `idle`: an input partition with nothing new for a while, which stops holding the others back."""
        return cls(WATERMARK, source, None, orjson.dumps({"f": list(frontier) or None, "idle": idle}))

    def frontier(self) -> tuple[Frontier | tuple[()], bool]:
        """(frontier, idle) of a WATERMARK record."""
        body = orjson.loads(self.value)
        f = body.get("f")
        return (int(f[0]), int(f[1])) if f else (), bool(body.get("idle"))

    @classmethod
    def reject(cls, source: str, raw: str, error: EventError, origin: str) -> Record:
        """Input that is not an event to process (invalid, or behind the watermark), for the dead letter."""
        body = {"raw": raw, "field": error.field, "problem": error.problem, "line": error.line, "origin": origin}
        return cls(REJECT, source, None, orjson.dumps(body))

    def rejection(self) -> tuple[str, EventError, str]:
        """(raw text, error, origin) of a REJECT record."""
        body = orjson.loads(self.value)
        return body["raw"], EventError(body["field"], body["problem"], line=body.get("line")), body["origin"]


def header_items(headers: Headers) -> list[tuple[str, bytes | None]]:
    """Headers as (name, bytes) pairs, whichever shape they came in."""
    items = headers.items() if isinstance(headers, dict) else headers or ()
    return [(k, v.encode() if isinstance(v, str) else v) for k, v in items]


# An outgoing record: (stage, partition of the stage's topic, the key it is partitioned by, record).
Out = tuple[str, int, str | None, Record]
