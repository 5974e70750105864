"""Stage validate: a JSON object or JSON text -> EventRecord (the CloudEvents 1.0 envelope, DESIGN.md s. 2).

The engine works on EventRecord: the envelope's attributes, typed, and the `fields` rules read as
`event.*`. The public pydantic model `Event` (tosengine/event_model.py, loaded on first use) is built
from a record for the API. The envelope's rules are written once, in ENVELOPE (the string
attributes), `_meta_problem` (CloudEvents' other optional attributes) and `_value_problem` (the values
under them); the model, the dict path and the JSON-text path all validate through them. How this
reading of the envelope relates to CloudEvents' own conformance data is in docs/events.md.
"""

from __future__ import annotations

import binascii
import math
import re
import sys
from base64 import b64decode
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tosengine._json import from_json
from tosengine._lazy import lazy_names
from tosengine.errors import EventError

if TYPE_CHECKING:  # pydantic's model is loaded only where an Event is used (tosengine/event_model.py)
    from tosengine.event_model import Event, parse_event_line, record_of_event, validate_event

__all__ = [
    "ENVELOPE",
    "MAX_EVENT",
    "Event",
    "EventRecord",
    "parse_event_line",
    "parse_record",
    "parse_time",
    "record_of_event",
    "validate_event",
    "validate_record",
]

# RFC 3339 date-time with a mandatory offset; any number of fraction digits (we keep microseconds).
_RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d+))?([Zz]|[+-]\d\d:\d\d)")
_SUBJECT = re.compile(r"[a-z][a-z0-9_.-]*:.+", re.DOTALL)
_TYPE = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
_EXTENSION = re.compile(r"[a-z0-9]{1,20}")
# RFC 2046 media type (RFC 2045 tokens): type "/" subtype, then optional `; name=value` parameters.
_TOKEN = r"[!#$%&'*+.^_`{|}~0-9A-Za-z-]+"
_MEDIA_TYPE = re.compile(rf'{_TOKEN}/{_TOKEN}(?:[ \t]*;[ \t]*{_TOKEN}=(?:{_TOKEN}|"(?:[^"\\]|\\.)*"))*[ \t]*')
# An absolute URI (RFC 3986): a scheme, a colon, and no whitespace.
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s]*")
# The attributes DESIGN.md section 2 names, and CloudEvents' other optional members: checked when given
# and kept in the record, so rules read them as `event.datacontenttype`, ... (docs/events.md).
_CORE = frozenset({"id", "type", "time", "subject", "source", "specversion", "data"})
_META = ("datacontenttype", "dataschema", "data_base64")
# Bounds that keep one event from costing unbounded memory or time; generous for real producers.
MAX_STRING = 1 << 20
MAX_DEPTH = 32
# The envelope's strings are stored in columns of these sizes, on SQLite and PostgreSQL alike.
MAX_ID = 1000  # id, subject, source
MAX_TYPE = 400
# Numbers must fit in 64 bits: larger integers are valid JSON, but no producer means them, and rules
# would overflow on them (days(10**400)).
MAX_INT = (1 << 63) - 1
# One event, as JSON text, at most this many characters (Engine(max_event_size=...) changes it).
MAX_EVENT = 1 << 20
# Event times outside this range are rejected: windows and deadlines are computed by adding and
# subtracting durations of up to years, which must not overflow.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


# The envelope's string attributes (DESIGN.md section 2): (name, required).
ENVELOPE: tuple[tuple[str, bool], ...] = (
    ("id", True),
    ("type", True),
    ("time", True),
    ("subject", True),
    ("source", False),
)


# Event types found well-formed: a stream has few, and matching the pattern costs about 0.2 us an event,
# a lookup here 0.02. Bounded, so a stream of made-up types costs the pattern and no memory.
_GOOD_TYPES: dict[str, None] = {}
_GOOD_TYPES_MAX = 4096


def _envelope_problem(ident: str, etype: str, subject: str, source: str) -> tuple[str, str] | None:
    """The one place the envelope's string rules are written: (field, problem), or None if they hold."""
    if not ident:
        return "id", "must be a non-empty string"
    known = etype in _GOOD_TYPES
    if not known and _TYPE.fullmatch(etype) is None:
        return "type", "must be a dotted name such as account.engagement"
    if _SUBJECT.fullmatch(subject) is None:
        return "subject", "must be kind:id, e.g. account:123"
    if not known:
        if len(etype) > MAX_TYPE:
            return "type", f"must be at most {MAX_TYPE} characters"
        if len(_GOOD_TYPES) < _GOOD_TYPES_MAX:
            _GOOD_TYPES[etype] = None
    if (
        len(ident) <= MAX_ID
        and len(subject) <= MAX_ID
        and len(source) <= MAX_ID
        and "\x00" not in ident
        and "\x00" not in subject
        and "\x00" not in source
    ):
        return None  # the usual case, without the loop below
    for name, v in (("id", ident), ("subject", subject), ("source", source)):
        if len(v) > MAX_ID:
            return name, f"must be at most {MAX_ID} characters"
        if "\x00" in v:
            return name, "must not contain the NUL character (\\u0000)"
    return None


def _meta_problem(name: str, value: Any) -> str | None:
    """The problem with one of CloudEvents' optional members (`_META`), or None if it holds."""
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    if name == "datacontenttype":
        if _MEDIA_TYPE.fullmatch(value) is None:
            return "must be an RFC 2046 media type such as application/json or text/plain"
    elif name == "dataschema":
        if _URI.fullmatch(value) is None:
            return "must be an absolute URI such as https://example.com/schema.json"
    else:  # data_base64: binary data, kept as its base64 text (rules read `event.data_base64`)
        try:
            b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return "must be base64 (RFC 4648)"
    return None


def _is_json_type(media_type: str) -> bool:
    """Whether a datacontenttype says the data is JSON: application/json or a `+json` type."""
    base = media_type.split(";", 1)[0].strip().lower()
    return base == "application/json" or base.endswith("+json")


def _data_problem(data: Any, obj: dict[str, Any]) -> str | None:
    """The problem with `data` that is not an object, or None when it is text the event declares as such.

    DESIGN.md section 2 (and the shared conformance suite) make `data` the object of attributes rules
    read as event.data.*; JSON data (no datacontenttype, or a JSON one) must be that. CloudEvents also
    carries text: a string with a non-JSON datacontenttype (`text/plain`) is accepted as such, and rules
    see `event.data` as that string (docs/events.md)."""
    ctype = obj.get("datacontenttype")
    if type(data) is str and type(ctype) is str and _MEDIA_TYPE.fullmatch(ctype) and not _is_json_type(ctype):
        return None
    if type(ctype) is str and _MEDIA_TYPE.fullmatch(ctype) and not _is_json_type(ctype):
        return f"must be a string with datacontenttype {ctype!r}, got {type(data).__name__}"
    return (
        f"must be an object when present, got {type(data).__name__} "
        "(text data needs a non-JSON datacontenttype such as text/plain)"
    )


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


def _value_problem(v: Any, depth: int) -> tuple[list[str], str] | None:
    """None if a value is acceptable; else (the path to the bad part, innermost first, and the problem).

    Values JSON cannot hold or producers should never send are refused: NaN/inf, integers beyond 64
    bits, huge strings, lone surrogates, non-string keys, absurd nesting, and anything that is not a JSON
    value (bytes, sets, tuples, objects). The path is built only on the way back from a problem, so the
    usual case (a flat object of short strings and numbers) costs one pass and no allocation.
    Recursion is bounded by MAX_DEPTH, checked before descending.
    """
    t = type(v)
    if t is str:
        if len(v) > MAX_STRING:
            return [], f"string longer than {MAX_STRING} characters"
        if not v.isascii() and not _encodable(v):
            return [], "string is not valid Unicode (a lone surrogate)"
        return None
    if t is float:
        return None if math.isfinite(v) else ([], "numbers must be finite (no NaN or infinity)")
    if t is int:
        return None if -MAX_INT - 1 <= v <= MAX_INT else ([], "integers must fit in 64 bits")
    if t is bool or v is None:
        return None
    if t is not dict and t is not list:
        return [], f"not a JSON value: {t.__name__}"
    if depth >= MAX_DEPTH:
        return [], f"nested deeper than {MAX_DEPTH} levels"
    if t is dict:
        for k, x in v.items():
            if type(k) is not str:
                return [], f"field names must be strings, got {type(k).__name__}"
            if not k.isascii() and not _encodable(k):
                return [], "a field name is not valid Unicode (a lone surrogate)"
            tx = type(x)
            if tx is str:  # the usual value: checked here, without a call
                if len(x) <= MAX_STRING and (x.isascii() or _encodable(x)):
                    continue
            elif tx is bool or x is None:
                continue
            found = _value_problem(x, depth + 1)
            if found is not None:
                found[0].append(f".{k}")
                return found
        return None
    for i, x in enumerate(v):
        found = _value_problem(x, depth + 1)
        if found is not None:
            found[0].append(f"[{i}]")
            return found
    return None


def _check_value(name: str, value: Any) -> None:
    found = _value_problem(value, 0)
    if found is not None:
        path, problem = found
        raise EventError(name + "".join(reversed(path)), problem)


class EventRecord:
    """A validated event as the engine carries it through match, decide and audit.

    `fields` is what rules read as `event.*` (`time` there is the parsed datetime); `time_text` is the
    time as the producer wrote it, kept for evidence; `text` the JSON text the event came as, if any.
    """

    __slots__ = ("fields", "id", "source", "subject", "text", "time", "time_text", "type")

    def __init__(self, fields: dict[str, Any], time_text: str, text: str | None = None) -> None:
        self.fields = fields
        self.id: str = fields["id"]
        self.source: str = fields["source"]
        self.type: str = fields["type"]
        self.subject: str = fields["subject"]
        self.time: datetime = fields["time"]
        self.time_text = time_text
        self.text = text

    def evidence(self) -> dict[str, Any]:
        """The event as evidence: what the producer sent, its time as written (no empty `source`)."""
        out = dict(self.fields)
        out["time"] = self.time_text
        if not out.get("source"):
            out.pop("source", None)
        return out

    def __repr__(self) -> str:
        return f"EventRecord({self.source!r}, {self.id!r}, {self.type!r}, {self.time_text!r})"


def _require_str(obj: dict[str, Any], name: str, required: bool) -> str:
    v = obj.get(name)
    if v is None:  # absent, or null: CloudEvents' JSON format reads a null attribute as absent
        if required:
            raise EventError(name, "is required")
        return ""
    if not isinstance(v, str):
        raise EventError(name, f"must be a string, got {type(v).__name__}")
    return v


def validate_record(
    obj: Any, *, line: int | None = None, text: str | None = None, recorded: bool = False
) -> EventRecord:
    """Validate one decoded JSON value (or take an Event) as the engine's record of it.

    `recorded`: the body of an event an audit log already accepted, read back to resume. An earlier
    version accepted an empty `source` and any `datacontenttype` or `dataschema` (which it did not
    keep); such a body is taken as that version took it, so a log it wrote still resumes.
    """
    if type(obj) is not dict:
        if "tosengine.event_model" in sys.modules:  # an Event can exist only once its module is loaded
            from tosengine.event_model import Event, record_of_event

            if isinstance(obj, Event):
                return record_of_event(obj)
        if not isinstance(obj, dict):
            raise EventError("", f"an event must be a JSON object, got {type(obj).__name__}", line=line)
    try:
        return _validate(obj, text, recorded)
    except EventError as exc:
        if line is not None and exc.line is None:
            raise EventError(exc.field, exc.problem, line=line) from None
        raise


def _validate(obj: dict[str, Any], text: str | None, recorded: bool = False) -> EventRecord:
    ident, etype, time_text, subject = obj.get("id"), obj.get("type"), obj.get("time"), obj.get("subject")
    source = obj.get("source", "")
    if not (
        type(ident) is str
        and type(etype) is str
        and type(time_text) is str
        and type(subject) is str
        and type(source) is str
    ):
        ident, etype, time_text, subject, source = (_require_str(obj, n, r) for n, r in ENVELOPE)
    elif not source and "source" in obj and not recorded:
        # CloudEvents: a non-empty URI-reference. Leaving it out is allowed here (DESIGN.md s. 2).
        raise EventError("source", "must be a non-empty URI-reference when given (leave it out instead)")
    try:
        when = parse_time(time_text)
    except ValueError as exc:
        raise EventError("time", str(exc)) from None
    if not EARLIEST <= when <= LATEST:
        raise EventError("time", f"must be between {EARLIEST.year} and {LATEST.year}")
    problem = _envelope_problem(ident, etype, subject, source)
    if problem is not None:
        raise EventError(*problem)
    specversion = obj.get("specversion")
    if specversion is not None and specversion != "1.0":
        raise EventError("specversion", 'must be "1.0" when given')
    data = obj.get("data")  # null is absent
    if data is not None and type(data) is not dict:
        found = _data_problem(data, obj)
        if found is not None:
            raise EventError("data", found)
    fields: dict[str, Any] = {"id": ident, "type": etype, "time": when, "subject": subject, "source": source}
    if specversion is not None:
        fields["specversion"] = specversion
    if data is not None:
        fields["data"] = data
    if len(obj) > 4 + ("source" in obj) + ("specversion" in obj) + ("data" in obj):
        _read_optional(obj, fields, recorded)  # adds CloudEvents' optional members and the extensions
    # The four strings, inline (the usual case: short and ASCII), then data and extensions.
    if not (
        len(ident) + len(etype) + len(subject) + len(source) <= MAX_STRING
        and ident.isascii()
        and subject.isascii()
        and source.isascii()
    ):  # type is ASCII by its pattern
        for name, v in (("id", ident), ("type", etype), ("subject", subject), ("source", source)):
            _check_value(name, v)
    if data is not None and (bad := _value_problem(data, 0)) is not None:
        raise EventError("data" + "".join(reversed(bad[0])), bad[1])
    if len(fields) > 5 + (specversion is not None) + (data is not None):
        for name, value in fields.items():
            if name not in _CORE:
                _check_value(name, value)
    return EventRecord(fields, time_text, text)


def _read_optional(obj: dict[str, Any], fields: dict[str, Any], recorded: bool) -> None:
    """Add to `fields` CloudEvents' optional members (`_META`), then the extensions, each in the order
    given; a null one is absent. Their values are checked by the caller, after the envelope's strings."""
    meta: dict[str, Any] = {}
    extensions: dict[str, Any] = {}
    for name, value in obj.items():
        if name in _CORE:
            continue
        if name not in _META and (type(name) is not str or not _EXTENSION.fullmatch(name)):
            raise EventError(str(name), "extension attribute names must be 1-20 lowercase letters or digits")
        if value is None:
            continue  # null is absent
        if name not in _META:
            extensions[name] = value
            continue
        if name == "data_base64" and "data" in fields:
            raise EventError(name, "must not be given together with data")
        found = _meta_problem(name, value)
        if found is None:
            meta[name] = value
        elif not recorded:
            raise EventError(name, found)
    fields.update(meta)
    fields.update(extensions)


def parse_record(text: str, *, line: int | None = None, max_size: int = MAX_EVENT) -> EventRecord:
    """Decode one JSON Lines record and validate it; bad JSON is an EventError. The record keeps the
    text (stripped), which the audit log stores as the event's body.

    pydantic-core's JSON parser is about 1.7x the standard library's, refuses NaN and Infinity, lone
    surrogate escapes and runaway nesting outright. It caches the keys' strings only: an envelope's keys
    repeat on every line, its values (ids, times) hardly ever, and caching those too made a parse about
    0.2 us slower (1.33 against 1.09 us on the issue's check stream).
    """
    if len(text) > max_size:
        raise EventError("", f"event larger than {max_size} characters", line=line)
    try:
        obj = from_json(text, allow_inf_nan=False, cache_strings="keys")
    except ValueError as exc:
        raise EventError("", f"not valid JSON: {exc}", line=line) from None
    except TypeError:  # a str holding a lone surrogate (no UTF-8 text can), which pydantic-core cannot read
        raise EventError("", "not valid JSON: the text holds a lone surrogate (not valid Unicode)", line=line) from None
    return validate_record(obj, line=line, text=text.strip())


# The model's names, still importable from here (PEP 562): its module, and pydantic, load on first use.
__getattr__, __dir__ = lazy_names(
    __name__,
    dict.fromkeys(
        ("Event", "event_of_record", "parse_event_line", "record_of_event", "validate_event"), "tosengine.event_model"
    ),
    globals(),
)
