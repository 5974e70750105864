"""Throughput of Kafka workers: events/s with 1 and 2 workers on librdkafka's mock cluster, as a ratio to
`tosengine replay` into PostgreSQL in the same run.

    python -m bench kafka --events 30000

One stream (examples/generate.py: benign traffic with the seed cases, times made distinct, an end event
on every input partition) goes through the default pack three ways, each into a fresh PostgreSQL schema
(TOSENGINE_BENCH_PG or TOSENGINE_TEST_DATABASE_URL):

  replay      `tosengine replay FILE --db URL` as a subprocess (start-up included);
  1 worker    `tosengine worker` processes on a 4-partition input topic: the workers are started first and
  2 workers   wait in the group with their partitions claimed, then the stream is produced and the clock
              runs until the audit log holds every event and exactly the dry run's violations.

A number is reported only if the audit log then holds the dry run's violations. The workers, the mock
cluster, PostgreSQL and the producer share the machine's cores. The mock cluster keeps at most 5 MB a
partition (older records are deleted, and a worker would miss them), so keep --events at about 30,000.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from sqlalchemy import create_engine, text

from bench.common import ROOT, generate, pg_schema
from tosengine import Engine
from tosengine.events import parse_time
from tosengine.policy.check import check_policy_set
from tosengine.policy.sources import read_schemas, read_sources

PARTITIONS = 4
_HAS_OFFSETS = (
    "SELECT count(*) FROM information_schema.tables "
    "WHERE table_name = 'kafka_offsets' AND table_schema = current_schema()"
)
_MOCK = """
import sys
from confluent_kafka.admin import AdminClient
admin = AdminClient({"test.mock.num.brokers": 3, "log_level": 3})
print(",".join(f"{b.host}:{b.port}" for b in admin.list_topics(timeout=30).brokers.values()), flush=True)
sys.stdin.read()
"""


@contextmanager
def _mock_cluster() -> Iterator[str]:
    proc = subprocess.Popen([sys.executable, "-c", _MOCK], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)


def _count(url: str, sql: str) -> int:
    eng = create_engine(url)
    try:
        with eng.connect() as c:
            return int(c.execute(text(sql)).scalar() or 0)
    finally:
        eng.dispose()


def _stream(events: int) -> list[str]:
    """The generated stream, times made distinct, with a first event that makes the topic."""
    out, last = [], None
    for line in generate(events, abuse_rate=0.01):
        e = json.loads(line)
        t = parse_time(e["time"])
        if last is not None and t <= last:
            t = last + timedelta(microseconds=1)
        last = t
        e["time"] = t.isoformat().replace("+00:00", "Z")
        out.append(json.dumps(e, separators=(",", ":")))
    return out


def _produce(bootstrap: str, topic: str, lines: list[str], every_partition: bool = False) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True})
    for line in lines:
        key = json.loads(line)["subject"].encode()
        for p in range(PARTITIONS) if every_partition else [None]:
            while True:
                try:
                    if p is None:
                        producer.produce(topic, value=line.encode(), key=key)
                    else:
                        producer.produce(topic, value=line.encode(), key=key, partition=p)
                    break
                except BufferError:
                    producer.poll(0.05)
    producer.flush(120)


def _workers(n: int, bootstrap: str, lines: list[str], first: str, end: str, expected: set[str], base: str) -> float:
    """Events/s of `n` workers over the stream, once they wait in the group with their partitions."""
    tag = uuid.uuid4().hex[:8]
    topic, group = f"bench-{tag}", f"bench-{tag}"
    _produce(bootstrap, topic, [first], every_partition=True)
    with pg_schema(base) as db, tempfile.TemporaryDirectory() as tmp:
        procs = []
        command = [sys.executable, "-m", "tosengine", "worker", "--bootstrap-servers", bootstrap, "--topic", topic]
        command += ["--group", group, "--db", db, "--idle-timeout", "0"]
        for i in range(n):
            log = open(Path(tmp) / f"w{i}.log", "w")  # noqa: SIM115
            procs.append(
                subprocess.Popen(
                    command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=ROOT,
                )
            )
        try:
            stages = 7 * PARTITIONS  # the default pack's stages, each on a topic of 4 partitions
            deadline = time.monotonic() + 300
            while not (
                _count(db, _HAS_OFFSETS)
                and _count(db, "SELECT count(*) FROM kafka_offsets") >= stages
                and _count(db, "SELECT count(*) FROM events") >= 1
            ):
                if time.monotonic() > deadline:
                    raise SystemExit("the workers did not take their partitions within 300 s")
                time.sleep(0.5)
            time.sleep(5)  # let the group settle (the last rebalance of a joining worker)
            started = time.monotonic()
            _produce(bootstrap, topic, lines)
            _produce(bootstrap, topic, [end], every_partition=True)
            while _count(db, "SELECT count(*) FROM events") < len(lines) + 2 or _count(
                db, "SELECT count(*) FROM violations"
            ) < len(expected):
                if time.monotonic() > deadline + 900:
                    raise SystemExit("the workers did not finish within 15 minutes")
                time.sleep(0.2)
            elapsed = time.monotonic() - started
            eng = create_engine(db)
            with eng.connect() as c:
                got = [str(r[0]) for r in c.execute(text("SELECT id FROM violations"))]
            eng.dispose()
            if sorted(got) != sorted(expected):
                raise SystemExit(f"{n} worker(s) wrote other violations than the dry run ({len(got)}, {len(expected)})")
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait(60)
    return len(lines) / elapsed


def _replay(lines: list[str], first: str, end: str, base: str) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        f.write("\n".join([first, *lines, end]) + "\n")
    try:
        with pg_schema(base) as db:
            started = time.monotonic()
            subprocess.run(
                [sys.executable, "-m", "tosengine", "replay", f.name, "--db", db, "--summary"],
                check=True,
                capture_output=True,
                cwd=ROOT,
            )
            return len(lines) / (time.monotonic() - started)
    finally:
        os.unlink(f.name)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table (and one JSON line, for the record)."""
    p = argparse.ArgumentParser(prog="python -m bench kafka", description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=30_000, help="benign events to generate (plus the seed cases)")
    args = p.parse_args(argv)
    base = os.environ.get("TOSENGINE_BENCH_PG") or os.environ.get("TOSENGINE_TEST_DATABASE_URL")
    if not base:
        print("python -m bench kafka needs PostgreSQL: set TOSENGINE_BENCH_PG or TOSENGINE_TEST_DATABASE_URL")
        return 2
    lines = _stream(args.events)
    t0 = parse_time(json.loads(lines[0])["time"]) - timedelta(seconds=1)
    t1 = parse_time(json.loads(lines[-1])["time"]) + timedelta(seconds=1)
    first = json.dumps({"id": "bench-start", "type": "bench.start", "time": t0.isoformat(), "subject": "bench:0"})
    end = json.dumps({"id": "bench-end", "type": "bench.end", "time": t1.isoformat(), "subject": "bench:0"})
    policies = check_policy_set(read_sources(ROOT / "policies"), read_schemas(ROOT / "policies"))
    with Engine(policies) as engine:
        expected = {v.id for v in engine.process_many([first, *lines, end])}
    replay = _replay(lines, first, end, base)
    with _mock_cluster() as bootstrap:
        one = _workers(1, bootstrap, lines, first, end, expected, base)
        two = _workers(2, bootstrap, lines, first, end, expected, base)
    rows = [("replay into PostgreSQL", replay), ("1 worker", one), ("2 workers", two)]
    print(f"{len(lines)} events, {len(expected)} violations, {PARTITIONS} input partitions, {os.cpu_count()} cores")
    print(f"{'':24} {'events/s':>10} {'x replay':>9}")
    for name, eps in rows:
        print(f"{name:24} {eps:10.0f} {eps / replay:9.2f}")
    print(json.dumps({"events": len(lines), "replay_pg": replay, "workers_1": one, "workers_2": two}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
