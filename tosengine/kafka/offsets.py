"""Stage audit (Kafka offsets): each owned partition's next offset and owner epoch, in the audit database.

The audit log is the workers' consumer checkpoint: a partition's violations, repeat records, events,
state checkpoint and the offset to read from next are written in one transaction (AuditLog.write's
`also` hook runs `Offsets.store` last in it), so after a crash the partition resumes exactly where
what it wrote leaves off, whatever Kafka's committed offset says (only a hint, for lag).

A worker that is assigned a partition `claim`s it: the epoch goes up by one and the worker remembers
it. Every write checks the epoch it holds in the same UPDATE that moves the offset (`store`, run in the
write's transaction); a worker that lost
the partition without noticing (paused past its session timeout: a zombie) finds a newer epoch there,
and its transaction rolls back whole (`FencedError`). The claim and the fenced update lock the row, so
a claim either sees the zombie's last write or the zombie sees the claim.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import (
    Connection,
    Engine,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from tosengine.audit.connect import database_errors
from tosengine.audit.log import Checkpoint, insert_checkpoint
from tosengine.audit.tables import CHECKPOINTS, KAFKA_OFFSETS
from tosengine.errors import TosEngineError

__all__ = ["KAFKA_OFFSETS", "Claim", "FencedError", "Offsets"]


class FencedError(TosEngineError):
    """This worker no longer owns `partition`: another claimed it since (its epoch is newer)."""

    def __init__(self, partition: str, message: str) -> None:
        self.partition = partition
        super().__init__(message)


@dataclass(frozen=True)
class Claim:
    """A partition this worker owns: its epoch, where to read from, and the checkpoint to start with."""

    partition: str
    epoch: int
    next_offset: int | None
    state: bytes | None
    topology: str


class Offsets:
    """The kafka_offsets rows of the audit database behind `engine` (AuditLog.engine)."""

    def __init__(self, engine: Engine, url: str, owner: str) -> None:
        self.engine = engine
        self.url = url
        self.owner = owner

    def claim(self, partition: str, topic: str, kafka_partition: int, topology: str) -> Claim:
        """Take the partition over: a new epoch, and what the last owner wrote (offset and checkpoint)."""
        now = datetime.now(UTC)
        table = KAFKA_OFFSETS
        values = {
            "partition": partition,
            "topic": topic,
            "kafka_partition": kafka_partition,
            "next_offset": None,
            "epoch": 1,
            "checkpoint_seq": None,
            "topology": topology,
            "owner": self.owner,
            "updated_at": now,
        }
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        stmt = (
            dialect.insert(table)
            .values(**values)
            .on_conflict_do_update(
                index_elements=["partition"],
                set_={"epoch": table.c.epoch + 1, "owner": self.owner, "updated_at": now},
            )
            .returning(table.c.epoch, table.c.next_offset, table.c.checkpoint_seq, table.c.topology)
        )
        with database_errors(self.url, "claim a partition in"), self.engine.begin() as conn:
            epoch, offset, seq, written_for = conn.execute(stmt).one()
            state = None
            if seq is not None:
                row = conn.execute(select(CHECKPOINTS.c.state).where(CHECKPOINTS.c.seq == seq)).first()
                state = bytes(row[0]) if row is not None else None
        return Claim(partition, int(epoch), None if offset is None else int(offset), state, str(written_for))

    def store(
        self,
        conn: Connection,
        partition: str,
        epoch: int,
        next_offset: int | None,
        topology: str,
        checkpoint: Checkpoint | None,
    ) -> None:
        """Inside a write's transaction (AuditLog.write's `also`), after the rows: save the partition's
        checkpoint and move its offset, if this worker still holds the partition's latest epoch; else
        raise FencedError (the whole transaction rolls back). Older checkpoints of the partition are
        dropped with it (insert_checkpoint): they are never read again."""
        now = datetime.now(UTC)
        values: dict[str, object] = {"next_offset": next_offset, "topology": topology, "updated_at": now}
        table = KAFKA_OFFSETS
        done = conn.execute(
            update(table).where(table.c.partition == partition, table.c.epoch == epoch).values(**values)
        )
        if done.rowcount != 1:
            raise FencedError(partition, f"{partition} was claimed by another worker since (epoch past {epoch})")
        if checkpoint is None:
            return
        seq = insert_checkpoint(conn, checkpoint, now)
        conn.execute(update(table).where(table.c.partition == partition).values(checkpoint_seq=seq))
