"""Kafka workers as separate processes on librdkafka's mock cluster, writing to PostgreSQL.

Three workers share the group: one is killed with SIGKILL mid-stream, one joins late, one is paused with
SIGSTOP past its session timeout and resumed (a zombie, fenced out of the partitions it lost). Once an
event at the end time has reached every input partition, the audit log holds exactly the violations of
`replay --dry-run` on the same events, none twice, and `audit verify` passes (on a timeout it names the
violations missing). A worker given back a partition it had been fenced out of (and so paused) reads it
again. A test against a real broker runs when TOSENGINE_KAFKA_BOOTSTRAP is set.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from tests.kafka_cluster import (
    ROOT,
    WorkerProcess,
    describe,
    distinct_times,
    dry_run,
    end_event,
    mock_cluster,
    produce,
    scalar,
    violation_ids,
    wait_for,
)
from tests.support import pg_schema, policy_set, verify
from tests.test_kafka_offsets import POLICY
from tosengine.kafka import worker as worker_module
from tosengine.kafka.clients import connect, prepare_topics
from tosengine.kafka.records import Record
from tosengine.kafka.topology import HOME
from tosengine.kafka.worker import Worker, WorkerSettings

SEED = ROOT / "examples" / "seed-cases.jsonl"
REAL = os.environ.get("TOSENGINE_KAFKA_BOOTSTRAP")


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    with mock_cluster() as bootstrap:
        yield bootstrap


@pytest.fixture(scope="module")
def stream() -> tuple[list[str], str, dict[str, dict[str, Any]]]:
    """The seed cases with distinct times, an end event, and the dry run's violations over both (by id)."""
    lines = distinct_times(SEED.read_text(encoding="utf-8").splitlines())
    end = end_event(lines)
    return lines, end, dry_run([*lines, end])


_EVENT = '{"id":"e1","type":"bad","time":"2026-01-01T00:00:00Z","subject":"account:1","source":"s"}'


def _names() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"in-{tag}", f"g-{tag}"


def _settled(db: str, expected: dict[str, dict[str, Any]]) -> bool:
    return sorted(violation_ids(db)) == sorted(expected)


def test_killed_late_and_zombie_workers_write_exactly_the_dry_run(
    cluster: str, stream: tuple[list[str], str, dict[str, dict[str, Any]]], tmp_path: Path
) -> None:
    lines, end, expected = stream
    topic, group = _names()
    chunks = [lines[i::1][k * len(lines) // 6 : (k + 1) * len(lines) // 6] for i in (0,) for k in range(6)]
    with pg_schema() as db:
        produce(cluster, topic, chunks[0], binary=True)  # makes the topic; binary mode on the way
        w1 = WorkerProcess(cluster, topic, group, db, tmp_path / "w1.log")
        w2 = WorkerProcess(cluster, topic, group, db, tmp_path / "w2.log")
        workers = [w1, w2]
        try:
            produce(cluster, topic, chunks[1])
            wait_for(lambda: (scalar(db, "SELECT count(*) FROM events") or 0) >= len(chunks[0]) // 2, 120, "progress")
            w1.signal(signal.SIGKILL)  # mid-stream: its partitions move after its session times out
            produce(cluster, topic, chunks[2])
            w3 = WorkerProcess(cluster, topic, group, db, tmp_path / "w3.log")  # joins late
            workers.append(w3)
            produce(cluster, topic, chunks[3])
            wait_for(lambda: any(line.get("message") == "assigned" for line in w3.lines()), 120, "w3's assignment")
            w2.signal(signal.SIGSTOP)  # past its 6 s session timeout: its partitions go to w3
            produce(cluster, topic, chunks[4])
            time.sleep(12)
            w2.signal(signal.SIGCONT)  # a zombie now, until it notices
            produce(cluster, topic, chunks[5])
            produce(cluster, topic, [end], every_partition=True)
            try:
                wait_for(lambda: _settled(db, expected), 240, "the audit log to hold the dry run's violations")
            except AssertionError as exc:
                got = violation_ids(db)
                missing, extra = set(expected) - set(got), set(got) - set(expected)
                events = scalar(db, "SELECT count(*) FROM events")
                named = "".join(f"\n  missing: {describe(expected[i])}" for i in sorted(missing))
                raise AssertionError(
                    f"{exc}: {len(missing)} of {len(expected)} missing, {len(extra)} extra, "
                    f"{events} of {len(lines) + 1} events recorded; the workers' logs are in {tmp_path}{named}"
                ) from None
            time.sleep(2)  # anything late would show now
            for w in (w2, w3):
                w.signal(signal.SIGTERM)
            assert w2.wait() == 0 and w3.wait() == 0
        finally:
            for w in workers:
                if w.proc.poll() is None:
                    w.signal(signal.SIGCONT)
                    w.signal(signal.SIGKILL)
                    w.wait()
        ids = violation_ids(db)
        assert len(ids) == len(set(ids)), "a violation recorded twice"
        assert sorted(ids) == sorted(expected)
        assert verify(db).ok
        assert scalar(db, "SELECT count(*) FROM events") == len(lines) + 1
        # The paused worker learns it lost its partitions from the group ("lost") or from the database, when
        # a write for them is refused by the owner epoch ("fenced: another worker owns it now").
        zombie = [m for line in w2.lines() if (m := str(line.get("message", ""))) == "lost" or m.startswith("fenced:")]
        assert zombie, "w2 never noticed it had lost its partitions"


def test_a_partition_a_worker_was_fenced_out_of_is_read_when_it_is_assigned_again(cluster: str) -> None:
    # The zombie pauses a partition it finds fenced; when it then loses it and the group gives it back
    # (one worker ends up owning everything), it must read it: librdkafka keeps an application's pause
    # across unassign and assign, and a partition owned but never read holds every frontier downstream.
    topic, group = _names()
    produce(cluster, topic, [_EVENT])  # makes the input topic
    with pg_schema() as db:
        worker = Worker(policy_set(POLICY), WorkerSettings(cluster, topic, group, db))
        try:
            worker._stages = prepare_topics(worker.settings, worker.topology)
            worker.producer, worker.consumer = connect(worker.settings)
            home = worker.topology.topic(HOME)
            tp = TopicPartition(home, 0)

            def send_and_read(what: str) -> list[int]:
                mark = Record.watermark("in/0", (1, 0))
                worker.producer.produce(home, value=mark.value, partition=0, headers=mark.headers())
                assert worker.producer.flush(30) == 0
                _, high = worker.consumer.get_watermark_offsets(tp, timeout=30)
                offsets: list[int] = []

                def read() -> bool:
                    for msg in worker.consumer.consume(100, 0.2):
                        if msg.error() is None:
                            offsets.append(msg.offset() or 0)
                        worker._dispatch(msg)
                    return worker.owned[(home, 0)].part.next_offset == high

                wait_for(read, 15, f"the worker to read {home}/0 {what}", every=0)
                return offsets

            worker._on_assign(worker.consumer, [tp])
            assert send_and_read("once assigned") == [0]
            worker._fenced(worker.owned[(home, 0)].part.name)  # another worker claimed it: paused, dropped
            worker._on_lost(worker.consumer, [tp])
            worker.consumer.incremental_unassign([tp])
            worker.consumer.consume(10, 1.0)  # the unassignment done
            worker._on_assign(worker.consumer, [TopicPartition(home, 0)])  # and the group gives it back
            # From where its claim says (nothing was written: the start), not from where it had paused.
            assert send_and_read("once assigned again") == [0, 1]
        finally:
            worker.consumer.close()
            worker.audit.engine.dispose()
            worker.program.close()


class _CannotLeave:
    """A worker's consumer whose close() leaves the group, then reports what librdkafka reported once in
    CI when a rebalance was under way as the worker stopped."""

    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)

    def close(self) -> None:
        self._consumer.close()
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "Failed to get committed offsets: Local: Timed out"))


def test_a_worker_that_cannot_leave_the_group_cleanly_still_stops_with_everything_written(
    cluster: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Its offsets are in the audit log with what it wrote: leaving the group is a courtesy to the group,
    # so a failure there is a warning, and the worker still flushes, releases the log and returns.
    topic, group = _names()
    lines = [_EVENT]
    produce(cluster, topic, lines)
    produce(cluster, topic, [end_event(lines)], every_partition=True)
    real = connect  # the function the worker module imported

    def connect_cannot_leave(settings: WorkerSettings) -> tuple[Producer, Any]:
        producer, consumer = real(settings)
        return producer, _CannotLeave(consumer)

    monkeypatch.setattr(worker_module, "connect", connect_cannot_leave)
    with pg_schema() as db:
        worker = Worker(policy_set(POLICY), WorkerSettings(cluster, topic, group, db))
        failed: list[BaseException] = []

        def run() -> None:
            try:
                worker.run()
            except BaseException as exc:  # the test's verdict, below
                failed.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        try:
            wait_for(lambda: (scalar(db, "SELECT count(*) FROM events") or 0) == 2, 120, "both events written")
        finally:
            worker.stop()
            thread.join(120)
        assert not thread.is_alive() and failed == []
        assert any("could not leave the group cleanly" in r.getMessage() for r in caplog.records)
        assert scalar(db, "SELECT count(*) FROM events") == 2


@pytest.mark.skipif(not REAL, reason="a real Kafka broker is tested when TOSENGINE_KAFKA_BOOTSTRAP is set")
def test_two_workers_on_a_real_broker_write_exactly_the_dry_run(
    stream: tuple[list[str], str, dict[str, dict[str, Any]]], tmp_path: Path
) -> None:
    assert REAL is not None
    lines, end, expected = stream
    topic, group = _names()
    with pg_schema() as db:
        produce(REAL, topic, lines)
        workers = [WorkerProcess(REAL, topic, group, db, tmp_path / f"w{i}.log") for i in range(2)]
        try:
            produce(REAL, topic, [end], every_partition=True)
            wait_for(lambda: _settled(db, expected), 300, "the audit log to hold the dry run's violations")
            for w in workers:
                w.signal(signal.SIGTERM)
            assert all(w.wait() == 0 for w in workers)
        finally:
            for w in workers:
                if w.proc.poll() is None:
                    w.signal(signal.SIGKILL)
                    w.wait()
        assert sorted(violation_ids(db)) == sorted(expected)
        assert verify(db).ok
