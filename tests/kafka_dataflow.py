"""The Kafka workers' dataflow without Kafka: routers, stage and ladder partitions over in-memory logs.

`simulate` runs the same classes the worker runs (tosengine/kafka/router.py, stage.py, ladder.py) on
in-memory topic partitions, in an order a seeded random scheduler picks: routers read a few records,
partitions consume a few, run, promise, write (a checkpoint, the resume offset and the rows, kept as
"committed"), crash and restart from what they wrote, routers restart from their committed offset
(sending copies again), and zombies (a crashed partition that goes on processing and sending, whose
writes are refused) live on for a while. The committed violations must equal a single process's.
"""

from __future__ import annotations

import copy
import random
import zlib
from dataclasses import dataclass, field
from typing import Any

from tosengine.kafka.ladder import LadderPartition
from tosengine.kafka.partition import PartitionRuntime
from tosengine.kafka.records import Out, Record
from tosengine.kafka.router import Router
from tosengine.kafka.stage import StagePartition
from tosengine.kafka.topology import LADDER, Topology
from tosengine.masking import Masker
from tosengine.policy.model import CheckedPolicySet
from tosengine.runtime.kinds import StateOptions
from tosengine.runtime.program import Program
from tosengine.runtime.snapshot import pack, unpack
from tosengine.violation import Repeat, Violation


@dataclass
class _Written:
    doc: dict[str, Any] | None = None
    offset: int = 0


@dataclass
class Result:
    """What the simulated workers committed."""

    violations: dict[str, Violation] = field(default_factory=dict)
    repeats: dict[str, Repeat] = field(default_factory=dict)
    events: set[tuple[str, str]] = field(default_factory=set)
    rejected: list[str] = field(default_factory=list)
    duplicates_written: int = 0  # a violation id written twice (the audit log would skip the copy)
    steps: int = 0


def simulate(
    policies: CheckedPolicySet,
    lines: list[str],
    *,
    ends: list[str] | None = None,
    seed: int,
    inputs: int = 4,
    partitions: dict[str, int] | None = None,
    chaos: bool = True,
    max_steps: int = 2_000_000,
) -> Result:
    """Run `lines` (events as JSON text, each input partition in time order) through simulated workers;
    `ends` are appended one to each input partition (an event at the end time on every partition: what
    brings every watermark to the end)."""
    program = Program(policies)
    try:
        return _simulate(program, policies, lines, ends or [], seed, inputs, partitions, chaos, max_steps)
    finally:
        program.close()  # durable_rules' rulesets are process-wide: leave none behind


def _simulate(
    program: Program,
    policies: CheckedPolicySet,
    lines: list[str],
    ends: list[str],
    seed: int,
    inputs: int,
    partitions: dict[str, int] | None,
    chaos: bool,
    max_steps: int,
) -> Result:
    rng = random.Random(seed)
    topo = Topology(program, "sim", "in")
    counts = {sid: (partitions or {}).get(sid, rng.randint(1, 4) if chaos else inputs) for sid in topo.stages}
    topo.set_partitions(inputs, counts)
    masker = Masker(b"0123456789abcdef", policies.sensitive)
    options = StateOptions()
    logs: dict[tuple[str, int], list[Record]] = {(s, n): [] for s in topo.stages for n in range(counts[s])}
    inputs_of: list[list[bytes]] = [[] for _ in range(inputs)]
    for line in lines:
        inputs_of[zlib.crc32(line.encode()) % inputs].append(line.encode())
    for i, line in enumerate(ends):
        inputs_of[i % inputs].append(line.encode())

    def fresh(sid: str, n: int) -> PartitionRuntime:
        if sid == LADDER:
            return LadderPartition(topo, n, options=options)
        return StagePartition(topo, sid, n, masker=masker, options=options)

    result = Result()
    routers = [Router(topo, i) for i in range(inputs)]
    read = [0] * inputs  # next input offset each router reads
    committed = [(0, routers[i].mark()) for i in range(inputs)]
    parts = {key: fresh(*key) for key in logs}
    cursor = dict.fromkeys(logs, 0)  # next offset each partition consumes
    written = {key: _Written() for key in logs}
    zombies: list[tuple[tuple[str, int], PartitionRuntime, int, int]] = []  # (key, runtime, cursor, steps left)

    def send(outs: list[Out]) -> None:
        for sid, n, _, rec in outs:
            logs[(sid, n)].append(rec)

    def write(key: tuple[str, int]) -> None:
        p = parts[key]
        blob, _ = pack(p.snapshot())
        written[key] = _Written(unpack(blob), p.resume_offset() or 0)
        rows = p.rows
        for v in rows.violations:
            if v.id in result.violations:
                result.duplicates_written += 1
            result.violations.setdefault(v.id, v)
        for r in rows.repeats:
            result.repeats.setdefault(r.id, r)
        result.events |= {(e.source, e.id) for e in rows.events}
        result.rejected += [raw for raw, _, _ in rows.rejected]
        p.rows = type(rows)()

    def restart(key: tuple[str, int]) -> None:
        p = fresh(*key)
        w = written[key]
        if w.doc is not None:
            p.restore(copy.deepcopy(w.doc))
        p.rows = type(p.rows)()
        parts[key] = p
        cursor[key] = w.offset

    def consume(p: PartitionRuntime, key: tuple[str, int], at: int, k: int) -> int:
        log = logs[key]
        for off in range(at, min(at + k, len(log))):
            p.receive(log[off], off)
        return min(at + k, len(log))

    keys = list(logs)
    for step in range(max_steps):
        result.steps = step
        roll = rng.random()
        if roll < 0.3:  # a router reads a few records
            i = rng.randrange(inputs)
            r = routers[i]
            for _ in range(rng.randint(1, 12)):
                if read[i] >= len(inputs_of[i]):
                    r.at_end = True
                    break
                outs, _, _ = r.route(None, inputs_of[i][read[i]], read[i])
                send(outs)
                read[i] += 1
            if read[i] >= len(inputs_of[i]):
                r.at_end = True
            if rng.random() < 0.5:
                send(r.watermark())
            if rng.random() < 0.3:
                send(r.watermark())
                committed[i] = (read[i], r.mark())
        elif roll < 0.35 and chaos:  # a router restarts from its committed offset: copies are sent again
            i = rng.randrange(inputs)
            read[i], mark = committed[i]
            routers[i] = Router(topo, i, mark=mark)
        elif roll < 0.8:  # a partition consumes a few records and runs
            key = rng.choice(keys)
            p = parts[key]
            cursor[key] = consume(p, key, cursor[key], rng.randint(1, 30))
            send(p.run())
            if rng.random() < 0.6:
                send(p.promise())
            if rng.random() < 0.15:
                write(key)
        elif roll < 0.83 and chaos:  # a partition crashes and restarts from what it wrote
            key = rng.choice(keys)
            if rng.random() < 0.5:
                zombies.append((key, parts[key], cursor[key], rng.randint(1, 20)))
            restart(key)
        elif zombies:  # a zombie goes on: it sends, but its writes are refused
            j = rng.randrange(len(zombies))
            key, z, at, left = zombies[j]
            at = consume(z, key, at, rng.randint(1, 30))
            send(z.run())
            send(z.promise())
            z.rows = type(z.rows)()
            zombies[j] = (key, z, at, left - 1)
            if left <= 1:
                zombies.pop(j)
        if (
            all(read[i] >= len(inputs_of[i]) for i in range(inputs))
            and rng.random() < 0.002
            and _drain(routers, parts, cursor, logs, send, consume)
        ):
            break
    for key in keys:
        write(key)
    return result


def _drain(
    routers: list[Router],
    parts: dict[tuple[str, int], PartitionRuntime],
    cursor: dict[tuple[str, int], int],
    logs: dict[tuple[str, int], list[Record]],
    send: Any,
    consume: Any,
) -> bool:
    """Run everything to quiescence (all input read): True once nothing more moves."""
    for r in routers:
        r.at_end = True
        send(r.watermark())
    for _ in range(1000):
        before = sum(len(v) for v in logs.values())
        for key, p in parts.items():
            cursor[key] = consume(p, key, cursor[key], 1 << 30)
            send(p.run())
            send(p.promise())
        if sum(len(v) for v in logs.values()) == before and all(cursor[k] == len(logs[k]) for k in logs):
            return True
    raise AssertionError("the dataflow did not settle")
