"""Observability (Kafka workers): what a worker owns and how far behind it is -> Prometheus metrics.

A worker reports the names every front end shares (tosengine/metrics.py: events received, rejected and
duplicate, violations recorded, audit write seconds) and these, on the same registry, named in the same
scheme. Labels are topics and partition numbers: bounded by the cluster, never by the data.
"""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import Consumer, KafkaException, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge

from tosengine.kafka.partition import PartitionRuntime
from tosengine.metrics import Metrics

__all__ = ["WorkerMetrics"]


class WorkerMetrics(Metrics):
    """The shared metrics plus a worker's own, on `registry` (a new one if None)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        r = self.registry
        self.consumer_lag = Gauge(
            "tosengine_kafka_consumer_lag",
            "Records of an owned partition not yet consumed (high watermark - position)",
            ["topic", "partition"],
            registry=r,
        )
        self.rebalances = Counter(
            "tosengine_kafka_rebalances",
            "Partitions assigned, revoked or lost in rebalances, by what happened",
            ["kind"],
            registry=r,
        )
        for kind in ("assigned", "revoked", "lost", "fenced"):
            self.rebalances.labels(kind)
        self.partitions = Gauge(
            "tosengine_kafka_partitions", "Partitions this worker owns, by role (router or stage)", ["role"], registry=r
        )
        self.watermark = Gauge(
            "tosengine_kafka_watermark_seconds",
            "The event time (Unix seconds) before which an owned partition has processed everything",
            ["topic", "partition"],
            registry=r,
        )
        self.buffered = Gauge(
            "tosengine_kafka_buffered_records",
            "Records an owned partition holds until the watermark passes them",
            ["topic", "partition"],
            registry=r,
        )
        self.records_lost = Counter(
            "tosengine_kafka_records_lost",
            "Records deleted by the topic's retention before this worker read them (the output misses them)",
            ["topic", "partition"],
            registry=r,
        )
        self.commit_retries = Counter(
            "tosengine_kafka_commit_retries",
            "Kafka offset commits put off by a rebalance, by error (retried at the next commit)",
            ["error"],
            registry=r,
        )

    def observe(
        self,
        consumer: Consumer,
        tps: list[TopicPartition],
        routers: int,
        owned: Sequence[tuple[str, int, PartitionRuntime]],
    ) -> None:
        """Set the gauges from what the worker owns: lag (from the consumer's cached high watermarks),
        what each partition buffers and how far its watermark is."""
        self.partitions.labels("router").set(routers)
        self.partitions.labels("stage").set(len(owned))
        try:
            positions = {(tp.topic, tp.partition): tp.offset for tp in consumer.position(tps)}
        except KafkaException:
            return
        for tp in tps:
            try:
                _, high = consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            at = positions.get((tp.topic, tp.partition), -1)
            if at is not None and at >= 0 and high is not None and high >= 0:
                self.consumer_lag.labels(tp.topic, str(tp.partition)).set(high - at)
        for topic, index, part in owned:
            self.buffered.labels(topic, str(index)).set(part.buffered)
            if part.done:
                self.watermark.labels(topic, str(index)).set(part.done[0] / 1e6)
