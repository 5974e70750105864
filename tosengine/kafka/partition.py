"""Stage decide (ordering): the records of one owned repartition partition -> processed in position order.

A partition's records come from many senders (the routers of every input partition, the partitions
of the stages upstream), interleaved as they arrived. Each sender promises with its watermarks that
everything it will send before some position has been sent (runtime/order.py); the partition's
*frontier* is the smallest promise over its senders. Records before the frontier are complete, so they
are processed in position order, with the partition's own lapses in between; the rest wait in a buffer,
each position once (a copy sent twice, by a router that restarted or a zombie, is dropped). After the
frontier has moved, the partition promises it to the stages it sends to.

`PartitionRuntime` is what the stage partitions (stage.py) and the ladder partitions (ladder.py) share:
the senders' promises, the buffer, the frontier, the offset to resume from, and the rows to write.
Nothing here talks to Kafka or the database: the worker (worker.py) does, and the dataflow test drives
these classes directly.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Any

from tosengine.errors import EventError
from tosengine.events import EventRecord
from tosengine.kafka.records import REJECT, WATERMARK, Out, Record, tuples
from tosengine.kafka.topology import Topology
from tosengine.runtime.order import Frontier, Pos, before
from tosengine.runtime.snapshot import Mask
from tosengine.violation import Repeat, RuleFailure, Violation

__all__ = ["PartitionRuntime", "Rows"]


@dataclass
class Rows:
    """What a partition has to write to the audit log with its next checkpoint and offset."""

    events: list[EventRecord] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    repeats: list[Repeat] = field(default_factory=list)
    errors: list[RuleFailure] = field(default_factory=list)
    rejected: list[tuple[str, EventError, str]] = field(default_factory=list)  # (raw, error, origin)
    state_changes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.events or self.violations or self.repeats or self.errors or self.rejected or self.state_changes
        )


class PartitionRuntime:
    """One owned partition of a stage's topic: its senders' promises, its buffer, its frontier.

    Subclasses process records in order (`process`), may have positioned work of their own (`own_next`,
    `own_run`: a stage's lapses) and act when the frontier moves (`reached`).
    """

    def __init__(self, topology: Topology, stage: str, index: int) -> None:
        self.topology = topology
        self.stage = stage
        self.index = index
        self.name = topology.partition_name(stage, index)
        self.source = f"{stage}/{index}"
        self.promises: dict[str, Frontier | tuple[()]] = {s: () for s in topology.sources(stage)}
        self.idle: set[str] = set()
        self.done: Frontier | tuple[()] = ()  # everything before it is processed
        self.promised: Frontier | tuple[()] = ()  # what this partition promised downstream
        self._buffer: list[tuple[Pos, int, int, Record]] = []  # (position, tie, offset, record), a heap
        self._positions: set[Pos] = set()
        self._offsets: list[int] = []  # offsets of buffered records (a heap; removed ones are in _gone)
        self._gone: set[int] = set()
        self._ties = itertools.count()
        self.next_offset: int | None = None  # after the last record received
        self.rows = Rows()
        self.changed = False  # since the last write
        self._dirty = True  # something arrived since the last run
        self.counts: dict[str, int] = {"processed": 0, "duplicates": 0, "late": 0}

    # ------------------------------------------------------------------ records in

    def receive(self, rec: Record, offset: int) -> None:
        """Take one record of the partition (consumed at `offset`)."""
        self.next_offset = offset + 1
        self.changed = self._dirty = True
        if rec.kind == WATERMARK:
            if rec.source in self.promises:
                frontier, idle = rec.frontier()
                self.promises[rec.source] = max(self.promises[rec.source], frontier)
                if idle:
                    self.idle.add(rec.source)
                else:
                    self.idle.discard(rec.source)
            return
        if rec.kind == REJECT:
            self.rows.rejected.append(rec.rejection())
            return
        pos = rec.pos
        if pos is None:
            return
        if before(pos, self.done):
            self.behind(rec)
            return
        if pos in self._positions:
            self.counts["duplicates"] += 1
            return
        self._positions.add(pos)
        heapq.heappush(self._buffer, (pos, next(self._ties), offset, rec))
        heapq.heappush(self._offsets, offset)

    def behind(self, rec: Record) -> None:
        """A record whose position the frontier has passed: a copy of one processed (dropped)."""
        self.counts["duplicates"] += 1

    # ------------------------------------------------------------------ in order

    def frontier(self) -> Frontier | tuple[()]:
        """The smallest promise of the senders that are not idle (the largest, if all are idle)."""
        live = [p for s, p in self.promises.items() if s not in self.idle]
        f = min(live) if live else max(self.promises.values(), default=())
        return max(f, self.done)

    def run(self) -> list[Out]:
        """Process everything the frontier allows, in position order; the records that sends."""
        if not self._dirty:  # nothing arrived: nothing new is allowed
            return []
        self._dirty = False
        out: list[Out] = []
        frontier = self.frontier()
        buffer = self._buffer
        while True:
            head = buffer[0][0] if buffer and before(buffer[0][0], frontier) else None
            own = self.own_next()
            if own is not None and not before(own, frontier):
                own = None
            if head is None and own is None:
                break
            if own is not None and (head is None or own < head):
                out += self.own_run()
            else:
                pos, _, offset, rec = heapq.heappop(buffer)
                self._positions.discard(pos)
                self._gone.add(offset)  # the offset heap is pruned lazily, in resume_offset
                out += self.process(rec)
            self.counts["processed"] += 1
            self.changed = True
        if frontier and frontier > self.done:
            self.done = frontier
            out += self.reached((frontier[0], frontier[1]))
            self.changed = True
        return out

    def promise(self) -> list[Out]:
        """Watermark records telling the stages downstream what this partition has completed."""
        if self.done <= self.promised:
            return []
        self.promised = self.done
        rec = Record.watermark(self.source, self.done)
        topo = self.topology
        return [(d, n, None, rec) for d in topo.stages[self.stage].downstream for n in range(topo.partitions[d])]

    def resume_offset(self) -> int | None:
        """Where to read again after a restart from what is written now: the first record still waiting."""
        while self._offsets and self._offsets[0] in self._gone:
            self._gone.discard(heapq.heappop(self._offsets))
        return self._offsets[0] if self._offsets else self.next_offset

    @property
    def buffered(self) -> int:
        """Records waiting for the frontier."""
        return len(self._buffer)

    # ------------------------------------------------------------------ for subclasses

    def own_next(self) -> Pos | None:
        """The position of this partition's own next piece of work (a lapse), if any."""
        return None

    def own_run(self) -> list[Out]:
        """Do the work `own_next` named."""
        return []

    def process(self, rec: Record) -> list[Out]:
        """Process one record at its turn."""
        raise NotImplementedError

    def reached(self, frontier: Frontier) -> list[Out]:
        """The frontier moved to `frontier`: everything before it is processed."""
        return []

    def snapshot(self, mask: Mask | None = None) -> dict[str, Any]:
        """The partition's checkpoint document (runtime/snapshot.py's, with `extras` under "kafka")."""
        raise NotImplementedError

    def restore(self, doc: dict[str, Any]) -> None:
        """Start from a checkpoint document `snapshot` made."""
        raise NotImplementedError

    # ------------------------------------------------------------------ saved with each checkpoint

    def extras(self) -> dict[str, Any]:
        """What the checkpoint keeps beside the partition's state: the promises and the frontier."""
        return {
            "topology": self.topology.fingerprint(),
            "done": list(self.done),
            "promised": list(self.promised),
            "promises": {s: list(p) for s, p in self.promises.items()},
            "idle": sorted(self.idle),
        }

    def restore_extras(self, saved: dict[str, Any]) -> None:
        """Take back what `extras` saved."""
        self.done = tuples(saved["done"])
        self.promised = tuples(saved.get("promised", []))
        for s, p in saved["promises"].items():
            if s in self.promises:
                self.promises[s] = tuples(p)
        self.idle = {s for s in saved["idle"] if s in self.promises}
        self._dirty = True
