"""The CloudEvents HTTP binding as `tosengine serve` decodes it (tosengine/serve/binding.py): which mode a
request is in, and what a binary-mode request's headers and body become. The server itself is in
tests/test_serve.py; these are the cases a server test would only reach one by one."""

from __future__ import annotations

import pytest

from tosengine.serve.binding import (
    BATCH,
    BINARY,
    STRUCTURED,
    RequestError,
    decode_batch,
    decode_binary,
    decode_structured,
    request_mode,
)

BASE = [(b"ce-id", b"e1"), (b"ce-type", b"t.x"), (b"ce-time", b"2026-03-01T00:00:00Z"), (b"ce-subject", b"a:1")]


@pytest.mark.parametrize(
    ("content_type", "headers", "mode"),
    [
        ("application/cloudevents+json; charset=utf-8", ["ce-id"], STRUCTURED),  # the media type decides first
        ("application/cloudevents-batch+json", [], BATCH),
        ("application/json", [], STRUCTURED),
        ("application/json", ["ce-id"], BINARY),
        ("text/plain", ["ce-specversion"], BINARY),
        (None, ["ce-id"], BINARY),
    ],
)
def test_the_mode_of_a_request(content_type: str | None, headers: list[str], mode: str) -> None:
    assert request_mode(content_type, headers) == mode


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/xml"])
def test_a_request_in_no_mode_is_415(content_type: str | None) -> None:
    with pytest.raises(RequestError) as info:
        request_mode(content_type, ["content-type", "x-ce-id"])
    assert info.value.status == 415


def test_binary_headers_are_percent_decoded_utf8_and_lowercased() -> None:
    c = decode_binary([*BASE[:3], (b"CE-Subject", b"account:%C3%A9%20x"), (b"ce-region", b"%22eu%22")], None, b"")
    assert c.error is None
    assert c.event["subject"] == "account:é x" and c.event["region"] == '"eu"'


@pytest.mark.parametrize(
    ("headers", "content_type", "body", "field"),
    [
        ([(b"ce-subject", b"a:%FF")], None, b"", "subject"),  # not UTF-8 once decoded
        ([(b"ce-id", b"again")], None, b"", "id"),  # given twice
        ([(b"ce-data", b"x")], None, b"", "data"),  # the body is the data
        ([(b"ce-datacontenttype", b"text/plain")], "application/json", b"{}", "datacontenttype"),  # disagree
        ([], "application/json", b"{", "data"),
        ([], "text/plain; charset=utf-8", b"\xff", "data"),
    ],
)
def test_binary_requests_that_are_no_event_name_the_field(
    headers: list[tuple[bytes, bytes]], content_type: str | None, body: bytes, field: str
) -> None:
    c = decode_binary([*BASE, *headers], content_type, body)
    assert c.error is not None and c.error.field == field and c.raw is not None


@pytest.mark.parametrize(
    ("content_type", "body", "data", "more"),
    [
        ("application/json", b'{"a": 1}', {"a": 1}, {}),  # JSON data, and no datacontenttype: JSON is implied
        ("application/vnd.x+json", b"[1]", [1], {"datacontenttype": "application/vnd.x+json"}),
        ("text/plain", b"hello", "hello", {"datacontenttype": "text/plain"}),
        ("application/xml; charset=utf-8", b"<a/>", "<a/>", {"datacontenttype": "application/xml; charset=utf-8"}),
    ],
)
def test_binary_bodies_become_data(content_type: str, body: bytes, data: object, more: dict[str, str]) -> None:
    c = decode_binary(BASE, content_type, body)
    assert c.error is None and c.event["data"] == data
    assert {k: v for k, v in c.event.items() if k == "datacontenttype"} == more


def test_binary_bodies_that_are_not_text_become_data_base64() -> None:
    c = decode_binary(BASE, "application/octet-stream", b"\x00\xff")
    assert c.event["data_base64"] == "AP8=" and "data" not in c.event


def test_a_ce_datacontenttype_header_stands_in_for_a_missing_content_type() -> None:
    c = decode_binary([*BASE, (b"ce-datacontenttype", b"text/plain")], None, b"hi")
    assert (c.event["data"], c.event["datacontenttype"]) == ("hi", "text/plain")


def test_structured_and_batch_bodies() -> None:
    assert decode_structured(b'{"id": "e1"}').event == {"id": "e1"}
    bad = decode_structured(b"[1]")
    assert bad.error is not None and "JSON object, got an array" in bad.error.problem and bad.raw == "[1]"
    members = decode_batch(b'[{"id": "e1"}, "text", 3]', 10)
    assert [m.error is None for m in members] == [True, False, False]
    (whole,) = decode_batch(b'{"id": "e1"}', 10)  # not an array: one rejection for the whole body
    assert whole.error is not None and "JSON array" in whole.error.problem
    with pytest.raises(RequestError) as info:
        decode_batch(b"[1, 2, 3]", 2)
    assert info.value.status == 413


def test_integers_beyond_64_bits_reach_validation_to_be_named() -> None:
    c = decode_structured(b'{"id": "e1", "data": {"n": 123456789012345678901234567890}}')
    assert c.error is None and c.event["data"]["n"] == 123456789012345678901234567890
