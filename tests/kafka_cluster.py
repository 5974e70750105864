"""Test helpers for Kafka: librdkafka's mock cluster in a helper process, worker processes, streams.

The mock cluster ships inside the confluent-kafka wheel: a client configured with `test.mock.num.brokers`
starts one in its own process, and its brokers' addresses (read from the cluster's metadata) are the
bootstrap servers other processes connect to. It speaks the real protocol (consumer groups, cooperative
rebalances, session timeouts, offsets with metadata) but not CreateTopics: topics are created with 4
partitions on first use.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

import psycopg
from sqlalchemy import create_engine, text
from sqlalchemy.exc import ProgrammingError

from tosengine.events import parse_time

ROOT = Path(__file__).resolve().parents[1]

_MOCK = """
import sys
from confluent_kafka.admin import AdminClient
admin = AdminClient({"test.mock.num.brokers": 3, "log_level": 3})
md = admin.list_topics(timeout=30)
print(",".join(f"{b.host}:{b.port}" for b in md.brokers.values()), flush=True)
sys.stdin.read()  # lives until the test closes its stdin
"""


@contextmanager
def mock_cluster() -> Iterator[str]:
    """A mock Kafka cluster of 3 brokers in a helper process; yields its bootstrap servers."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _MOCK],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        bootstrap = proc.stdout.readline().strip()
        assert bootstrap, "the mock cluster did not start"
        yield bootstrap
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def distinct_times(lines: list[str]) -> list[str]:
    """Events sorted by time with each time made distinct (ties pushed on by microseconds, in order)."""
    out: list[str] = []
    last = None
    for line in lines:
        event = json.loads(line)
        t = parse_time(event["time"])
        if last is not None and t <= last:
            t = last + timedelta(microseconds=1)
        last = t
        event["time"] = t.isoformat().replace("+00:00", "Z")
        out.append(json.dumps(event, separators=(",", ":")))
    return out


def end_event(lines: list[str], ident: str = "end") -> str:
    """An event one second after the last of `lines`, of a type no rule reads."""
    last = max(parse_time(json.loads(line)["time"]) for line in lines)
    when = (last + timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    return json.dumps({"id": ident, "type": "test.end", "time": when, "subject": "test:end", "source": "test"})


def produce(
    bootstrap: str, topic: str, lines: list[str], *, every_partition: bool = False, binary: bool = False
) -> None:
    """Write lines to a topic with `tosengine produce` (keyed by subject)."""
    path = ROOT / ".pytest_cache" / f"produce-{os.getpid()}-{time.monotonic_ns()}.jsonl"
    path.parent.mkdir(exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    args = [sys.executable, "-m", "tosengine", "produce", str(path), "--topic", topic, "--bootstrap-servers", bootstrap]
    if every_partition:
        args.append("--every-partition")
    if binary:
        args.append("--binary")
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert p.returncode == 0, p.stderr
    finally:
        path.unlink(missing_ok=True)


class WorkerProcess:
    """`tosengine worker` in a subprocess, its JSON log lines in a file."""

    def __init__(self, bootstrap: str, topic: str, group: str, db: str, log: Path, *extra: str) -> None:
        self.log = log
        self._out: IO[str] = open(log, "w", encoding="utf-8")  # noqa: SIM115 (closed in wait)
        args = [
            sys.executable,
            "-m",
            "tosengine",
            "worker",
            "--bootstrap-servers",
            bootstrap,
            "--topic",
            topic,
            "--group",
            group,
            "--db",
            db,
            "--commit-interval",
            "0.3",
            "--idle-timeout",
            "0",
            "--kafka-config",
            "session.timeout.ms=6000",
            "--kafka-config",
            "heartbeat.interval.ms=500",
            *extra,
        ]
        self.proc = subprocess.Popen(args, stdout=self._out, stderr=subprocess.STDOUT, cwd=ROOT)

    def signal(self, sig: signal.Signals) -> None:
        """Send a signal (SIGKILL, SIGSTOP, SIGCONT, SIGTERM)."""
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60) -> int:
        """Wait for the process to end; its exit status."""
        try:
            return self.proc.wait(timeout)
        finally:
            self._out.close()

    def lines(self) -> list[dict[str, Any]]:
        """Its log, parsed (lines that are not JSON are kept as {"text": ...})."""
        out = []
        for line in self.log.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"text": line})
        return out


def wait_for(condition: Callable[[], bool], timeout: float, what: str, every: float = 0.5) -> None:
    """Poll `condition` until it holds; fail after `timeout` seconds naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def scalar(url: str, sql: str) -> Any:
    """One value from the audit database; None while no worker has created its tables yet (the workers
    migrate the new database when they start, which may be after the test begins to poll)."""
    eng = create_engine(url)
    try:
        with eng.connect() as c:
            return c.execute(text(sql)).scalar()
    except ProgrammingError as exc:
        if isinstance(exc.orig, psycopg.errors.UndefinedTable):
            return None
        raise
    finally:
        eng.dispose()


def violation_ids(url: str) -> list[str]:
    """Every violation id the audit log holds (with repeats, if a row were duplicated)."""
    eng = create_engine(url)
    try:
        with eng.connect() as c:
            return [str(r[0]) for r in c.execute(text("SELECT id FROM violations ORDER BY seq"))]
    finally:
        eng.dispose()


def dry_run_ids(lines: list[str], policies: str = "policies") -> list[str]:
    """The violation ids `tosengine replay --dry-run --format json` gives for these events."""
    return list(dry_run(lines, policies))


def dry_run(lines: list[str], policies: str = "policies") -> dict[str, dict[str, Any]]:
    """The violations `tosengine replay --dry-run --format json` gives for these events, by id (repeat
    records left out), in the order it prints them."""
    path = ROOT / ".pytest_cache" / f"dry-{os.getpid()}-{time.monotonic_ns()}.jsonl"
    path.parent.mkdir(exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        p = subprocess.run(
            [
                sys.executable,
                "-m",
                "tosengine",
                "replay",
                str(path),
                "--policies",
                policies,
                "--dry-run",
                "--format",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
        )
    finally:
        path.unlink(missing_ok=True)
    assert p.returncode == 0, p.stderr
    return {d["id"]: d for d in map(json.loads, p.stdout.splitlines()) if "repeat_of" not in d}


def describe(violation: dict[str, Any]) -> str:
    """One violation of `dry_run` in a line: rule, subject, time, ladder step, evidence and causes."""
    return (
        f"{violation.get('rule')} against {violation.get('subject')} at {violation.get('time')} "
        f"(id {violation.get('id')}, step {violation.get('ladder_step')}, evidence {violation.get('evidence')}, "
        f"causes {violation.get('causes')})"
    )


__all__ = [
    "ROOT",
    "WorkerProcess",
    "describe",
    "distinct_times",
    "dry_run",
    "dry_run_ids",
    "end_event",
    "mock_cluster",
    "produce",
    "scalar",
    "signal",
    "violation_ids",
    "wait_for",
]
