"""Stage decode (HTTP): a CloudEvents HTTP request (content type, headers, body) -> the events it carries.

The CloudEvents HTTP protocol binding 1.0 in its three modes: structured (one event as JSON, content
type `application/cloudevents+json`, or plain `application/json`), batch (`application/cloudevents-
batch+json`: a JSON array of events) and binary (the attributes in `ce-*` headers, percent-decoded, the
body as `data`). Decoding only turns bytes into JSON values; validating them as events is the engine's
(events.py), the one place the envelope's rules live. No web framework is imported here.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson

from tosengine._json import from_json
from tosengine.errors import EventError, TosEngineError

__all__ = [
    "BATCH",
    "BINARY",
    "STRUCTURED",
    "Carried",
    "RequestError",
    "decode_batch",
    "decode_binary",
    "decode_structured",
    "media_type",
    "request_mode",
]

STRUCTURED, BATCH, BINARY = "structured", "batch", "binary"
_STRUCTURED_TYPES = ("application/cloudevents+json", "application/json")
_BATCH_TYPE = "application/cloudevents-batch+json"


class RequestError(TosEngineError):
    """A request the service refuses whole (no event in it is judged): `status` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


@dataclass(frozen=True)
class Carried:
    """One event a request carries: the decoded JSON value the engine is to judge, or `error` if it could
    not be decoded. `raw` is what the dead letter records if the event is rejected: the text as received
    (structured mode), or None to record the decoded value."""

    event: Any
    raw: str | None = None
    error: EventError | None = None

    @property
    def type(self) -> object:
        """The event's `type` attribute as sent (anything), for metrics."""
        return self.event.get("type") if isinstance(self.event, dict) else None

    def identity(self) -> tuple[str | None, str | None]:
        """(source, id) as sent, where they are strings: what a response names the event by."""
        if not isinstance(self.event, dict):
            return None, None
        source, ident = self.event.get("source"), self.event.get("id")
        return (source if isinstance(source, str) else None, ident if isinstance(ident, str) else None)


def media_type(content_type: str | None) -> str:
    """The media type of a Content-Type header, lowercase, without parameters ("" if none)."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def request_mode(content_type: str | None, header_names: Iterable[str]) -> str:
    """Which mode a request is in; RequestError 415 if none. The structured and batch media types decide
    first; otherwise `ce-id` or `ce-specversion` headers make it binary (whatever the body's type); plain
    `application/json` without them is read as structured."""
    media = media_type(content_type)
    if media == _BATCH_TYPE:
        return BATCH
    if media == _STRUCTURED_TYPES[0]:
        return STRUCTURED
    if any(n in ("ce-id", "ce-specversion") for n in header_names):
        return BINARY
    if media == _STRUCTURED_TYPES[1]:
        return STRUCTURED
    raise RequestError(
        415,
        f"unsupported content type {content_type or '(none)'!r}: send application/cloudevents+json or "
        f"application/json (one event), {_BATCH_TYPE} (a JSON array of events), or an event in binary "
        "mode (ce-* headers)",
    )


def _loads(body: bytes) -> Any:
    """Decode JSON with the parser `tosengine replay` uses (events.parse_record), so a body is read as a
    line of a file would be: integers beyond 64 bits stay integers (validation then names their field;
    orjson would turn them into floats and accept them), NaN and lone surrogates are refused. ValueError
    if the body is not JSON."""
    return from_json(body, allow_inf_nan=False, cache_strings="keys")


def _text(body: bytes) -> str:
    return body.decode("utf-8", "backslashreplace")


_JSON_KINDS = {str: "a string", int: "a number", float: "a number", bool: "a boolean", list: "an array"}


def _carry(value: Any, raw: str | None) -> Carried:
    """A decoded JSON value as an event to judge: only an object can be one. (The engine reads a string
    as an event's JSON text, so a string in a batch must be refused here.)"""
    if isinstance(value, dict):
        return Carried(value, raw)
    kind = "null" if value is None else _JSON_KINDS.get(type(value), type(value).__name__)
    return Carried(value, raw, EventError("", f"an event must be a JSON object, got {kind}"))


def decode_structured(body: bytes) -> Carried:
    """One event in structured mode: the body is the event as JSON."""
    try:
        return _carry(_loads(body), _text(body))
    except ValueError as exc:
        return Carried(None, _text(body), EventError("", f"not valid JSON: {exc}"))


def decode_batch(body: bytes, max_batch: int) -> list[Carried]:
    """The events of a batch: the body is a JSON array of events. A body that is not such an array is one
    rejected entry (so it still reaches the dead letter); more than `max_batch` events is a 413."""
    try:
        value = _loads(body)
    except ValueError as exc:
        return [Carried(None, _text(body), EventError("", f"not valid JSON: {exc}"))]
    if not isinstance(value, list):
        return [Carried(None, _text(body), EventError("", "a batch must be a JSON array of events"))]
    if len(value) > max_batch:
        raise RequestError(413, f"a batch holds at most {max_batch} events; this one has {len(value)}")
    return [_carry(member, None) for member in value]


def decode_binary(headers: Iterable[tuple[bytes, bytes]], content_type: str | None, body: bytes) -> Carried:
    """One event in binary mode: each `ce-<name>` header is the attribute <name> (percent-decoded as
    UTF-8), the body is `data` and its Content-Type the `datacontenttype` (a `ce-datacontenttype`
    header may say the same, or stand in for a missing Content-Type).

    A JSON body (application/json or a +json type) becomes `data` as JSON; text (text/*, or a charset
    parameter) as a string; anything else as `data_base64`. `application/json` itself is not kept as
    `datacontenttype`: in the JSON format, an event without one holds JSON data, so the same event reads
    the same whichever mode it came in.
    """
    event: dict[str, Any] = {}
    seen: dict[str, str] = {}  # the headers as received, for the dead letter
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1").lower()
        if not name.startswith("ce-"):
            continue
        attr = name[3:]
        seen[name] = raw_value.decode("latin-1")
        if attr in event:
            return _binary_error(seen, body, EventError(attr, f"the {name} header is given twice"))
        if attr in ("data", "data_base64"):
            return _binary_error(seen, body, EventError(attr, "in binary mode the body is the data, not a header"))
        try:
            event[attr] = unquote_to_bytes(raw_value).decode("utf-8")
        except UnicodeDecodeError:
            return _binary_error(seen, body, EventError(attr, f"the {name} header is not percent-encoded UTF-8"))
    # The binding carries datacontenttype in Content-Type; a ce-datacontenttype header is taken when it
    # agrees with it (or stands in for a missing one), and refused when the two say different things.
    declared = event.pop("datacontenttype", None)
    if declared is not None and content_type and media_type(declared) != media_type(content_type):
        error = EventError("datacontenttype", "the ce-datacontenttype header and the Content-Type differ")
        return _binary_error(seen, body, error)
    content_type = content_type or declared
    if body:
        media = media_type(content_type)
        if media == "application/json" or media.endswith("+json"):
            try:
                event["data"] = _loads(body)
            except ValueError as exc:
                return _binary_error(seen, body, EventError("data", f"the body is not valid JSON: {exc}"))
        elif media.startswith("text/") or "charset=" in (content_type or "").lower():
            try:
                event["data"] = body.decode("utf-8")
            except UnicodeDecodeError:
                return _binary_error(seen, body, EventError("data", "the text body is not valid UTF-8"))
        else:
            event["data_base64"] = base64.b64encode(body).decode("ascii")
        if content_type and media != "application/json":
            event["datacontenttype"] = content_type
    elif declared is not None:  # no data, but the event says what its data would be
        event["datacontenttype"] = declared
    return Carried(event)


def _binary_error(headers: dict[str, str], body: bytes, error: EventError) -> Carried:
    raw = orjson.dumps({"headers": headers, "body": _text(body[:100_000])}).decode()
    return Carried(None, raw, error)
