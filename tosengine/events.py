"""Stage validate: raw JSON object -> Event (the CloudEvents 1.0 envelope of DESIGN.md section 2)."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, SkipValidation, StringConstraints, ValidationError
from pydantic_core import from_json

from tosengine.errors import EventError
from tosengine.violation import format_time

__all__ = ["TIME_TEXT", "Event", "event_fields", "event_from_fields", "evidence_record", "parse_event_line",
           "parse_fields", "parse_time", "validate_event", "validate_fields"]

# RFC 3339 date-time with a mandatory offset; any number of fraction digits (we keep microseconds).
_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d+))?([Zz]|[+-]\d\d:\d\d)"
)
_SUBJECT = re.compile(r"[a-z][a-z0-9_.-]*:.+", re.DOTALL)
_TYPE = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
_EXTENSION = re.compile(r"[a-z0-9]{1,20}")
_KNOWN = {"id", "type", "time", "subject", "source", "specversion", "data", "datacontenttype", "dataschema"}
# The event time as the producer wrote it, kept in the fields record beside the fields for evidence.
# Rules cannot read it: names starting with _ are refused by check, and extension names cannot.
TIME_TEXT = "_time_text"
_RECORD = {"id", "type", "time", "subject", "source", "specversion", "data", TIME_TEXT}
# Bounds that keep one event from costing unbounded memory or time; generous for real producers.
MAX_STRING = 1 << 20
MAX_DEPTH = 32
# Event times outside this range are rejected: windows and deadlines are computed by adding and
# subtracting durations of up to years, which must not overflow.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 timestamp with offset into an aware datetime; raise ValueError otherwise."""
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise ValueError("must be an RFC 3339 date-time with an offset, e.g. 2026-03-01T10:00:00Z")
    if m[8] != "z" and text[10] == "T":
        # The shape is RFC 3339, which fromisoformat reads as is (more fraction digits are truncated):
        # about 7x faster than rebuilding the text. An impossible date raises the same ValueError.
        return datetime.fromisoformat(text)
    frac = (m[7] or "")[:6].ljust(6, "0")
    off = "+00:00" if m[8] in ("Z", "z") else m[8]
    return datetime.fromisoformat(f"{m[1]}-{m[2]}-{m[3]}T{m[4]}:{m[5]}:{m[6]}.{frac}{off}")


def _encodable(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_value(value: Any, path: str) -> None:
    """Reject values JSON producers should never send: NaN/inf, huge strings, absurd nesting.

    Iterative, and cheap for the common case (flat objects of short strings and numbers).
    """
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack:
        v, where, depth = stack.pop()
        t = type(v)
        if t is str:
            if len(v) > MAX_STRING:
                raise EventError(where, f"string longer than {MAX_STRING} characters")
            if not v.isascii() and not _encodable(v):
                raise EventError(where, "string is not valid Unicode (a lone surrogate)")
        elif t is float:
            if not math.isfinite(v):
                raise EventError(where, "numbers must be finite (no NaN or infinity)")
        elif t is dict or t is list:
            if depth >= MAX_DEPTH:
                raise EventError(where, f"nested deeper than {MAX_DEPTH} levels")
            if t is dict:
                for k in v:
                    if type(k) is not str:
                        raise EventError(where, f"field names must be strings, got {type(k).__name__}")
                    if not k.isascii() and not _encodable(k):
                        raise EventError(where, "a field name is not valid Unicode (a lone surrogate)")
            items = v.items() if t is dict else enumerate(v)
            for k, x in items:
                if type(x) in (str, float, dict, list):
                    stack.append((x, f"{where}.{k}" if t is dict else f"{where}[{k}]", depth + 1))


def _fits(value: Any, depth: int) -> bool:
    """Whether a value passes every check of _check_value: the fast path for valid events, which only
    answers yes or no (on no, _check_value walks again to name the place). Recursion is bounded by
    MAX_DEPTH, which is checked before descending."""
    t = type(value)
    if t is str:
        return len(value) <= MAX_STRING and (value.isascii() or _encodable(value))
    if t is float:
        return math.isfinite(value)
    if t is not dict and t is not list:
        return True
    if depth >= MAX_DEPTH:
        return False
    if t is dict:
        for k, x in value.items():
            if type(k) is not str or (not k.isascii() and not _encodable(k)):
                return False
            tx = type(x)
            if tx is str:
                if len(x) > MAX_STRING or (not x.isascii() and not _encodable(x)):
                    return False
            elif (tx is dict or tx is list or tx is float) and not _fits(x, depth + 1):
                return False
        return True
    return all(_fits(x, depth + 1) for x in value)


class Event(BaseModel):
    """A validated event. ``time`` is the event time every rule uses; ``extensions`` keeps the rest.

    Constraints are declared on the fields (checked in pydantic-core); `validate_event` checks the same
    things first to word its errors for people. `data` and `extensions` were already checked value by
    value there, so pydantic does not copy them again (SkipValidation).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Annotated[str, StringConstraints(min_length=1)]
    type: Annotated[str, StringConstraints(pattern=_TYPE.pattern)]
    time: datetime
    subject: Annotated[str, StringConstraints(pattern=r"(?s)" + _SUBJECT.pattern)]
    source: str = ""
    specversion: Literal["1.0"] | None = None
    data: Annotated[dict[str, Any] | None, SkipValidation] = None
    extensions: Annotated[dict[str, Any], SkipValidation] = {}
    # The exact timestamp text as received, so evidence shows what the producer sent.
    time_text: str = ""

    @property
    def identity(self) -> tuple[str, str]:
        """(source, id): a redelivered pair is processed once."""
        return (self.source, self.id)

    def to_dict(self) -> dict[str, Any]:
        """The event as a CloudEvents JSON object (extensions back at top level)."""
        out: dict[str, Any] = {"id": self.id, "type": self.type, "time": self.time_text or self.time.isoformat(),
                               "subject": self.subject}
        if self.source:
            out["source"] = self.source
        if self.specversion is not None:
            out["specversion"] = self.specversion
        if self.data is not None:
            out["data"] = self.data
        out.update(self.extensions)
        return out


def _require_str(obj: dict[str, Any], name: str, required: bool) -> str | None:
    if name not in obj:
        if required:
            raise EventError(name, "is required")
        return None
    v = obj[name]
    if not isinstance(v, str):
        raise EventError(name, f"must be a string, got {type(v).__name__}")
    return v


def validate_event(obj: Any, *, line: int | None = None) -> Event:
    """Validate one decoded JSON value as an event; raise EventError naming the field and problem."""
    if isinstance(obj, Event):
        return obj
    return event_from_fields(validate_fields(obj, line=line))


def validate_fields(obj: Any, *, line: int | None = None) -> dict[str, Any]:
    """Validate one decoded JSON value (or take an Event) as the engine's fields record of it.

    The engine works on this record, not on the Event model: validation already checked everything
    the model declares, and building the model would cost about a tenth of an event's processing.
    """
    if isinstance(obj, Event):
        return event_fields(obj)
    if not isinstance(obj, dict):
        raise EventError("", f"an event must be a JSON object, got {type(obj).__name__}", line=line)
    try:
        return _validate(obj)
    except EventError as exc:
        if line is not None and exc.line is None:
            raise EventError(exc.field, exc.problem, line=line) from None
        raise


def _validate(obj: dict[str, Any]) -> dict[str, Any]:
    ident, etype, time_text, subject = obj.get("id"), obj.get("type"), obj.get("time"), obj.get("subject")
    source = obj.get("source", "")
    if not (type(ident) is str and type(etype) is str and type(time_text) is str and type(subject) is str
            and type(source) is str):
        ident = _require_str(obj, "id", True)
        etype = _require_str(obj, "type", True)
        time_text = _require_str(obj, "time", True)
        subject = _require_str(obj, "subject", True)
        source = _require_str(obj, "source", False) or ""
    assert ident is not None and etype is not None and time_text is not None and subject is not None
    try:
        when = parse_time(time_text)
    except ValueError as exc:
        raise EventError("time", str(exc)) from None
    if not EARLIEST <= when <= LATEST:
        raise EventError("time", f"must be between {EARLIEST.year} and {LATEST.year}")
    if not ident:
        raise EventError("id", "must be a non-empty string")
    if not _TYPE.fullmatch(etype):
        raise EventError("type", "must be a dotted name such as account.engagement")
    if not _SUBJECT.fullmatch(subject):
        raise EventError("subject", "must be kind:id, e.g. account:123")
    specversion = obj.get("specversion")
    if "specversion" in obj and specversion != "1.0":
        raise EventError("specversion", 'must be "1.0" when given')
    data = obj.get("data")
    if "data" in obj and not isinstance(data, dict):
        raise EventError("data", f"must be an object when present, got {type(data).__name__}")
    extensions: dict[str, Any] = {}
    if len(obj) > 4 + ("source" in obj) + ("specversion" in obj) + ("data" in obj):
        for name, value in obj.items():
            if name in _KNOWN:
                continue
            if type(name) is not str or not _EXTENSION.fullmatch(name):
                raise EventError(str(name), "extension attribute names must be 1-20 lowercase letters or digits")
            extensions[name] = value
    # The four strings, inline (the usual case: short and ASCII), then data and extensions.
    strings_fit = (len(ident) + len(etype) + len(subject) + len(source) <= MAX_STRING
                   and ident.isascii() and subject.isascii() and source.isascii())  # type is ASCII by its pattern
    values = [("data", data), *extensions.items()]
    if not strings_fit:
        values = [("id", ident), ("type", etype), ("subject", subject), ("source", source), *values]
    for name, value in values:
        if not _fits(value, 0):
            _check_value(value, name)
            raise EventError(name, "is not an acceptable value")  # unreachable: _check_value names it
    fields: dict[str, Any] = {"id": ident, "type": etype, "time": when, "subject": subject, "source": source}
    if specversion is not None:
        fields["specversion"] = specversion
    if data is not None:
        fields["data"] = data
    if extensions:
        fields.update(extensions)
    fields[TIME_TEXT] = time_text
    return fields


def event_from_fields(fields: dict[str, Any]) -> Event:
    """The Event model of a validated fields record."""
    extensions = {k: v for k, v in fields.items() if k not in _RECORD}
    try:
        return Event(id=fields["id"], type=fields["type"], time=fields["time"], subject=fields["subject"],
                     source=fields["source"], specversion=fields.get("specversion"), data=fields.get("data"),
                     extensions=extensions, time_text=fields[TIME_TEXT])
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise EventError(field, str(err["msg"]).removeprefix("Value error, ")) from None


def event_fields(ev: Event) -> dict[str, Any]:
    """The fields record of an Event: what rules read as `event.*`, plus the time as written."""
    fields: dict[str, Any] = {"id": ev.id, "type": ev.type, "time": ev.time, "subject": ev.subject,
                              "source": ev.source}
    if ev.specversion is not None:
        fields["specversion"] = ev.specversion
    if ev.data is not None:
        fields["data"] = ev.data
    if ev.extensions:
        fields.update(ev.extensions)
    fields[TIME_TEXT] = ev.time_text or format_time(ev.time)
    return fields


def evidence_record(fields: dict[str, Any]) -> dict[str, Any]:
    """An event as evidence, from its fields: what the producer sent (Event.to_dict), time as written."""
    out = {k: v for k, v in fields.items() if k != TIME_TEXT}
    out["time"] = fields[TIME_TEXT]
    if not out.get("source"):
        out.pop("source", None)
    return out


def parse_fields(text: str, *, line: int | None = None) -> dict[str, Any]:
    """Decode one JSON Lines record and validate it into a fields record; bad JSON is an EventError.

    pydantic-core's JSON parser is about 1.7x the standard library's, refuses NaN and Infinity, lone
    surrogate escapes and runaway nesting outright.
    """
    try:
        obj = from_json(text, allow_inf_nan=False)
    except ValueError as exc:
        raise EventError("", f"not valid JSON: {exc}", line=line) from None
    return validate_fields(obj, line=line)


def parse_event_line(text: str, *, line: int | None = None) -> Event:
    """Decode one JSON Lines record and validate it as an Event; bad JSON is an EventError too."""
    return event_from_fields(parse_fields(text, line=line))
