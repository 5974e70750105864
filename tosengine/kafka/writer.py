"""Stage audit (Kafka partitions): owned partitions' rows, states and offsets -> one audit transaction.

Exactly-once output without Kafka transactions: each partition's violations, repeat records, events,
evaluation errors and dead letter, its state checkpoint and the offset to read from next are written in
one transaction, AuditLog.write's, whose `also` hook saves each checkpoint and moves each offset last,
after checking the partition's owner epoch (offsets.py). A worker writes the partitions it owns that
changed together, in one transaction per write cycle: the audit log takes one writer at a time (its
hash chain), so fewer, larger transactions go further (docs/scale-out.md, "How far it scales"). Either
all of it commits or none of it. A partition another worker has claimed since (this one is a zombie
for it) fails the transaction: it is dropped and the others are written again without it. Rows the
database refused stay queued, in front of what comes next, for the next write.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy import Connection

from tosengine.audit.log import AuditLog, Batch, Checkpoint
from tosengine.kafka.metrics import WorkerMetrics
from tosengine.kafka.offsets import FencedError, Offsets
from tosengine.kafka.partition import PartitionRuntime, Rows
from tosengine.runtime.snapshot import FORMAT, VERSION, pack

__all__ = ["PartitionWriter"]


class PartitionWriter:
    """Writes owned partitions to the audit log."""

    def __init__(self, audit: AuditLog, offsets: Offsets, metrics: WorkerMetrics | None = None) -> None:
        self.audit = audit
        self.offsets = offsets
        self.metrics = metrics
        self._unwritten: dict[str, Batch] = {}

    def write(self, parts: Sequence[tuple[PartitionRuntime, int]]) -> list[str]:
        """Write each (partition, epoch): its rows, checkpoint and resume offset, in one transaction.
        The names of the partitions it found fenced (claimed by another worker since: nothing of theirs
        was written). AuditError if the database fails (nothing was written; the rows stay queued)."""
        for part, _ in parts:
            rows, part.rows = part.rows, Rows()
            self._unwritten.setdefault(part.name, Batch()).extend(self._batch(part.name, rows))
        fenced: list[str] = []
        todo = list(parts)
        while todo:
            batch = Batch()
            saves = []
            for part, epoch in todo:
                batch.extend(self._unwritten[part.name])
                saves.append(
                    (part.name, epoch, part.resume_offset(), part.topology.fingerprint(), self._checkpoint(part))
                )

            def save(conn: Connection, saves: list[tuple[str, int, int | None, str, Checkpoint]] = saves) -> None:
                for name, epoch, offset, topology, checkpoint in saves:
                    self.offsets.store(conn, name, epoch, offset, topology, checkpoint)

            started = time.perf_counter()
            try:
                self.audit.write(batch, None, also=save)
            except FencedError as exc:
                fenced.append(exc.partition)
                self._unwritten.pop(exc.partition, None)
                todo = [(p, e) for p, e in todo if p.name != exc.partition]
                continue
            for part, _ in todo:
                part.changed = False
                self._unwritten.pop(part.name, None)
            if self.metrics is not None:
                self.metrics.audit_write.observe(time.perf_counter() - started)
                for v in batch.violations:
                    self.metrics.violations.labels(v["policy"], v["rule"], v["severity"]).inc()
            break
        return fenced

    def forget(self, name: str) -> None:
        """Drop what a partition this worker lost had queued (its new owner writes it again)."""
        self._unwritten.pop(name, None)

    def pending(self, name: str) -> bool:
        """Whether rows the database refused wait for the partition's next write."""
        return name in self._unwritten

    def _checkpoint(self, part: PartitionRuntime) -> Checkpoint:
        program = part.topology.program
        blob, size = pack(part.snapshot(self.audit.mask if self.audit.masks else None))
        return Checkpoint(
            part.name,
            FORMAT,
            VERSION,
            blob,
            size,
            dict(program.fingerprints),
            [(p.id, p.version) for p in program.policies.policies],
        )

    def _batch(self, name: str, rows: Rows) -> Batch:
        """The rows as an AuditLog batch (masked as the audit log masks them), events under `name`."""
        audit = self.audit
        audit.partition = name
        for event in rows.events:
            audit.record(event, ())
        audit.record(None, rows.violations, rows.repeats, rows.errors)
        for raw, error, origin in rows.rejected:
            audit.reject(raw, error, origin)
        for what, detail in rows.state_changes:
            audit.note_state_change(what, detail)
        return audit.take()
