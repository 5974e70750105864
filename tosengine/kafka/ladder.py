"""Stage decide (escalation, scale-out): the violations of the subjects of one ladder partition, in
position order -> recorded with their ladder step.

A subject's violations come from every stage (a ban-evasion rule keyed by device records against the
account that came back; an operator's rules against the operator), so the ladder cannot climb where
they are found. They are sent here keyed by subject, and each partition climbs its subjects' ladders
in position order: the order a single process records them in (runtime/order.py), which decides the
step of two violations of one subject at the same time. The step and action are set here, and the
violations are written with this partition's checkpoint.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tosengine.kafka.partition import PartitionRuntime
from tosengine.kafka.records import VIOLATION, Out, Record
from tosengine.kafka.stage import restore_state
from tosengine.kafka.topology import LADDER, Topology
from tosengine.runtime.kinds import StateOptions
from tosengine.runtime.order import Frontier, time_of
from tosengine.runtime.partition import PartitionState
from tosengine.runtime.snapshot import Mask, save_state

__all__ = ["LadderPartition"]


class LadderPartition(PartitionRuntime):
    """Partition `index` of the ladder: each subject's counted violations within the ladder's window."""

    def __init__(self, topology: Topology, index: int, *, options: StateOptions) -> None:
        super().__init__(topology, LADDER, index)
        self.options = options
        self.state = PartitionState(options)  # only its ladder and clock are used

    def process(self, rec: Record) -> list[Out]:
        """Climb the subject's ladder with one violation, and keep it to write."""
        if rec.kind != VIOLATION:
            return []
        v = rec.violation_of()
        # The stream's settled clock was at or before the violation's time (items come in time order), so
        # the window is measured from the violation's own time.
        action, step = self.state.ladder.climb(
            self.topology.program.ladder, v.policy, v.subject, v.time, v.action, v.time, count=v.mode != "shadow"
        )
        self.rows.violations.append(dataclasses.replace(v, action=action, ladder_step=step))
        return []

    def reached(self, frontier: Frontier) -> list[Out]:
        """Forget subjects whose violations have all left the window."""
        now = time_of(frontier[0])
        if self.state.clock.advance(now):
            self.state.clock.settle()
            self.state.ladder.sweep(self.topology.program.ladder, now)
        return []

    def snapshot(self, mask: Mask | None = None) -> dict[str, Any]:
        """The partition's checkpoint document: the ladder's memory and what orders it."""
        doc = save_state(self.state, self.topology.program, self.name, mask)
        doc["kafka"] = self.extras()
        return doc

    def restore(self, doc: dict[str, Any]) -> None:
        """Start from a checkpoint document `snapshot` made."""
        self.state = restore_state(self, doc, self.options)
