"""`tosengine worker`: run a Kafka consumer-group worker (tosengine/kafka/worker.py, docs/scale-out.md)."""

from __future__ import annotations

import argparse
import logging
import signal
from datetime import timedelta
from pathlib import Path
from typing import TextIO

from tosengine.cli.common import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE, Command, db_arg, db_url, load_policies, settle_heap
from tosengine.durations import parse_duration
from tosengine.errors import TosEngineError

__all__ = ["WORKER", "kafka_config"]

LOG = logging.getLogger("tosengine.kafka")


def _duration(text: str) -> timedelta:
    d = parse_duration(text, compound=True)
    if d is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 30s, 10m, 1h30m, 1d)")
    return d


def kafka_arguments(p: argparse.ArgumentParser) -> None:
    """The options every Kafka command shares: the cluster and any librdkafka setting."""
    p.add_argument(
        "--bootstrap-servers", required=True, metavar="HOSTS", help="Kafka bootstrap servers (host:port,...)"
    )
    p.add_argument(
        "--kafka-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any librdkafka setting, e.g. security.protocol=SASL_SSL (repeatable)",
    )
    p.add_argument("--kafka-config-file", metavar="FILE", help="librdkafka settings, one KEY=VALUE a line (# comments)")


def kafka_config(args: argparse.Namespace) -> dict[str, str]:
    """The librdkafka settings given by --kafka-config-file, then --kafka-config (later ones win)."""
    lines: list[str] = []
    if args.kafka_config_file:
        lines += Path(args.kafka_config_file).read_text(encoding="utf-8").splitlines()
    lines += args.kafka_config
    out: dict[str, str] = {}
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise TosEngineError(f"not a KEY=VALUE librdkafka setting: {line!r}")
        out[key.strip()] = value.strip()
    return out


def _arguments(p: argparse.ArgumentParser) -> None:
    kafka_arguments(p)
    p.add_argument("--topic", required=True, help="the input topic (CloudEvents, structured or binary mode)")
    p.add_argument("--group", required=True, help="the consumer group; also names the repartition topics")
    p.add_argument("--policies", default=None, help="policy directory (default: $TOSENGINE_POLICIES or ./policies)")
    db_arg(p)
    p.add_argument(
        "--commit-interval", type=float, default=1.0, metavar="SECONDS", help="how often owned partitions are written"
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="an input partition read to its end for this long stops holding the watermark back (0: never)",
    )
    p.add_argument(
        "--lateness",
        type=_duration,
        default=timedelta(0),
        metavar="DURATION",
        help="event time to wait for late events",
    )
    p.add_argument(
        "--max-skew",
        type=_duration,
        default=timedelta(days=1),
        metavar="DURATION",
        help="how far (event time) an input partition may be read ahead of the slowest one",
    )
    p.add_argument("--metrics-port", type=int, default=None, metavar="PORT", help="serve Prometheus /metrics here")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))


def _run(args: argparse.Namespace, out: TextIO) -> int:
    # Imported here: the other commands do not load Kafka.
    from prometheus_client import start_http_server

    from tosengine.kafka.metrics import WorkerMetrics
    from tosengine.kafka.worker import Worker, WorkerSettings
    from tosengine.serve.logs import configure_logging

    configure_logging(getattr(logging, args.log_level.upper()))
    policies = load_policies(args.policies)
    if policies is None:
        return EXIT_USAGE
    settings = WorkerSettings(
        bootstrap_servers=args.bootstrap_servers,
        topic=args.topic,
        group=args.group,
        db=db_url(args.db),
        kafka=kafka_config(args),
        commit_interval=args.commit_interval,
        idle_timeout=args.idle_timeout,
        lateness=args.lateness,
        max_skew=args.max_skew,
    )
    metrics = WorkerMetrics()
    worker = Worker(policies, settings, metrics)
    if args.metrics_port is not None:
        start_http_server(args.metrics_port, registry=metrics.registry)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop())
    settle_heap()
    try:
        worker.run()
    except TosEngineError:
        raise  # the command's usual message and exit status
    except Exception:  # e.g. a record Kafka would not take: what was written stays; a restart redoes the rest
        LOG.exception("worker failed")
        return EXIT_FINDINGS
    return EXIT_OK


WORKER = Command(
    "worker",
    "run a Kafka consumer-group worker",
    _arguments,
    _run,
    "Join the consumer group GROUP and process the CloudEvents of TOPIC with the policies, writing violations "
    "to the audit log (use PostgreSQL when several workers share it). Each key expression the policies use "
    "gets a repartition topic named from GROUP; a worker routes the input partitions it owns and runs the "
    "partitions of those topics it owns, in event-time order, writing each partition's violations, state "
    "and next offset in one transaction. SIGTERM finishes the batch, writes, leaves the group and exits 0. "
    "See docs/scale-out.md.",
)
