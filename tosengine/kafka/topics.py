"""Stage route (topics): the input topic and the stages' repartition topics -> their partition counts.

A repartition topic that is missing is created with the input topic's partition count (CreateTopics).
librdkafka's mock cluster does not implement CreateTopics; there, and on a broker that refuses it, a
metadata request with auto-creation makes the topic (the mock's have 4 partitions). Either way the
counts are read back from the cluster and used as they are: partitions of a stage are found by the
key's hash modulo its own topic's count, whatever it is. They must not change while the group runs
(a resized topic sends keys elsewhere): checkpoints record the counts and a worker refuses to resume
partitions written under others.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from tosengine.errors import TosEngineError

__all__ = ["KafkaSetupError", "client_config", "ensure_topics", "partition_count"]

LOG = logging.getLogger("tosengine.kafka")
# librdkafka warns about a setting that does not apply to a client; --kafka-config gives them all to
# every client, so each gets only its own (by these prefixes), and its warnings go to the JSON log.
_CONSUMER_ONLY = (
    "group.",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "partition.assignment.strategy",
    "auto.",
    "enable.auto.",
    "fetch.",
    "isolation.level",
    "queued.",
    "check.crcs",
    "enable.partition.eof",
    "coordinator.",
)
_PRODUCER_ONLY = (
    "linger.ms",
    "queue.buffering.",
    "batch.",
    "acks",
    "request.required.acks",
    "compression.",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "enable.idempotence",
    "enable.gapless.guarantee",
    "retries",
    "message.send.max.retries",
    "transactional.id",
    "transaction.timeout.ms",
    "sticky.partitioning.linger.ms",
    "partitioner",
)


def client_config(config: dict[str, Any], role: str) -> dict[str, Any]:
    """The settings that apply to a `role` client (consumer, producer or admin), with a logger that sends
    librdkafka's own messages to the `tosengine.kafka.librdkafka` logger."""
    drop = {"consumer": _PRODUCER_ONLY, "producer": _CONSUMER_ONLY, "admin": _CONSUMER_ONLY + _PRODUCER_ONLY}[role]
    out = {k: v for k, v in config.items() if not k.startswith(drop)}
    out["logger"] = logging.getLogger("tosengine.kafka.librdkafka")
    return out


class KafkaSetupError(TosEngineError):
    """The cluster cannot be reached, or a topic is missing and cannot be made."""


def partition_count(producer: Producer, topic: str, timeout: float = 10.0) -> int | None:
    """The number of partitions of `topic`, or None if it does not exist (no auto-creation is asked)."""
    try:
        md = producer.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise KafkaSetupError(f"cannot read the cluster's metadata: {exc}") from None
    t = md.topics.get(topic)
    if t is None or t.error is not None or not t.partitions:
        return None
    return len(t.partitions)


def ensure_topics(
    config: dict[str, Any], input_topic: str, topics: list[str], timeout: float = 30.0, wait: float | None = None
) -> dict[str, int]:
    """Partition counts of the input topic and of `topics`, creating the missing ones (see the module
    docstring). The input topic is waited for (`wait` seconds; None: as long as it takes, saying so every
    30 s): workers may start before their producers. KafkaSetupError if it never comes, or if a
    repartition topic cannot be made within `timeout`."""
    producer = Producer({**client_config(config, "producer"), "allow.auto.create.topics": True})
    try:
        started = said = time.monotonic()
        count = partition_count(producer, input_topic)
        while count is None and (wait is None or time.monotonic() - started < wait):
            if time.monotonic() - said >= 30:
                said = time.monotonic()
                LOG.warning("waiting for the input topic %s to exist", input_topic, extra={"topic": input_topic})
            time.sleep(0.5)
            count = partition_count(producer, input_topic)
        if count is None:
            raise KafkaSetupError(f"the input topic {input_topic!r} does not exist")
        deadline = time.monotonic() + timeout
        counts = {input_topic: count}
        missing = [t for t in topics if partition_count(producer, t) is None]
        if missing:
            _create(config, missing, count)
        for t in topics:
            n = partition_count(producer, t)
            while n is None and time.monotonic() < deadline:
                producer.list_topics(topic=t, timeout=5)  # a metadata request that auto-creates it
                time.sleep(0.2)
                n = partition_count(producer, t)
            if n is None:
                raise KafkaSetupError(f"the repartition topic {t!r} is missing and could not be created")
            if n != count:
                LOG.warning(
                    "repartition topic %s has %d partitions, the input %d: used as it is",
                    t,
                    n,
                    count,
                    extra={"topic": t, "partitions": n, "input_partitions": count},
                )
            counts[t] = n
        return counts
    finally:
        producer.flush(5)


def _create(config: dict[str, Any], topics: list[str], partitions: int) -> None:
    """CreateTopics with the input's partition count; a failure is logged (auto-creation follows)."""
    admin = AdminClient(client_config(config, "admin"))
    futures = admin.create_topics([NewTopic(t, partitions, -1) for t in topics], operation_timeout=5, request_timeout=5)
    for topic, future in futures.items():
        try:
            future.result(timeout=10)
            LOG.info("created repartition topic %s with %d partitions", topic, partitions, extra={"topic": topic})
        except Exception as exc:  # the mock cluster: "Failed while waiting for controller"; already exists
            LOG.info(
                "CreateTopics for %s failed (%s): falling back to auto-creation", topic, exc, extra={"topic": topic}
            )
