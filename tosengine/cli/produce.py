"""`tosengine produce FILE --topic T`: a JSON Lines file of events -> records of a Kafka topic (demos, tests)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from tosengine.cli.common import EXIT_FINDINGS, EXIT_OK, Command
from tosengine.cli.worker import kafka_arguments, kafka_config

__all__ = ["PRODUCE"]


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="a JSON Lines file of events, or - for stdin")
    p.add_argument("--topic", required=True, help="the topic to write to")
    kafka_arguments(p)
    p.add_argument(
        "--key",
        default="subject",
        metavar="ATTRIBUTE",
        help="the event attribute each record is keyed by (default: subject; `none` for no key)",
    )
    p.add_argument(
        "--every-partition",
        action="store_true",
        help="write each line to every partition of the topic (e.g. an event at the end time, to move every "
        "partition's watermark)",
    )
    p.add_argument(
        "--binary",
        action="store_true",
        help="CloudEvents binary mode: the attributes as ce_* headers, `data` as the value (JSON)",
    )


def _record(
    line: str, binary: bool
) -> tuple[bytes, list[tuple[str, str | bytes | None]] | None, dict[str, Any] | None]:
    """(value, headers, the decoded event if it is a JSON object) of one line."""
    try:
        event = json.loads(line)
    except ValueError:
        return line.encode("utf-8"), None, None  # sent as it is: the worker's dead letter records it
    if not isinstance(event, dict) or not binary:
        return line.encode("utf-8"), None, event if isinstance(event, dict) else None
    headers: list[tuple[str, str | bytes | None]] = [
        (f"ce_{k}", str(v).encode("utf-8")) for k, v in event.items() if k != "data"
    ]
    headers.append(("content-type", b"application/json"))
    value = json.dumps(event["data"]).encode("utf-8") if "data" in event else b""
    return value, headers, event


def _run(args: argparse.Namespace, out: TextIO) -> int:
    from confluent_kafka import KafkaError, Message, Producer

    from tosengine.kafka.topics import client_config

    config = client_config({"bootstrap.servers": args.bootstrap_servers, **kafka_config(args)}, "producer")
    producer = Producer({**config, "enable.idempotence": True})
    failed: list[str] = []

    def delivered(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            failed.append(str(err))

    partitions: list[int | None] = [None]
    if args.every_partition:
        md = producer.list_topics(args.topic, timeout=30)
        partitions = sorted(md.topics[args.topic].partitions)
    stream = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")  # noqa: SIM115
    n = 0
    with stream:
        for line in stream:
            line = line.strip()
            if not line:
                continue
            value, headers, event = _record(line, args.binary)
            key = event.get(args.key) if event is not None and args.key != "none" else None
            for p in partitions:
                extra: dict[str, Any] = {} if p is None else {"partition": p}
                while True:
                    try:
                        producer.produce(
                            args.topic,
                            value=value,
                            key=str(key).encode("utf-8") if key is not None else None,
                            headers=headers,
                            on_delivery=delivered,
                            **extra,
                        )
                        break
                    except BufferError:
                        producer.poll(0.1)
                n += 1
            producer.poll(0)
    producer.flush(60)
    if failed:
        print(f"tosengine produce: {len(failed)} record(s) not delivered: {failed[0]}", file=sys.stderr)
        return EXIT_FINDINGS
    print(f"{n} record(s) written to {args.topic}", file=sys.stderr)
    return EXIT_OK


PRODUCE = Command(
    "produce",
    "load a JSON Lines file into a Kafka topic",
    _arguments,
    _run,
    "Write each line of FILE (events as JSON) as one record of TOPIC, keyed by an attribute (the subject by "
    "default), in structured mode or, with --binary, in CloudEvents binary mode. For demos and tests.",
)
