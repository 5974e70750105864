"""Stage route (input): a record of the input topic -> the repartition records of the stages it can reach.

One Router per input partition a worker owns. It decodes the CloudEvents Kafka binding (structured: the
value is the event's JSON; binary: the attributes in `ce_*` headers, the value is `data`), validates
the event, and writes it, keyed by each stage's key, to the topic of every stage whose rules it can
match, and always to the home stage (which records it). It is at-least-once: a router that restarts
from the last committed offset sends some events again, and positions and (source, id) make the
copies harmless downstream.

Its watermark is the largest event time seen on its partition: it promises (W, 0), or (W, 1) once it
has read to the end of the partition (no event at W can follow from what is there), less the allowed
lateness. An event before what it already promised is *late*: it goes to the dead letter, not on. What
it promised travels with the committed offset (the commit's metadata), so a router that takes over
the partition judges lateness as the last one did.
"""

from __future__ import annotations

import base64
import time
from datetime import timedelta
from typing import Any

import orjson

from tosengine._json import from_json
from tosengine.errors import EventError
from tosengine.events import parse_record
from tosengine.kafka.records import Headers, Out, Record, header_items
from tosengine.kafka.topology import HOME, Topology
from tosengine.runtime.order import Frontier, before, event_pos, micros

__all__ = ["Router", "decode_message", "held_back", "micros_of"]


def decode_message(headers: Headers, value: bytes | None) -> str:
    """An input record as an event's JSON text (CloudEvents Kafka binding, structured or binary mode);
    EventError if it is neither."""
    attrs: dict[str, Any] = {}
    content_type = ""
    for name, raw in header_items(headers):
        lower = name.lower()
        if lower.startswith("ce_") and raw is not None:
            try:
                attrs[lower[3:]] = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise EventError(lower[3:], f"the {name} header is not UTF-8") from None
        elif lower == "content-type" and raw is not None:
            content_type = raw.decode("latin-1")
    if "specversion" not in attrs and "id" not in attrs:  # structured mode: the value is the event
        try:
            return (value or b"").decode("utf-8")
        except UnicodeDecodeError:
            raise EventError("", "the record is not valid UTF-8") from None
    media = content_type.split(";", 1)[0].strip().lower()
    if value:
        if not media or media == "application/json" or media.endswith("+json"):
            try:
                attrs["data"] = from_json(value, allow_inf_nan=False, cache_strings="keys")
            except ValueError as exc:
                raise EventError("data", f"the value is not valid JSON: {exc}") from None
        elif media.startswith("text/") or "charset=" in content_type.lower():
            try:
                attrs["data"] = value.decode("utf-8")
            except UnicodeDecodeError:
                raise EventError("data", "the text value is not valid UTF-8") from None
        else:
            attrs["data_base64"] = base64.b64encode(value).decode("ascii")
        if media and media != "application/json":
            attrs["datacontenttype"] = content_type
    return orjson.dumps(attrs).decode()


class Router:
    """The routing step of input partition `index` (docs/scale-out.md, "Routing").

    `mark` is the commit metadata of the offset it starts from (what the last router promised);
    `lateness` holds the watermark back by that much event time; an event more than `max_lead` ahead of
    the partition's largest event time is refused (None: no bound).
    """

    def __init__(
        self,
        topology: Topology,
        index: int,
        *,
        lateness: timedelta = timedelta(0),
        max_lead: timedelta | None = None,
        mark: str | None = None,
    ) -> None:
        self.topology = topology
        self.index = index
        self.source = f"in/{index}"
        self.origin = f"kafka:{topology.input_topic}/{index}"
        self.lateness = micros_of(lateness)
        self.max_lead = micros_of(max_lead) if max_lead is not None else None
        self.largest: int | None = None  # the largest event time seen (microseconds)
        self.promised: Frontier | tuple[()] = ()  # what its watermarks promised so far
        self.at_end = False  # read to the end of the partition (and nothing since)
        self.idle = False  # at the end for the idle timeout: stops holding the watermark back
        self.next_offset: int | None = None  # after the last record routed (what to commit)
        self.seen = time.monotonic()  # when the last record came (wall time, for the idle timeout)
        self.paused = False  # held back by pacing
        self._sent: tuple[Frontier | tuple[()], bool] | None = None
        if mark:
            try:
                saved = orjson.loads(mark)
                self.largest = saved.get("largest")
                promised = saved.get("promised") or ()
                self.promised = (int(promised[0]), int(promised[1])) if promised else ()
            except (orjson.JSONDecodeError, AttributeError, TypeError):
                pass  # not ours (another client committed this group's offset): start fresh

    def route(self, headers: Headers, value: bytes | None, offset: int) -> tuple[list[Out], str, EventError | None]:
        """The records one input record becomes; its event type (for metrics) and why it was refused, if it
        was (it then goes to the dead letter)."""
        self.at_end = self.idle = False
        self.next_offset = offset + 1
        self.seen = time.monotonic()
        try:
            text = decode_message(headers, value)
            record = parse_record(text, line=offset)
        except EventError as exc:
            raw = (value or b"").decode("utf-8", "backslashreplace")
            return [self._reject(raw, exc)], "", exc
        t = micros(record.time)
        if self.max_lead is not None and self.largest is not None and t - self.largest > self.max_lead:
            problem = (
                f"{record.time_text} is more than {self.max_lead // 86_400_000_000} days ahead of the latest event "
                f"time of input partition {self.index}: refused, so it cannot lapse every open deadline at once"
            )
            refused = EventError("time", problem, line=offset)
            return [self._reject(text, refused)], record.type, refused
        pos = event_pos(record.time, record.source, record.id)
        if before(pos, self.promised):
            problem = (
                f"late: {record.time_text} is behind the watermark already sent for input partition "
                f"{self.index}; the events after it were processed without it"
            )
            late = EventError("time", problem, line=offset)
            return [self._reject(text, late)], record.type, late
        self.largest = t if self.largest is None else max(self.largest, t)
        body = (record.text or text).encode("utf-8", "surrogatepass")
        rec = Record.event(self.source, pos, body)
        outs: list[Out] = [(sid, n, key, rec) for sid, n, key in self.topology.route("event", record.fields, home=True)]
        return outs, record.type, None

    def _reject(self, raw: str, error: EventError) -> Out:
        home = self.index % self.topology.partitions[HOME]
        return HOME, home, None, Record.reject(self.source, raw, error, self.origin)

    def watermark(self, idle_timeout: float = 0.0) -> list[Out]:
        """Watermark records for every partition of every stage that takes events, if the promise or the
        idleness changed since the last ones. The partition is idle once read to its end and quiet for
        `idle_timeout` seconds (0: never)."""
        self.idle = bool(idle_timeout) and self.at_end and time.monotonic() - self.seen >= idle_timeout
        promise: Frontier | tuple[()] = self.promised
        if self.largest is not None:
            exact = self.at_end and self.lateness == 0
            promise = max(promise, (self.largest - self.lateness, 1 if exact else 0))
        if (promise, self.idle) == self._sent:
            return []
        self.promised = promise
        self._sent = (promise, self.idle)
        rec = Record.watermark(self.source, promise, self.idle)
        topo = self.topology
        return [(s.id, n, None, rec) for s in topo.stages.values() if s.events for n in range(topo.partitions[s.id])]

    def mark(self) -> str:
        """What to commit with the offset: what this router promised (for the next one to judge lateness)."""
        return orjson.dumps({"largest": self.largest, "promised": list(self.promised)}).decode()


def held_back(
    routers: dict[int, Router], promises: dict[str, Frontier | tuple[()]], idle: set[str], skew: timedelta
) -> set[int]:
    """The input partitions to pause: those whose router promised more than `skew` past the slowest
    router's promise (`promises`, as a partition that takes events heard them; idle ones aside). The
    slowest router is never held back, so pacing cannot stop the stream."""
    live = [p for s, p in promises.items() if s.startswith("in/") and s not in idle]
    slowest = min(live) if live else ()
    if len(slowest) != 2:
        return set()
    limit = micros_of(skew)
    return {i for i, r in routers.items() if len(r.promised) == 2 and r.promised[0] - slowest[0] > limit}


def micros_of(d: timedelta) -> int:
    """A duration in whole microseconds."""
    return d // timedelta(microseconds=1)
