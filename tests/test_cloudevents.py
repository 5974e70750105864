"""The envelope against CloudEvents' own conformance data (tests/data/cloudevents), through the library and
`tosengine replay`; and what the reading of CloudEvents changed: null as absent, the attributes
CloudEvents checks; and the narrowing kept on purpose: `data` is an object. `tosengine serve` takes the
same data in tests/test_serve.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import policy_set
from tosengine import Engine, EventError, validate_event
from tosengine.audit import AuditLog
from tosengine.events import validate_record

DATA = Path(__file__).parent / "data" / "cloudevents"
# The time tosengine requires, where a test event has none: the instant the data's own times name.
TIME = "2018-04-05T17:31:00Z"
# Invalid in CloudEvents, accepted by tosengine on purpose: `specversion` and `source` are optional
# here (docs/events.md, "the widening").
WIDENED = {"invalidNoSpecVersion", "invalidNoSource"}
# Valid in CloudEvents, rejected by tosengine on purpose: none. (JSON `data` must be an object, as DESIGN.md
# section 2 and the shared conformance case envelope/subject-data-specversion say; the one valid test event
# whose data is not an object is text with `datacontenttype: text/plain`, which is accepted as text.)
NARROWED: set[str] = set()


def as_tosengine(event: Any, n: int) -> Any:
    """A conformance test event with what tosengine requires on top of CloudEvents (docs/events.md): a
    `time` when it has none, and a `kind:id` subject: `test:<subject>`, or `test:<n>` when it has none.
    An empty subject stays empty (invalid either way); anything that is not an object stays as it is."""
    if not isinstance(event, dict):
        return event
    out = dict(event)
    if out.get("time") is None:
        out["time"] = TIME
    subject = out.get("subject")
    if subject is None:
        out["subject"] = f"test:{n}"
    elif isinstance(subject, str) and subject:
        out["subject"] = f"test:{subject}"
    return out


def conformance_events() -> list[tuple[str, Any, bool]]:
    """(test id, event as tosengine is sent it, whether tosengine accepts it) for every single-event case."""
    out = []
    for name, valid in (("valid-events.json", True), ("invalid-events.json", False)):
        for n, test in enumerate(json.loads((DATA / name).read_text(encoding="utf-8"))["tests"]):
            accepted = (valid and test["id"] not in NARROWED) or test["id"] in WIDENED
            out.append((test["id"], as_tosengine(test["event"], n), accepted))
    return out


def conformance_batches() -> list[tuple[str, list[Any], bool]]:
    """(test id, the batch's events as tosengine is sent them, whether the batch is valid)."""
    out = []
    for name, valid in (("valid-batches.json", True), ("invalid-batches.json", False)):
        for test in json.loads((DATA / name).read_text(encoding="utf-8"))["tests"]:
            members = [as_tosengine(e, i) for i, e in enumerate(test["batch"])]
            out.append((test["id"], members, valid))
    return out


def test_the_conformance_data_is_all_there() -> None:
    events, batches = conformance_events(), conformance_batches()
    assert (len(events), sum(accepted for *_, accepted in events)) == (35, 12)
    assert (len(batches), sum(valid for *_, valid in batches)) == (8, 5)


@pytest.mark.parametrize(("case", "event", "accepted"), conformance_events(), ids=[c for c, *_ in conformance_events()])
def test_the_library_accepts_exactly_the_conformance_events_it_should(case: str, event: Any, accepted: bool) -> None:
    if accepted:
        validate_event(event)
        return
    with pytest.raises(EventError) as info:
        validate_event(event)
    assert info.value.problem  # a reason, naming the attribute where there is one


@pytest.mark.parametrize(("case", "batch", "valid"), conformance_batches(), ids=[c for c, *_ in conformance_batches()])
def test_a_batch_is_judged_member_by_member(case: str, batch: list[Any], valid: bool) -> None:
    """An invalid member is rejected with its reason; the valid members around it are still judged."""
    errors: list[int] = []
    with Engine(policy_set(_EVERY_EVENT)) as engine:
        got = engine.process_many(batch, on_error=lambda pos, _event, _exc: errors.append(pos))
    assert (not errors) == valid
    good = [e for i, e in enumerate(batch) if i not in errors]
    assert len({(e.get("source"), e["id"]) for e in good}) == len(got)  # each distinct valid member fired


def test_replay_accepts_and_rejects_the_conformance_events_as_the_library_does(tmp_path: Path) -> None:
    events = conformance_events()
    stream = tmp_path / "conformance.jsonl"
    stream.write_text("".join(json.dumps(e) + "\n" for _, e, _ in events), encoding="utf-8")
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "every.yaml").write_text(_EVERY_EVENT, encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "-m", "tosengine", "replay", str(stream), "--policies", str(policies), "--dry-run"],
        capture_output=True,
        text=True,
    )
    rejected = {int(line.split(":")[1]) for line in out.stderr.splitlines() if ": rejected: " in line}
    assert rejected == {n for n, (_, _, accepted) in enumerate(events, 1) if not accepted}
    assert out.returncode == 1


_EVERY_EVENT = """
policy: every
title: Every event
clause: Every accepted event is recorded.
rules:
  - id: seen
    match: exists(event.id)
"""

# ---------------------------------------------------------------- `data` is an object


def _shaped(eid: str, data: Any, **more: Any) -> dict[str, Any]:
    return {"id": eid, "type": "t.shape", "time": "2026-03-01T00:00:00Z", "subject": "account:1", "data": data, **more}


@pytest.mark.parametrize("data", ["Simple text", [1, 2], 7, False])
@pytest.mark.parametrize("ctype", [None, "application/json", "application/cloudevents+json; charset=utf-8"])
def test_json_data_that_is_not_an_object_is_rejected_naming_data(data: Any, ctype: str | None) -> None:
    """The shared conformance case envelope/subject-data-specversion: JSON data is an object."""
    with pytest.raises(EventError) as info:
        validate_record(_shaped("e", data, **({} if ctype is None else {"datacontenttype": ctype})))
    assert (info.value.field, "must be an object" in info.value.problem) == ("data", True)


def test_text_data_with_a_text_content_type_is_read_as_text() -> None:
    """CloudEvents' validSimpleTextData: a string with datacontenttype text/plain is an event whose
    event.data is that string; paths under it are absent, and a number there is still refused."""
    policies = policy_set(
        """policy: notes
clause: Notes that say hello.
rules:
  - id: hello
    match: event.type == "t.shape" and event.data == "hello"
  - id: field
    match: event.type == "t.shape" and exists(event.data.x)
"""
    )
    with Engine(policies) as engine:
        out = engine.process(_shaped("e1", "hello", datacontenttype="text/plain; charset=utf-8"))
        assert [v.rule for v in out] == ["notes/hello"]
        assert engine.process(_shaped("e2", "x", datacontenttype="text/csv")) == []
    with pytest.raises(EventError) as info:
        validate_record(_shaped("e", 7, datacontenttype="text/plain"))
    assert (info.value.field, "must be a string" in info.value.problem) == ("data", True)


def test_null_data_is_no_data() -> None:
    with Engine(policy_set(_EVERY_EVENT)) as engine:
        assert [v.evidence for v in engine.process(_shaped("z", None))] == [("z",)]


def test_null_optional_attributes_are_absent_and_required_ones_missing() -> None:
    record = validate_record(_shaped("e", None, source=None, specversion=None, dataschema=None, region=None))
    assert record.fields.keys() == {"id", "type", "time", "subject", "source"} and record.source == ""
    with pytest.raises(EventError) as info:
        validate_record({**_shaped("e", None), "time": None})
    assert (info.value.field, info.value.problem) == ("time", "is required")


@pytest.mark.parametrize(
    ("more", "field"),
    [
        ({"source": ""}, "source"),
        ({"datacontenttype": "xyz"}, "datacontenttype"),
        ({"datacontenttype": ""}, "datacontenttype"),
        ({"dataschema": ""}, "dataschema"),
        ({"dataschema": "relative/path"}, "dataschema"),
    ],
)
def test_the_attributes_cloudevents_checks_are_checked(more: dict[str, Any], field: str) -> None:
    with pytest.raises(EventError) as info:
        validate_record({**_shaped("e", None), **more})
    assert info.value.field == field


def test_binary_data_is_kept_as_base64_and_checked() -> None:
    record = validate_record(_shaped("e", None, data_base64="TWE=", datacontenttype="application/octet-stream"))
    assert record.fields["data_base64"] == "TWE=" and "data" not in record.fields
    for more, problem in (({"data_base64": "T!"}, "base64"), ({"data": {"a": 1}, "data_base64": "TWE="}, "together")):
        with pytest.raises(EventError) as info:
            validate_record({**_shaped("e", None), **more})
        assert info.value.field == "data_base64" and problem in info.value.problem


def test_a_log_written_before_this_reading_still_resumes(tmp_path: Path) -> None:
    """An earlier version stored events with an empty source or a datacontenttype that is not a media
    type; an engine resuming the log reads them as that version did."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    policies = policy_set(_EVERY_EVENT)
    with Engine(policies, audit=url) as engine:
        engine.process(_shaped("a", {"x": 1}))
    old = json.dumps(_shaped("b", {"x": 2}, source="", datacontenttype="xyz"))
    log = AuditLog(url)
    try:  # what an earlier version would have recorded for that event, after the checkpoint
        log.record(validate_record(json.loads(old), recorded=True, text=old), [])
        log.flush()
    finally:
        log.close()
    with Engine(policies, audit=url) as engine:
        assert engine.resumed_events == 1
        assert engine.process(_shaped("b", {"x": 2})) == []  # the same (source, id): already processed
