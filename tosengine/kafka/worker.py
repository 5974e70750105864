"""Stage front end (Kafka): a consumer-group worker -> routed events, processed partitions, audit writes.

One worker is one consumer in the group (cooperative-sticky), subscribed to the input topic and to every
stage's repartition topic. For each input partition it owns it runs a Router; for each repartition
partition, a StagePartition or a LadderPartition, claimed in the audit database on assignment (a new
owner epoch; the checkpoint and the offset written with it; the Kafka-committed offset is only a hint).
The loop: consume a batch, route or buffer each record, run every owned partition as far as its
frontier allows, send what they derive; every `watermark_interval` send the watermarks; every
`commit_interval` flush the producer (what was derived is in Kafka before the state that derived it is
written), write the changed partitions in one fenced transaction (writer.py), then commit the routers'
offsets. The clients and their settings are in clients.py. docs/scale-out.md has the whole design, and
what is and is not guaranteed.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from tosengine.errors import AuditError
from tosengine.kafka.clients import WorkerSettings, connect, delivered, open_audit_log, prepare_topics
from tosengine.kafka.ladder import LadderPartition
from tosengine.kafka.metrics import WorkerMetrics
from tosengine.kafka.offsets import Offsets
from tosengine.kafka.partition import PartitionRuntime
from tosengine.kafka.records import Out, Record
from tosengine.kafka.router import Router, held_back
from tosengine.kafka.stage import StagePartition
from tosengine.kafka.topology import LADDER, Topology
from tosengine.kafka.writer import PartitionWriter
from tosengine.policy.model import CheckedPolicySet
from tosengine.runtime.program import Program
from tosengine.runtime.snapshot import unpack

__all__ = ["Worker", "WorkerSettings"]

LOG = logging.getLogger("tosengine.kafka")
# Commit errors a rebalance causes: the commit is retried with the next one, never fatal.
_REBALANCING = {KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID}


@dataclass
class _Owned:
    part: PartitionRuntime
    topic: str
    index: int
    epoch: int


class Worker:
    """A Kafka worker running `policies` (docs/scale-out.md). `run` returns after `stop` (or SIGTERM in
    the CLI), having written everything and left the group."""

    def __init__(self, policies: CheckedPolicySet, settings: WorkerSettings, metrics: WorkerMetrics | None = None):
        self.settings = settings
        self.metrics = metrics if metrics is not None else WorkerMetrics()
        self.program = Program(policies, smoke_test=settings.smoke_test)
        self.topology = Topology(self.program, settings.group, settings.topic)
        self.audit = open_audit_log(settings.db)
        self.audit.register_policies(policies)
        self.offsets = Offsets(self.audit.engine, settings.db, settings.worker_id)
        self.writer = PartitionWriter(self.audit, self.offsets, self.metrics)
        self._stop = threading.Event()
        self.routers: dict[int, Router] = {}
        self._fenced_tps: set[tuple[str, int]] = set()  # partitions this worker was fenced out of
        # Partitions this worker paused (fenced, paced, a failing database). librdkafka keeps a pause across
        # unassign and assign: one of these assigned again must be resumed, or it is owned and never read.
        self._paused: set[tuple[str, int]] = set()
        self.owned: dict[tuple[str, int], _Owned] = {}
        self._stages: dict[str, str] = {}  # topic -> stage
        self._failed_write = 0.0  # when the database last refused a write (0: it did not)

    # ------------------------------------------------------------------ the loop

    def stop(self) -> None:
        """Ask `run` to finish the batch, write, leave the group and return."""
        self._stop.set()

    def run(self) -> None:
        """Consume, route, process and write until `stop`."""
        self._stages = prepare_topics(self.settings, self.topology)
        producer, consumer = connect(self.settings)
        self.producer, self.consumer = producer, consumer
        consumer.subscribe(
            [self.settings.topic, *sorted(self._stages)],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        LOG.info("worker started", extra={"group": self.settings.group, "stages": sorted(self.topology.stages)})
        last_mark = last_write = last_lag = time.monotonic()
        try:
            while not self._stop.is_set():
                for msg in consumer.consume(self.settings.max_batch, 0.1):
                    self._dispatch(msg)
                self._run_partitions()
                now = time.monotonic()
                if now - last_mark >= self.settings.watermark_interval:
                    last_mark = now
                    self._watermarks()
                    self._pace()
                retry = self._failed_write and now - self._failed_write >= 1.0
                if now - last_write >= self.settings.commit_interval or retry:
                    last_write = now
                    self._write_all()
                if now - last_lag >= 5.0:
                    last_lag = now
                    self._gauges()
                producer.poll(0)
            self._run_partitions()
            self._watermarks()
            self._write_all(final=True)
        finally:
            self._leave(consumer)
            producer.flush(30)
            self.audit.release()
            LOG.info("worker stopped", extra={"group": self.settings.group})

    @staticmethod
    def _leave(consumer: Consumer) -> None:
        """Leave the group, so its partitions move without waiting for a session timeout. If librdkafka
        cannot (a rebalance under way when the worker stops may time out asking for committed offsets),
        nothing is lost: what the worker processed is written, with its offsets, in the audit log. The
        group then moves its partitions when the session times out."""
        try:
            consumer.close()
        except KafkaException as exc:
            LOG.warning(
                "could not leave the group cleanly; its partitions move after the session timeout",
                extra={"error": str(exc)},
            )

    def _dispatch(self, msg: Message) -> None:
        topic, p = msg.topic(), msg.partition()
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                if topic == self.settings.topic and p in self.routers:
                    self.routers[p].at_end = True
            else:
                LOG.warning("consumer error: %s", err, extra={"topic": topic, "partition": p})
            return
        offset = msg.offset()
        if topic is None or p is None or offset is None:
            return
        if topic == self.settings.topic:
            router = self.routers.get(p)
            if router is None:
                return
            self._check_gap(topic, p, router.next_offset, offset)
            outs, etype, refused = router.route(msg.headers(), msg.value(), offset)
            self.metrics.received(etype)
            if refused is not None:
                self.metrics.rejected(refused.field)
            self._send(outs)
            return
        owned = self.owned.get((topic, p))
        if owned is None:
            return
        try:
            rec = Record.of_kafka(msg.headers(), msg.value())
        except ValueError as exc:
            LOG.warning("skipped a record: %s", exc, extra={"topic": topic, "partition": p, "offset": offset})
            return
        self._check_gap(topic, p, owned.part.next_offset, offset)
        owned.part.receive(rec, offset)

    def _check_gap(self, topic: str, p: int, expected: int | None, offset: int) -> None:
        """Records skipped over: the topic deleted them (retention; the mock cluster keeps 5 MB a partition)
        before they were read. Nothing written can make up for them: say so loudly."""
        if expected is not None and offset > expected:
            self.metrics.records_lost.labels(topic, str(p)).inc(offset - expected)
            LOG.error(
                "%d record(s) of %s/%d were deleted before they were read (retention): the output misses them",
                offset - expected,
                topic,
                p,
                extra={"topic": topic, "partition": p, "from": expected, "to": offset},
            )

    def _send(self, outs: list[Out]) -> None:
        for stage, n, key, rec in outs:
            topic = self.topology.topic(stage)
            while True:
                try:
                    self.producer.produce(
                        topic, value=rec.value, key=key, partition=n, headers=rec.headers(), on_delivery=delivered
                    )
                    break
                except BufferError:  # the producer's queue is full: let it drain (backpressure)
                    self.producer.poll(0.1)

    def _run_partitions(self) -> None:
        for owned in list(self.owned.values()):
            self._send(owned.part.run())

    def _watermarks(self) -> None:
        for router in self.routers.values():
            self._send(router.watermark(self.settings.idle_timeout))
        for owned in self.owned.values():
            self._send(owned.part.promise())

    def _pace(self) -> None:
        """Hold back the input partitions that run more than max_skew ahead of the slowest one (this
        bounds what stage partitions buffer; router.held_back)."""
        if self.settings.max_skew is None or not self.routers:
            return
        # Any owned partition that takes events hears every router's watermark.
        heard = next((o.part for o in self.owned.values() if any(s.startswith("in/") for s in o.part.promises)), None)
        ahead = held_back(
            self.routers, heard.promises if heard else {}, heard.idle if heard else set(), self.settings.max_skew
        )
        for i, router in self.routers.items():
            if (i in ahead) != router.paused:
                tp = TopicPartition(self.settings.topic, i)
                (self._pause if i in ahead else self._resume)([tp])
                router.paused = i in ahead

    def _pause(self, tps: list[TopicPartition]) -> None:
        """Stop fetching these partitions (and remember it: see `_on_assign`)."""
        self.consumer.pause(tps)
        self._paused.update((tp.topic, tp.partition) for tp in tps)

    def _resume(self, tps: list[TopicPartition]) -> None:
        """Fetch these partitions again."""
        self.consumer.resume(tps)
        self._paused.difference_update((tp.topic, tp.partition) for tp in tps)

    # ------------------------------------------------------------------ writes and commits

    def _write_all(self, final: bool = False) -> None:
        """Deliver everything sent, then write the partitions that changed; then commit the routers."""
        if self.producer.flush(30) > 0:
            LOG.warning("the producer could not deliver everything within 30 s: writes put off")
            return
        due = [
            (o.part, o.epoch)
            for o in self.owned.values()
            if final or o.part.changed or o.part.rows or self.writer.pending(o.part.name)
        ]
        was_failing = bool(self._failed_write)
        try:
            for name in self.writer.write(due) if due else []:
                self._fenced(name)
        except AuditError as exc:
            LOG.error("audit write failed, will retry: %s", exc)
            if not was_failing:  # consume nothing more until the database takes writes again
                self._pause(self.consumer.assignment())
            self._failed_write = time.monotonic()
            return
        if was_failing:
            held = {i for i, r in self.routers.items() if r.paused}
            self._resume(
                [
                    tp
                    for tp in self.consumer.assignment()
                    if (tp.topic, tp.partition) not in self._fenced_tps
                    and not (tp.topic == self.settings.topic and tp.partition in held)
                ]
            )
        self._failed_write = 0.0
        self._commit()

    def _fenced(self, name: str) -> None:
        """This worker is a zombie for that partition: drop it, write nothing more for it."""
        key = next((k for k, o in self.owned.items() if o.part.name == name), None)
        if key is None:
            return
        owned = self.owned.pop(key)
        self.writer.forget(name)
        self._pause([TopicPartition(owned.topic, owned.index)])
        self._fenced_tps.add(key)
        self.metrics.rebalances.labels("fenced").inc()
        LOG.warning("fenced: another worker owns it now", extra={"partition": name})

    def _commit(self, only: list[int] | None = None) -> None:
        """Commit the routers' offsets (with what they promised) and, as a hint for lag, the partitions'."""
        offsets = [
            TopicPartition(self.settings.topic, i, r.next_offset, r.mark())
            for i, r in self.routers.items()
            if (only is None or i in only) and r.next_offset is not None
        ]
        if only is None:
            for owned in self.owned.values():
                at = owned.part.resume_offset()
                if at is not None:
                    offsets.append(TopicPartition(owned.topic, owned.index, at))
        if not offsets:
            return
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            code = exc.args[0].code() if exc.args else None
            if code in _REBALANCING:
                self.metrics.commit_retries.labels(exc.args[0].name()).inc()
                LOG.info("commit put off by a rebalance (%s): retried with the next one", exc.args[0].name())
            else:
                LOG.warning("commit failed (retried with the next one): %s", exc)

    # ------------------------------------------------------------------ rebalances

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            if tp.topic == self.settings.topic:
                committed = consumer.committed([TopicPartition(tp.topic, tp.partition)], timeout=30)
                mark = committed[0].metadata if committed else None
                router = self.routers[tp.partition] = Router(
                    self.topology,
                    tp.partition,
                    lateness=self.settings.lateness,
                    max_lead=self.settings.max_clock_lead,
                    mark=mark,
                )
                if committed and committed[0].offset >= 0:
                    router.next_offset = committed[0].offset
                continue
            self._fenced_tps.discard((tp.topic, tp.partition))
            stage = self._stages[tp.topic]
            part = self._partition(stage, tp.partition)
            claim = self.offsets.claim(part.name, tp.topic, tp.partition, self.topology.fingerprint())
            if claim.state is not None:
                part.restore(unpack(claim.state))
            self.owned[(tp.topic, tp.partition)] = _Owned(part, tp.topic, tp.partition, claim.epoch)
            part.next_offset = claim.next_offset  # where reading resumes: a record past it was lost
            tp.offset = claim.next_offset if claim.next_offset is not None else OFFSET_BEGINNING
        consumer.incremental_assign(partitions)
        # librdkafka keeps an application's pause across unassign and assign: a partition this worker paused
        # before it lost it (fenced out of it, its router paced) comes back paused, and would be owned and
        # never read, its frontier, and every frontier downstream, stuck. A new owner starts reading (while
        # the database refuses writes, it is resumed with the rest once it takes them again).
        again = [
            TopicPartition(tp.topic, tp.partition) for tp in partitions if (tp.topic, tp.partition) in self._paused
        ]
        if again and not self._failed_write:
            self._resume(again)
        self.metrics.rebalances.labels("assigned").inc(len(partitions))
        LOG.info("assigned", extra={"partitions": [f"{tp.topic}/{tp.partition}" for tp in partitions]})

    def _partition(self, stage: str, index: int) -> PartitionRuntime:
        if stage == LADDER:
            return LadderPartition(self.topology, index, options=self.settings.options)
        return StagePartition(
            self.topology,
            stage,
            index,
            masker=self.audit.masker,
            options=self.settings.options,
            recorded=self.audit.recorded,
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Finish the batch of the partitions leaving: process, deliver, write, commit; then drop them."""
        self.producer.flush(30)
        inputs = [tp.partition for tp in partitions if tp.topic == self.settings.topic]
        self._commit(only=inputs)
        for i in inputs:
            self.routers.pop(i, None)
        leaving = [self.owned[k] for tp in partitions if (k := (tp.topic, tp.partition)) in self.owned]
        for owned in leaving:
            self._send(owned.part.run())
            self._send(owned.part.promise())
        self.producer.flush(30)
        try:
            self.writer.write([(o.part, o.epoch) for o in leaving])
        except AuditError as exc:
            LOG.warning("partitions revoked unwritten (their next owner redoes it): %s", exc)
        for owned in leaving:
            self.writer.forget(owned.part.name)
            del self.owned[(owned.topic, owned.index)]
        self.metrics.rebalances.labels("revoked").inc(len(partitions))
        LOG.info("revoked", extra={"partitions": [f"{tp.topic}/{tp.partition}" for tp in partitions]})

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions taken away without a revocation (this worker missed its session): drop their state
        and write nothing for them."""
        for tp in partitions:
            if tp.topic == self.settings.topic:
                self.routers.pop(tp.partition, None)
            owned = self.owned.pop((tp.topic, tp.partition), None)
            if owned is not None:
                self.writer.forget(owned.part.name)
        self.metrics.rebalances.labels("lost").inc(len(partitions))
        LOG.warning("lost", extra={"partitions": [f"{tp.topic}/{tp.partition}" for tp in partitions]})

    # ------------------------------------------------------------------ metrics

    def _gauges(self) -> None:
        tps = [TopicPartition(self.settings.topic, i) for i in self.routers]
        tps += [TopicPartition(o.topic, o.index) for o in self.owned.values()]
        self.metrics.observe(
            self.consumer, tps, len(self.routers), [(o.topic, o.index, o.part) for o in self.owned.values()]
        )
