"""Stage front end (Kafka clients): a worker's settings -> its topics, producer, consumer and audit log.

The settings the Kafka clients are made with, and why: the producer is idempotent (records reach each
partition in order and without gaps, so a watermark never overtakes what it covers) and the consumer
never auto-commits (an input offset is committed once what it covers is delivered; a repartition
partition's offset lives in the audit database). Any librdkafka setting can be added (`kafka`); the ones
the design depends on cannot be overridden.
"""

from __future__ import annotations

import os
import random
import socket
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer

from tosengine.audit.log import AuditLog
from tosengine.errors import AuditError
from tosengine.kafka.topics import client_config, ensure_topics
from tosengine.kafka.topology import Topology
from tosengine.runtime.engine import MAX_CLOCK_LEAD, SMOKE_TEST_TIMEOUT
from tosengine.runtime.kinds import StateOptions

__all__ = ["WorkerSettings", "connect", "delivered", "open_audit_log", "prepare_topics"]


@dataclass(frozen=True)
class WorkerSettings:
    """How a worker runs (the `tosengine worker` options; docs/scale-out.md explains each)."""

    bootstrap_servers: str
    topic: str
    group: str
    db: str
    kafka: dict[str, str] = field(default_factory=dict)  # any librdkafka setting, for every client
    commit_interval: float = 1.0  # seconds between writes of the owned partitions
    watermark_interval: float = 0.1  # seconds between watermarks
    idle_timeout: float = 60.0  # seconds at the end of an input partition before it stops holding back; 0: never
    lateness: timedelta = timedelta(0)  # event time the routers' watermarks hold back
    max_skew: timedelta | None = timedelta(days=1)  # event time a router may run ahead of the slowest one
    max_batch: int = 500  # records per consume call
    max_clock_lead: timedelta | None = MAX_CLOCK_LEAD
    options: StateOptions = field(default_factory=StateOptions)
    smoke_test: float | None = SMOKE_TEST_TIMEOUT  # the load-time check of the compiled rulesets
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")


def _config(settings: WorkerSettings, role: str) -> dict[str, Any]:
    return client_config({"bootstrap.servers": settings.bootstrap_servers, **settings.kafka}, role)


def prepare_topics(settings: WorkerSettings, topology: Topology) -> dict[str, str]:
    """Make the stages' repartition topics (if missing), give the topology their partition counts;
    topic -> stage."""
    topics = topology.topics()
    counts = ensure_topics(
        {"bootstrap.servers": settings.bootstrap_servers, **settings.kafka}, settings.topic, sorted(topics)
    )
    topology.set_partitions(counts[settings.topic], {stage: counts[t] for t, stage in topics.items()})
    return topics


def connect(settings: WorkerSettings) -> tuple[Producer, Consumer]:
    """The worker's producer and consumer."""
    producer = Producer(
        {
            "linger.ms": 20,  # batches records for the next hop; see fetch.wait.max.ms below
            **_config(settings, "producer"),
            "enable.idempotence": True,  # in order, without gaps: a watermark never passes what it covers
            "acks": "all",
        }
    )
    consumer = Consumer(
        {
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 1_000,
            # Records go round through the repartition topics, a hop per stage: a fetch waiting the
            # default 500 ms for more data is latency on every hop (20 ms: 2.5x the throughput here).
            "fetch.wait.max.ms": 20,
            **_config(settings, "consumer"),
            "group.id": settings.group,
            "partition.assignment.strategy": "cooperative-sticky",
            "enable.auto.commit": False,  # offsets are committed once what they cover is delivered
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,  # a router at the end may promise the events at its watermark
        }
    )
    return producer, consumer


def open_audit_log(url: str, attempts: int = 5) -> AuditLog:
    """The audit log, migrated. Workers started together race to migrate a new database, and all but one
    fail on the tables the first creates: those try again, and find them made."""
    for attempt in range(attempts):
        try:
            return AuditLog(url)
        except AuditError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


def delivered(err: KafkaError | None, msg: Message) -> None:
    """A record the producer could not deliver: stop (a restart redoes it from what was written)."""
    if err is not None:
        raise KafkaException(err)
