"""A partition's offset and owner epoch are written in the transaction of its violations; a worker that
lost the partition (a zombie) writes nothing for it: its whole transaction rolls back."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import create_engine, func, select

from tests.support import policy_set
from tosengine.audit.log import AuditLog
from tosengine.audit.models import Checkpoint as CheckpointRow
from tosengine.audit.models import ViolationRow
from tosengine.kafka.offsets import KAFKA_OFFSETS, Offsets
from tosengine.kafka.records import Record
from tosengine.kafka.stage import StagePartition
from tosengine.kafka.topology import Topology
from tosengine.kafka.writer import PartitionWriter
from tosengine.runtime.kinds import StateOptions
from tosengine.runtime.order import event_pos, micros
from tosengine.runtime.program import Program
from tosengine.runtime.snapshot import unpack

POLICY = """
policy: p
clause: c
rules:
  - id: bad
    match: event.type == "bad"
  - id: answer
    expect: {after: event.type == "ask", fulfilled_by: event.type == "answer", within: 1h}
"""


def _partition(audit: AuditLog, program: Program) -> StagePartition:
    topo = Topology(program, "g", "in")
    topo.set_partitions(1, dict.fromkeys(topo.stages, 1))
    return StagePartition(topo, "subject/s0", 0, masker=audit.masker, options=StateOptions())


def _feed(part: StagePartition, offset: int, eid: str, etype: str, minute: int) -> None:
    t = datetime(2026, 1, 1, 0, minute, tzinfo=UTC)
    text = json.dumps({"id": eid, "type": etype, "time": t.isoformat(), "subject": "account:1", "source": "s"})
    part.receive(Record.event("in/0", event_pos(t, "s", eid), text.encode()), offset)
    part.receive(Record.watermark("in/0", (micros(t), 1)), offset + 1)
    part.run()


def _count(url: str, column: Any) -> int:
    eng = create_engine(url)
    try:
        with eng.connect() as c:
            return int(c.execute(select(func.count(column))).scalar() or 0)
    finally:
        eng.dispose()


def test_a_zombie_writes_nothing_and_the_new_owner_resumes_from_the_last_write(db_url: str) -> None:
    audit = AuditLog(db_url)
    offsets = Offsets(audit.engine, db_url, "test")
    writer = PartitionWriter(audit, offsets)
    program = Program(policy_set(POLICY))
    zombie = _partition(audit, program)
    fingerprint = zombie.topology.fingerprint()
    first = offsets.claim(zombie.name, "t", 0, fingerprint)
    assert (first.epoch, first.next_offset, first.state) == (1, None, None)
    _feed(zombie, 0, "e1", "bad", 1)
    _feed(zombie, 2, "e2", "ask", 2)
    assert writer.write([(zombie, first.epoch)]) == []  # e1's violation, the open obligation, offset 4
    assert _count(db_url, ViolationRow.id) == 1

    second = offsets.claim(zombie.name, "t", 0, fingerprint)  # another worker takes the partition
    assert second.epoch == 2 and second.next_offset == 4 and second.state is not None
    _feed(zombie, 4, "e3", "bad", 3)  # the zombie goes on ...
    assert writer.write([(zombie, first.epoch)]) == [zombie.name]  # ... and writes nothing: not e3's violation
    assert _count(db_url, ViolationRow.id) == 1

    owner = _partition(audit, program)
    owner.restore(unpack(second.state))
    assert owner.state.stats()["events"] == 2 and owner.state.size()["obligations"] == 1
    _feed(owner, 4, "e3", "bad", 3)
    assert writer.write([(owner, second.epoch)]) == []
    assert _count(db_url, ViolationRow.id) == 2
    assert _count(db_url, CheckpointRow.seq) == 1  # older checkpoints of the partition are dropped
    eng = create_engine(db_url)
    with eng.connect() as c:
        row = c.execute(select(KAFKA_OFFSETS.c.next_offset, KAFKA_OFFSETS.c.epoch)).one()
    eng.dispose()
    assert tuple(row) == (6, 2)
    audit.close()
    program.close()
