"""Stage validate, the public model: `Event`, the pydantic view of a validated EventRecord.

The engine never needs it: the JSON text, dict and Kafka paths validate straight into EventRecord
(tosengine/events.py), so this module, and pydantic with it (about 45 ms of start-up), is loaded only
where an Event is built or given (`tosengine.Event`, `validate_event`, `Engine.process(Event(...))`).
The envelope's rules stay written once, in tosengine/events.py; the model validates through them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, SkipValidation, model_validator

from tosengine.events import (
    EventRecord,
    _data_problem,
    _envelope_problem,
    _value_problem,
    parse_record,
    validate_record,
)
from tosengine.violation import format_time

__all__ = ["Event", "event_of_record", "parse_event_line", "record_of_event", "validate_event"]

# The attributes the model has as fields; the rest of a record's fields are its extensions.
_RECORD = {"id", "type", "time", "subject", "source", "specversion", "data"}


class Event(BaseModel):
    """A validated event. ``time`` is the event time every rule uses; ``extensions`` keeps the rest.

    Built from an EventRecord by `validate_event`; constructed directly, it is held to the same
    envelope rules (ENVELOPE) by its validator. `data` and `extensions` are checked value by value
    there, so pydantic does not copy them again (SkipValidation).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    id: str
    type: str
    time: datetime
    subject: str
    source: str = ""
    specversion: Literal["1.0"] | None = None
    # An object; or, with a non-JSON datacontenttype such as text/plain, text (docs/events.md).
    data: Annotated[dict[str, Any] | str | None, SkipValidation] = None
    extensions: Annotated[dict[str, Any], SkipValidation] = {}
    # The exact timestamp text as received, so evidence shows what the producer sent.
    time_text: str = ""

    @model_validator(mode="after")
    def _envelope(self) -> Event:
        problem = _envelope_problem(self.id, self.type, self.subject, self.source)
        if problem is not None:
            raise ValueError(f"{problem[0]}: {problem[1]}")
        if self.time.tzinfo is None:
            raise ValueError("time: must have a UTC offset")
        if self.data is not None and type(self.data) is not dict:
            text_problem = _data_problem(self.data, self.extensions)
            if text_problem is not None:
                raise ValueError(f"data: {text_problem}")
        for name, value in (("data", self.data), *self.extensions.items()):
            found = _value_problem(value, 0)
            if found is not None:
                raise ValueError(f"{name}{''.join(reversed(found[0]))}: {found[1]}")
        return self

    @property
    def identity(self) -> tuple[str, str]:
        """(source, id): a redelivered pair is processed once."""
        return (self.source, self.id)

    def to_dict(self) -> dict[str, Any]:
        """The event as a CloudEvents JSON object (extensions back at top level)."""
        return record_of_event(self).evidence()


def validate_event(obj: Any, *, line: int | None = None) -> Event:
    """Validate one decoded JSON value as an event; raise EventError naming the field and problem."""
    if isinstance(obj, Event):
        return obj
    return event_of_record(validate_record(obj, line=line))


def event_of_record(record: EventRecord) -> Event:
    """The Event model of a validated record (not validated again)."""
    f = record.fields
    return Event.model_construct(
        id=record.id,
        type=record.type,
        time=record.time,
        subject=record.subject,
        source=record.source,
        specversion=f.get("specversion"),
        data=f.get("data"),
        extensions={k: v for k, v in f.items() if k not in _RECORD},
        time_text=record.time_text,
    )


def record_of_event(ev: Event) -> EventRecord:
    """The record of an Event: what rules read as `event.*`, and the time as written."""
    fields: dict[str, Any] = {"id": ev.id, "type": ev.type, "time": ev.time, "subject": ev.subject, "source": ev.source}
    if ev.specversion is not None:
        fields["specversion"] = ev.specversion
    if ev.data is not None:
        fields["data"] = ev.data
    if ev.extensions:
        fields.update(ev.extensions)
    return EventRecord(fields, ev.time_text or format_time(ev.time))


def parse_event_line(text: str, *, line: int | None = None) -> Event:
    """Decode one JSON Lines record and validate it as an Event; bad JSON is an EventError too."""
    return event_of_record(parse_record(text, line=line))
