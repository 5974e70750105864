"""Stage route (scale-out plan): a Program -> the Topology every worker of a group shares.

Rules are grouped by their key expression (`event.subject` and `fact.subject`, the default, are the
group `subject`) and by their *stratum*: 0 for a rule no derived fact can reach, else one more than the
highest stratum of the rules whose facts it can match (the fact graph `check` keeps acyclic). Each
(group, stratum) is a *stage*, with a repartition topic keyed by the group's key: its partitions hold
every event and fact its rules can match, and a worker that owns a partition runs the stage's rules on
it. A stage only ever sends facts to stages of a higher stratum, so the stages form an acyclic graph
and watermarks flow through it without waiting on themselves (docs/scale-out.md).

With an escalation ladder, violations go to one more topic keyed by subject, `ladder`, whose partitions
climb each subject's ladder in order and record the violations. The stage `subject/s0` is the *home* of
every event: it records each one in the audit log's events table, and the dead letter of the input.
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from dataclasses import dataclass
from typing import Any

from tosengine.errors import TosEngineError
from tosengine.policy.expr import Path, walk
from tosengine.policy.graph import _accepts, _fact_constraints, _fact_triggers, _produces
from tosengine.policy.model import Expect, ItemKind, Rule, Sequence
from tosengine.runtime.evaluate import Env, Fn
from tosengine.runtime.program import Program, _shape

__all__ = ["HOME", "LADDER", "Stage", "Topology", "TopologyError", "key_hash"]

SUBJECT = "subject"
HOME = "subject/s0"
LADDER = "ladder"
_TOPIC_SAFE = re.compile(r"[^A-Za-z0-9._-]")


class TopologyError(TosEngineError):
    """Policies a Kafka group cannot run as they are (the message says why and what to do)."""


def key_hash(key: str) -> int:
    """The hash a key is partitioned by (CRC-32 of its UTF-8): the same in every worker and every run."""
    return zlib.crc32(key.encode("utf-8", "surrogatepass"))


@dataclass(frozen=True)
class Stage:
    """The rules of one key group at one stratum, and where their items come from and go.

    `key` reads the group's key from an item (None: the item's subject). `events`: the stage takes events
    from the routers. `upstream`: the stages that send it facts (or violations, for the ladder);
    `downstream`: the stages it sends them to.
    """

    id: str
    group: str
    stratum: int
    rules: frozenset[int]
    key: Fn | None
    events: bool
    upstream: tuple[str, ...]
    downstream: tuple[str, ...]

    @property
    def home(self) -> bool:
        """Whether this stage records every event and the input's dead letter."""
        return self.id == HOME


def _group(rule: Rule) -> tuple[str, Any]:
    """The key group's name, and its identity (the key's shape without source spans)."""
    key = rule.key
    if key is None or (isinstance(key, Path) and key.root in ("event", "fact") and key.parts == (SUBJECT,)):
        return SUBJECT, SUBJECT
    shape = _shape(key)
    if isinstance(key, Path):
        return key.dotted, shape
    return "expr-" + hashlib.sha256(json.dumps(shape, default=str).encode()).hexdigest()[:12], shape


def _fact_names(rule: Rule) -> set[str]:
    """The names under which `rule` reads a fact: `fact`, fact steps of a sequence, `after` on a fact."""
    names = {"fact"}
    body = rule.body
    if isinstance(body, Sequence):
        names |= {s.name for s in body.steps if s.item == "fact"}
    if isinstance(body, Expect) and body.after_item == "fact":
        names.add("after")
    return names


def _reads_fact_action(rule: Rule) -> bool:
    names = _fact_names(rule)
    return any(
        isinstance(x, Path) and x.root in names and x.parts[:1] == ("action",)
        for c in rule.conditions()
        for x in walk(c.expr)
    )


class Topology:
    """The stages of `program` for the consumer group `group` reading `input_topic`, their topics, and
    how events and facts are routed to their partitions. `set_partitions` gives the partition counts
    read from the cluster; every worker of the group must run the same policies."""

    def __init__(self, program: Program, group: str, input_topic: str) -> None:
        self.program = program
        self.group = group
        self.input_topic = input_topic
        rules = program.policies.rules
        producers = self._producers(rules)
        strata = self._strata(rules, producers)
        names: dict[Any, str] = {}
        stage_of: list[str] = []
        keys: dict[str, Fn | None] = {}
        for i, rule in enumerate(rules):
            name, ident = _group(rule)
            name = names.setdefault(json.dumps(ident, default=str), name)
            sid = f"{name}/s{strata[i]}"
            stage_of.append(sid)
            if sid not in keys:
                keys[sid] = None if name == SUBJECT else program.rules[i].key
        self.stage_of_rule = stage_of
        kinds: dict[int, set[ItemKind]] = {}
        for t in program.plan.triggers:
            kinds.setdefault(t.rule, set()).add(t.kind)
        members: dict[str, set[int]] = {HOME: set()}
        for i, sid in enumerate(stage_of):
            members.setdefault(sid, set()).add(i)
        ladder = program.ladder is not None
        if ladder:
            readers = [r.id for r in rules if _reads_fact_action(r)]
            if readers:
                raise TopologyError(
                    f"{', '.join(readers)} read the `action` of a violation fact: Kafka workers climb the "
                    "escalation ladder after the facts have moved on, so a violation fact carries its rule's "
                    "action there; match on fact.policy, fact.rule or fact.severity instead (docs/scale-out.md)"
                )
        stages: dict[str, Stage] = {}
        for sid in sorted(members):
            mine = members[sid]
            up = sorted({stage_of[p] for r in mine for p in producers[r]})
            down: list[str] = sorted({stage_of[c] for c in range(len(rules)) for p in producers[c] if p in mine})
            if ladder and any(rules[r].violation for r in mine):
                down.append(LADDER)
            group, _, stratum = sid.rpartition("/s")
            stages[sid] = Stage(
                sid,
                group,
                int(stratum),
                frozenset(mine),
                keys.get(sid),
                sid == HOME or any("event" in kinds.get(r, ()) for r in mine),
                tuple(up),
                tuple(down),
            )
        if ladder:
            senders = tuple(sorted(s.id for s in stages.values() if LADDER in s.downstream))
            stages[LADDER] = Stage(LADDER, SUBJECT, len(rules) + 1, frozenset(), None, False, senders, ())
        self.stages = stages
        self.partitions: dict[str, int] = {}
        self.input_partitions = 0

    # ------------------------------------------------------------------ the plan

    @staticmethod
    def _producers(rules: tuple[Rule, ...]) -> list[set[int]]:
        """For each rule, the rules whose facts it can match (as `check` computes fact cycles)."""
        accepts = [[_fact_constraints(c) for c in _fact_triggers(r)] for r in rules]
        out: list[set[int]] = [set() for _ in rules]
        for p, src in enumerate(rules):
            for fact in _produces(src):
                for c in range(len(rules)):
                    if any(_accepts(k, fact) for k in accepts[c]):
                        out[c].add(p)
        return out

    @staticmethod
    def _strata(rules: tuple[Rule, ...], producers: list[set[int]]) -> list[int]:
        strata: dict[int, int] = {}

        def stratum(r: int, path: tuple[int, ...]) -> int:
            if r in strata:
                return strata[r]
            if r in path:  # check refuses fact cycles; this is only the backstop
                raise TopologyError(f"derived facts form a cycle through {rules[r].id}")
            s = 1 + max((stratum(p, (*path, r)) for p in producers[r]), default=-1)
            strata[r] = s
            return s

        return [stratum(r, ()) for r in range(len(rules))]

    def topic(self, stage: str) -> str:
        """The repartition topic of a stage: named from the group and the key expression (and stratum)."""
        name = LADDER if stage == LADDER else f"{stage.rpartition('/s')[0]}-s{stage.rpartition('/s')[2]}"
        safe = _TOPIC_SAFE.sub("_", name)
        if safe != name:
            safe += "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
        return f"{_TOPIC_SAFE.sub('_', self.group)}-{safe}-repartition"

    def topics(self) -> dict[str, str]:
        """Topic name -> stage, for every stage."""
        return {self.topic(s): s for s in self.stages}

    def set_partitions(self, input_partitions: int, partitions: dict[str, int]) -> None:
        """The partition counts of the input topic and of each stage's topic (read from the cluster)."""
        self.input_partitions = input_partitions
        self.partitions = dict(partitions)

    def partition_name(self, stage: str, n: int) -> str:
        """The name of a stage partition in the audit log (checkpoints, offsets, events)."""
        name = f"{self.group}/{stage}/{n}"
        if len(name) > 180:  # the column holds 200
            name = name[:150] + "#" + hashlib.sha256(name.encode()).hexdigest()[:16]
        return name

    def sources(self, stage: str) -> list[str]:
        """Whose watermarks a partition of `stage` waits for: the routers of every input partition (if it
        takes events) and every partition of each upstream stage."""
        s = self.stages[stage]
        out = [f"in/{i}" for i in range(self.input_partitions)] if s.events else []
        for up in s.upstream:
            out += [f"{up}/{m}" for m in range(self.partitions[up])]
        return out

    def fingerprint(self) -> str:
        """A hash of the stages, their rules and partition counts: workers of a group must agree on it."""
        rules = self.program.policies.rules
        blob = [[s.id, sorted(rules[r].id for r in s.rules), self.partitions.get(s.id)] for s in self.stages.values()]
        return hashlib.sha256(json.dumps([blob, self.input_partitions]).encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ routing

    def key_of(self, stage: str, kind: ItemKind, fields: dict[str, Any]) -> str | None:
        """The stage's key of an item, if it has one (a non-empty string)."""
        fn = self.stages[stage].key
        env: Env = {kind: fields}
        try:
            v = fields.get(SUBJECT) if fn is None else fn(env)
        except Exception:  # the stage's rules will record the evaluation error; route by subject meanwhile
            v = fields.get(SUBJECT)
        return v if type(v) is str and v else None

    def partition_of(self, stage: str, key: str) -> int:
        """The partition of `stage` that holds `key`."""
        return key_hash(key) % self.partitions[stage]

    def route(self, kind: ItemKind, fields: dict[str, Any], *, home: bool = False) -> list[tuple[str, int, str]]:
        """(stage, partition, key) of every stage whose rules this item can match (by its pushed and local
        conditions), plus the home stage for an event (`home`)."""
        program = self.program
        env: Env = {kind: fields}
        stages: set[str] = {HOME} if home else set()
        for tid in program.matcher.match(kind, fields):
            t = program.plan.triggers[tid]
            sid = self.stage_of_rule[t.rule]
            if sid in stages:
                continue
            local = program.local[tid]
            try:
                if local is not None and local(env) is not True:
                    continue
            except Exception:  # the stage records the evaluation error
                pass
            stages.add(sid)
        out = []
        for sid in sorted(stages):
            key = self.key_of(sid, kind, fields)
            if key is not None:
                out.append((sid, self.partition_of(sid, key), key))
        return out
