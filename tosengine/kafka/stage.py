"""Stage decide (partition): the records of one stage partition, in position order -> violations and facts.

A StagePartition runs its stage's rules (one key group at one stratum) on the events and facts of one
partition, with the state of that partition (runtime/partition.py): windows, partial matches,
obligations, once_per windows, the redelivery memory. Obligations lapse at their positions, once the
frontier is past them, as the single process lapses them when its clock passes them. What its rules
derive goes on: facts to the stages whose rules can match them, violations to the ladder (or, without
one, straight into the rows this partition writes), with repeat records and evaluation errors. The home
stage also records every event, and the dead letter.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from tosengine.errors import EventError
from tosengine.events import parse_record
from tosengine.kafka.partition import PartitionRuntime
from tosengine.kafka.records import EVENT, FACT, Out, Record
from tosengine.kafka.topology import LADDER, Topology, TopologyError, key_hash
from tosengine.masking import Masker
from tosengine.runtime.kinds import StateOptions
from tosengine.runtime.order import Frontier, Pos, time_of
from tosengine.runtime.partition import PartitionState, identity
from tosengine.runtime.pipeline import Outcome, Pipeline
from tosengine.runtime.snapshot import Mask, load_state, save_state

__all__ = ["StagePartition", "restore_state"]

LOG = logging.getLogger("tosengine.kafka")

# Which of these (source, id) pairs the audit log holds as accepted events (AuditLog.recorded).
Recorded = Callable[[list[tuple[str, str]]], set[tuple[str, str]]]


class StagePartition(PartitionRuntime):
    """Partition `index` of stage `stage`. `masker` masks what rules render from sensitive fields (the
    audit log's salt, so every worker masks alike); `recorded` asks the audit log about an event the
    frontier has passed (the home stage tells a late event from a copy with it)."""

    def __init__(
        self,
        topology: Topology,
        stage: str,
        index: int,
        *,
        masker: Masker,
        options: StateOptions,
        recorded: Recorded | None = None,
    ) -> None:
        super().__init__(topology, stage, index)
        self.options = options
        self.pipeline = Pipeline(topology.program, masker, rules=topology.stages[stage].rules, climb=False)
        self.state = PartitionState(options)
        self.home = topology.stages[stage].home
        self.recorded = recorded
        self._downstream = frozenset(topology.stages[stage].downstream)

    # ------------------------------------------------------------------ in order

    def process(self, rec: Record) -> list[Out]:
        """One event or fact at its turn."""
        if rec.kind == FACT:
            return self._handle(self.pipeline.offer_at(self.state, rec.item()))
        if rec.kind != EVENT:
            return []
        assert rec.pos is not None
        text = rec.value.decode("utf-8", "surrogatepass")
        try:
            record = parse_record(text)
        except EventError as exc:  # the router validated it: only a tosengine of another version gets here
            if self.home:
                self.rows.rejected.append((text, exc, f"kafka:{self.name}"))
            return []
        outcome = self.pipeline.accept_at(self.state, record, rec.pos)
        if outcome is None:
            return []
        if outcome.conflict:
            if self.home:
                problem = "a copy of an event already processed (same source and id) with a different body"
                self.rows.rejected.append((text, EventError("id", f"{problem}: not processed again"), self.name))
            return []
        if self.home:
            self.rows.events.append(record)
        return self._handle(outcome)

    def own_next(self) -> Pos | None:
        """The position of the next obligation to lapse."""
        return self.pipeline.next_lapse(self.state)

    def own_run(self) -> list[Out]:
        """Lapse it."""
        return self._handle(self.pipeline.lapse_next(self.state))

    def reached(self, frontier: Frontier) -> list[Out]:
        """Move the clock to the frontier's time: once_per windows that end by then close, and what no
        later item can use is forgotten."""
        return self._handle(self.pipeline.advance_at(self.state, time_of(frontier[0])))

    def behind(self, rec: Record) -> None:
        """An event the frontier has passed is a copy of one processed here, or else late: the home stage
        records a late one in the dead letter (the others only drop it)."""
        if rec.kind != EVENT or not self.home:
            self.counts["duplicates"] += 1
            return
        text = rec.value.decode("utf-8", "surrogatepass")
        try:
            record = parse_record(text)
        except EventError:
            return
        pair = (record.source, record.id)
        if (
            identity(*pair) in self.state.redelivery.seen
            or any((r.source, r.id) == pair for r in self.rows.events)
            or (self.recorded is not None and self.recorded([pair]))
        ):
            self.counts["duplicates"] += 1
            return
        self.counts["late"] += 1
        problem = "late: behind the watermark of the partitions it was routed to; the events after it were processed"
        self.rows.rejected.append((text, EventError("time", problem), f"kafka:{self.topology.input_topic}"))

    def _handle(self, outcome: Outcome) -> list[Out]:
        """Send what an outcome derived on, and keep what it records."""
        out: list[Out] = []
        topo = self.topology
        for item in outcome.queue:
            rec = Record.fact(self.source, item)
            for sid, n, key in topo.route("fact", item.fields):
                if sid in self._downstream:
                    out.append((sid, n, key, rec))
                else:  # the fact graph says no stage upstream of that one makes such facts: a defect
                    LOG.error("fact %s of %s matches stage %s, which is not downstream", item.id, self.stage, sid)
        if LADDER in topo.stages:
            n = topo.partitions[LADDER]
            for v, pos in zip(outcome.violations, outcome.positions, strict=True):
                out.append((LADDER, key_hash(v.subject) % n, v.subject, Record.violation(self.source, pos, v)))
        else:
            self.rows.violations += outcome.violations
        self.rows.repeats += outcome.repeats
        self.rows.errors += outcome.errors
        return out

    # ------------------------------------------------------------------ saved and restored

    def snapshot(self, mask: Mask | None = None) -> dict[str, Any]:
        """The partition's checkpoint document: its state (runtime/snapshot.py) and what orders it."""
        doc = save_state(self.state, self.topology.program, self.name, mask)
        doc["kafka"] = self.extras()
        return doc

    def restore(self, doc: dict[str, Any]) -> None:
        """Start from a checkpoint document `snapshot` made (rules whose state cannot carry over are noted)."""
        self.state = restore_state(self, doc, self.options)


def restore_state(part: PartitionRuntime, doc: dict[str, Any], options: StateOptions) -> PartitionState:
    """The state a partition's checkpoint holds, and its ordering extras restored into `part`; the rules
    whose state could not carry over are noted in its rows. TopologyError if the checkpoint was made
    by workers running other key groups or partition counts."""
    saved = doc.get("kafka")
    if not isinstance(saved, dict):
        raise TopologyError(f"the checkpoint of {part.name} was not written by a Kafka worker")
    if saved.get("topology") != part.topology.fingerprint():
        raise TopologyError(
            f"the checkpoint of {part.name} was written for other stages or partition counts: the policies' "
            "key groups or facts changed, or a topic was resized; run these policies under a new --group "
            "(docs/scale-out.md)"
        )
    state, dropped = load_state(doc, part.topology.program, options)
    part.restore_extras(saved)
    if dropped:
        LOG.warning("state of %s dropped on resume of %s: their definition changed", ", ".join(dropped), part.name)
        part.rows.state_changes.append(
            ("state-dropped", {"rules": dropped, "on": "resume", "reason": "definition changed or rule removed"})
        )
    return state
