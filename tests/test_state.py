"""State that outlives the process: checkpoints, resume, durable returns, changed policies, crashes.

A stream replayed in parts, by separate processes, into one audit log must give exactly the violations
of one dry run; a process killed anywhere and run again must leave exactly those rows, none twice; a
violation `process()` returned must be in the log even if the process dies at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine as SQLAlchemyEngine
from sqlalchemy import create_engine, event, func, select, text, update

from tests.support import ev, policy_set, verify
from tosengine import Engine
from tosengine.audit.models import Checkpoint, RepeatRow, StateChange, ViolationRow
from tosengine.errors import AuditError
from tosengine.runtime.snapshot import StateFormatError, unpack

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "examples" / "seed-cases.jsonl"


def _tosengine(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tosengine", *args], capture_output=True, text=True, timeout=600, cwd=ROOT
    )


def _ids(out: str) -> list[str]:
    """The ids of the violations and repeat records `replay --format json` printed."""
    return [json.loads(line)["id"] for line in out.splitlines() if line.startswith("{")]


def _stored(url: str) -> list[str]:
    """The ids of the violations and repeat records the audit log holds."""
    eng = create_engine(url)
    try:
        with eng.connect() as c:
            return [str(r[0]) for r in c.execute(select(ViolationRow.id).order_by(ViolationRow.seq))] + [
                str(r[0]) for r in c.execute(select(RepeatRow.id).order_by(RepeatRow.seq))
            ]
    finally:
        eng.dispose()


@pytest.fixture(scope="module")
def dry_run_ids() -> list[str]:
    p = _tosengine("replay", str(SEED), "--policies", "policies", "--dry-run", "--format", "json")
    assert p.returncode == 0, p.stderr
    return _ids(p.stdout)


@pytest.fixture(scope="module")
def big_stream(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A generated stream long enough that a replay of a quarter of it takes a while, and its dry run."""
    path = tmp_path_factory.mktemp("big") / "stream.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        subprocess.run(
            [
                sys.executable,
                "examples/generate.py",
                "--events",
                "40000",
                "--accounts",
                "4000",
                "--days",
                "20",
                "--seed",
                "11",
                "--abuse-rate",
                "0.02",
            ],
            stdout=fh,
            check=True,
            cwd=ROOT,
        )
    p = _tosengine("replay", str(path), "--policies", "policies", "--dry-run", "--format", "json")
    assert p.returncode == 0, p.stderr
    return path, _ids(p.stdout)


def _parts(tmp_path: Path, n: int, stream: Path = SEED) -> list[Path]:
    lines = stream.read_text(encoding="utf-8").splitlines(keepends=True)
    size = -(-len(lines) // n)
    out = []
    for i in range(n):
        part = tmp_path / f"part{i + 1}.jsonl"
        part.write_text("".join(lines[i * size : (i + 1) * size]), encoding="utf-8")
        out.append(part)
    return out


def _replay(part: Path, url: str) -> subprocess.CompletedProcess[str]:
    return _tosengine("replay", str(part), "--policies", "policies", "--db", url, "--format", "json")


def test_four_files_in_four_processes_give_the_violations_of_one_run(
    tmp_path: Path, db_url: str, dry_run_ids: list[str]
) -> None:
    printed: list[str] = []
    for part in _parts(tmp_path, 4):
        p = _replay(part, db_url)
        assert p.returncode == 0, p.stderr
        printed += _ids(p.stdout)
    assert sorted(printed) == sorted(dry_run_ids)  # each violation printed once, by the run that found it
    stored = _stored(db_url)
    assert sorted(stored) == sorted(dry_run_ids) and len(set(stored)) == len(stored)
    assert verify(db_url).ok


def test_a_replay_counts_what_it_had_already_processed_apart_from_what_it_accepted(tmp_path: Path, db_url: str) -> None:
    parts = _parts(tmp_path, 4)
    counts = [len(part.read_text(encoding="utf-8").splitlines()) for part in parts[:2]]
    first = _replay(parts[0], db_url)
    assert f"\n{counts[0]} event(s) accepted, 0 rejected" in f"\n{first.stderr}"
    again = _replay(parts[0], db_url)  # read again, by mistake: nothing is new
    assert f"\n0 event(s) accepted, {counts[0]} already processed (not again), 0 rejected" in f"\n{again.stderr}"
    both = _tosengine(
        "replay", str(parts[0]), str(parts[1]), "--policies", "policies", "--db", db_url, "--format", "json"
    )
    assert f"\n{counts[1]} event(s) accepted, {counts[0]} already processed (not again)" in f"\n{both.stderr}"


def test_a_process_killed_in_the_third_file_and_run_again_adds_exactly_what_was_missing(
    tmp_path: Path, db_url: str, dry_run_ids: list[str]
) -> None:
    parts = _parts(tmp_path, 4)
    for part in parts[:2]:
        assert _replay(part, db_url).returncode == 0
    rng = random.Random(20261201)
    for attempt in range(3):  # killed at random points, then run again to the end
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tosengine",
                "replay",
                str(parts[2]),
                "--policies",
                "policies",
                "--db",
                db_url,
                "--format",
                "json",
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.8, 2.5) + attempt * 0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    for part in parts[2:]:
        assert _replay(part, db_url).returncode == 0
    stored = _stored(db_url)
    assert sorted(stored) == sorted(dry_run_ids) and len(set(stored)) == len(stored)
    assert verify(db_url).ok


LOOP = """
import os, sys, json
from tosengine import Engine
engine = Engine.from_directory("policies", audit=sys.argv[1], smoke_test=None)
for n, line in enumerate(open(sys.argv[2], encoding="utf-8")):
    for v in engine.process(line):
        print(v.id, flush=True)
        if sys.argv[3] == "die":
            os._exit(1)  # dies at once: no close(), no flush()
"""


def test_a_violation_process_returned_is_durable_when_the_process_dies_at_once(tmp_path: Path, db_url: str) -> None:
    p = subprocess.run(
        [sys.executable, "-c", LOOP, db_url, str(SEED), "die"], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    returned = p.stdout.split()
    assert p.returncode == 1 and len(returned) == 1, p.stderr
    assert returned[0] in _stored(db_url)


def test_a_process_loop_killed_anywhere_resumes_to_exactly_one_clean_run(
    tmp_path: Path, db_url: str, dry_run_ids: list[str]
) -> None:
    rng = random.Random(7)
    seen_returned: list[str] = []
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", LOOP, db_url, str(SEED), "run"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        time.sleep(rng.uniform(1.5, 4.0))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=60)
        seen_returned += out.split()
        assert set(seen_returned) <= set(_stored(db_url))  # everything process() returned was already durable
    p = subprocess.run(
        [sys.executable, "-c", LOOP, db_url, str(SEED), "run"], capture_output=True, text=True, timeout=900, cwd=ROOT
    )
    assert p.returncode == 0, p.stderr
    stored = _stored(db_url)
    assert sorted(stored) == sorted(dry_run_ids) and len(set(stored)) == len(stored)
    assert verify(db_url).ok


# ---------------------------------------------------------------- checkpoints


POLICY = """
policy: requests
clause: Answer our requests within a day.
severity: high
action: restrict
rules:
  - id: unanswered
    expect:
      after: event.type == "req"
      fulfilled_by: event.type == "resp"
      within: 1d
  - id: bursts
    threshold:
      match: event.type == "msg"
      count: 3
      within: 1h
"""


def _checkpoints(url: str) -> list[tuple[int, int, bytes]]:
    eng = create_engine(url)
    try:
        with eng.connect() as c:
            return [
                (int(r[0]), int(r[1]), bytes(r[2]))
                for r in c.execute(
                    select(Checkpoint.position, Checkpoint.size, Checkpoint.state).order_by(Checkpoint.seq)
                )
            ]
    finally:
        eng.dispose()


def test_the_checkpoint_is_versioned_json_holding_the_live_state(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cp.db'}"
    with Engine(policy_set(POLICY), audit=url) as engine:
        engine.process_many([ev("r1", "req", "account:1"), ev("m1", "msg", "account:2", timedelta(minutes=1))])
    position, _, blob = _checkpoints(url)[-1]  # the one close() wrote
    doc = unpack(blob)
    assert doc["format"] == "tosengine.state" and doc["version"] == 2 and position == 2
    assert sorted(r[1]["id"] for r in doc["records"]) == ["m1", "r1"]  # each event behind the state, once
    assert [e[0] for e in doc["state"]["stores"]["expect"]] == ["requests/unanswered"]
    assert [e[0] for e in doc["state"]["stores"]["threshold"]] == ["requests/bursts"]


def test_a_new_checkpoint_drops_only_its_own_partitions_older_ones(tmp_path: Path) -> None:
    """Only the latest checkpoint is ever read; the older ones went on growing the log by the state's
    size every `checkpoint_every` events. Another partition's checkpoint in the same log stays."""
    url = f"sqlite:///{tmp_path / 'pruned.db'}"
    with Engine(policy_set(POLICY), audit=url, partition="other") as other:
        other.process(ev("o1", "req", "account:9"))
    requests = [ev(f"r{i}", "req", f"account:{i}", timedelta(minutes=i)) for i in range(5)]
    with Engine(policy_set(POLICY), audit=url, checkpoint_every=2) as engine:
        for r in requests:
            engine.process(r)  # a checkpoint goes with every second commit
    eng = create_engine(url)
    try:
        with eng.connect() as c:
            kept = [(r[0], r[1]) for r in c.execute(select(Checkpoint.partition, Checkpoint.position))]
    finally:
        eng.dispose()
    assert kept == [("other", 1), ("", 6)]  # one each, the engine's covering its last event
    with Engine(policy_set(POLICY), audit=url) as engine:  # resumes from the one kept, with no tail
        assert engine.resumed_events == 0 and engine.state_size()["obligations"] == 5
        engine.process(ev("a0", "resp", "account:0", timedelta(hours=1)))
        lapsed = engine.process(ev("later", "msg", "account:7", timedelta(days=2)))
        assert sorted(v.subject for v in lapsed) == [f"account:{i}" for i in range(1, 5)]


def test_a_checkpoint_of_a_newer_format_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'newer.db'}"
    with Engine(policy_set(POLICY), audit=url) as engine:
        engine.process(ev("r1", "req", "account:1"))
    import zlib

    _, _, blob = _checkpoints(url)[-1]
    doc = json.loads(zlib.decompress(blob))
    doc["version"] = 99
    eng = create_engine(url)
    with eng.begin() as c:
        c.execute(update(Checkpoint).values(state=zlib.compress(json.dumps(doc).encode())))
    eng.dispose()
    with pytest.raises(StateFormatError, match="version 99, this tosengine reads versions 1 to 2; upgrade tosengine"):
        Engine(policy_set(POLICY), audit=url)


def _open_files(path: Path) -> list[str]:
    """The files of `path`'s database (itself, its -wal and -shm) this process holds open (Linux's /proc)."""
    fds = Path("/proc/self/fd")
    found = []
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):  # a descriptor closed while listing
            target = os.readlink(fd)
            if target.startswith(str(path)):
                found.append(target)
    return found


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux's /proc/self/fd to list open files")
def test_an_engine_that_cannot_resume_leaves_no_connection_to_its_log_open(tmp_path: Path) -> None:
    # A service retrying an engine whose checkpoint it cannot read must not pile up connections: the
    # audit log the engine opened from its URL is released, even while the caller keeps the exception
    # (whose traceback holds the half-made engine).
    db = tmp_path / "refused.db"
    url = f"sqlite:///{db}"
    with Engine(policy_set(POLICY), audit=url) as engine:
        engine.process(ev("r1", "req", "account:1"))
    eng = create_engine(url)
    with eng.begin() as c:
        c.execute(update(Checkpoint).values(state=b"not a checkpoint"))
    eng.dispose()
    assert _open_files(db) == []
    kept = []
    for _ in range(3):
        with pytest.raises(StateFormatError) as refused:
            Engine(policy_set(POLICY), audit=url)
        kept.append(refused.value)
        assert _open_files(db) == []
    # Nothing was written by the failed opens: the log is as the last good engine left it.
    assert len(_checkpoints(url)) == 1


def test_reading_an_input_again_asks_the_log_once_a_batch_through_its_index(db_url: str) -> None:
    # An input read again (after a crash, or by mistake) is mostly events older than the redelivery
    # window, which only the log remembers. Asked one event at a time, by id alone, each question read the
    # whole events index: 100,000 events read again took minutes. Now one question per batch, answered
    # through the (source, event_id) index, and still nothing is added.
    events = [
        ev(f"e{n}", "msg" if n % 5 else "req", f"account:{n % 40}", timedelta(minutes=15 * n)) for n in range(3000)
    ]  # 31 days
    with Engine(policy_set(POLICY), audit=db_url) as first:
        found = first.process_many(events)
    assert found  # the bursts and unanswered requests fire

    lookups: list[tuple[str, Any]] = []

    def seen(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM events" in statement:
            lookups.append((statement, parameters))

    with Engine(policy_set(POLICY), audit=db_url) as again:
        event.listen(SQLAlchemyEngine, "before_cursor_execute", seen)
        try:
            assert again.process_many(events) == []
        finally:
            event.remove(SQLAlchemyEngine, "before_cursor_execute", seen)
        assert again.stats["duplicates"] == len(events)
    assert 0 < len(lookups) <= -(-len(events) // 256)  # at most one per batch of the matcher's size
    assert all("source" in statement.split("WHERE", 1)[1] for statement, _ in lookups)
    if db_url.startswith("sqlite"):
        eng = create_engine(db_url)
        with eng.connect() as c:
            statement, parameters = lookups[0]
            plan = " ".join(str(r[-1]) for r in c.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters))
        eng.dispose()
        assert "SEARCH events USING COVERING INDEX" in plan and "(source=? AND event_id=?)" in plan, plan
    eng = create_engine(db_url)
    with eng.connect() as c:
        assert c.execute(select(func.count()).select_from(ViolationRow)).scalar_one() == len(found)
    eng.dispose()


def _as_format_1(doc: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint document as state format 1 wrote it: the redelivery memory as [identity, time, digest]."""
    memory = doc["state"]["redelivery"]
    at = [(datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=n)).isoformat() for n in memory["at"]]
    doc["state"]["redelivery"] = [list(e) for e in zip(memory["keys"], at, memory["crc"], strict=True)]
    doc["version"] = 1
    return doc


@pytest.mark.parametrize("version", [1, 2])
def test_the_redelivery_memory_survives_a_restart_in_either_state_format(tmp_path: Path, version: int) -> None:
    import zlib

    url = f"sqlite:///{tmp_path / f'v{version}.db'}"
    sent = [ev("m1", "msg", "account:2"), ev("m2", "msg", "account:2", timedelta(minutes=1))]
    with Engine(policy_set(POLICY), audit=url) as engine:
        engine.process_many(sent)
    if version == 1:  # the log was written by a tosengine of state format 1
        doc = _as_format_1(unpack(_checkpoints(url)[-1][2]))
        eng = create_engine(url)
        with eng.begin() as c:
            c.execute(update(Checkpoint).values(state=zlib.compress(json.dumps(doc).encode())))
        eng.dispose()
    with Engine(policy_set(POLICY), audit=url) as engine:
        assert engine.resumed_events == 0  # the memory comes from the checkpoint alone
        # Copies inside the window: dropped, or a third "msg" within the hour would be a burst.
        assert engine.process_many(sent) == []
        assert engine.stats["duplicates"] == 2
        changed = {**sent[0], "data": {"other": "body"}}  # a copy with another body: a conflict, not processed
        assert engine.process_many([changed]) == []
        assert engine.stats["conflicts"] == 1
        assert [v.rule for v in engine.process_many([ev("m3", "msg", "account:2", timedelta(minutes=2))])] == [
            "requests/bursts"
        ]


def _quiet_stream(n: int) -> list[dict[str, object]]:
    """n events over n minutes on many subjects, whose windows and deadlines keep expiring."""
    return [ev(f"q{i}", "msg" if i % 3 else "req", f"account:{i % 50}", timedelta(minutes=i)) for i in range(n)]


_DIES = """
import json, os, sys
from datetime import timedelta
from tests.support import policy_set
from tests.test_state import POLICY
from tosengine import Engine

url, checkpoint_every, dedupe_hours = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
engine = Engine(
    policy_set(POLICY), audit=url, checkpoint_every=checkpoint_every, dedupe_window=timedelta(hours=dedupe_hours)
)
for batch in json.load(sys.stdin):
    engine.process_many(batch)  # durable when it returns
os._exit(0)  # the process stops without close(): no last checkpoint, the partition let go by the system
"""


def _run_and_die(url: str, batches: list[list[dict[str, object]]], checkpoint_every: int, dedupe_hours: float) -> None:
    """Process `batches` in a process that then stops without closing its engine."""
    subprocess.run(
        [sys.executable, "-c", _DIES, url, str(checkpoint_every), str(dedupe_hours)],
        input=json.dumps(batches),
        text=True,
        check=True,
        timeout=600,
        cwd=ROOT,
    )


def test_checkpoints_follow_the_live_state_and_opening_replays_only_the_tail(tmp_path: Path) -> None:
    sizes = {}
    for n in (3_000, 30_000):
        url = f"sqlite:///{tmp_path / f'h{n}.db'}"
        # An hour of redelivery memory: the live state is the same whatever the length of the history.
        stream = _quiet_stream(n)
        # The last ten are durable, but too few events since the last checkpoint for another: the tail.
        _run_and_die(url, [stream[:-10], stream[-10:]], checkpoint_every=1_000, dedupe_hours=1)
        sizes[n] = _checkpoints(url)[-1][1]
        reopened = Engine(policy_set(POLICY), audit=url, checkpoint_every=1_000, dedupe_window=timedelta(hours=1))
        assert 0 < reopened.resumed_events <= 1_000  # the tail, not the history
        assert reopened.state_size()["obligations"] > 0
        reopened.close()
    assert sizes[30_000] < 1.5 * sizes[3_000], sizes  # ten times the history, about the same state


# ---------------------------------------------------------------- policies that changed in between


def _changed(policy: str, old: str, new: str) -> str:
    assert old in policy
    return policy.replace(old, new)


def test_resume_keeps_unchanged_rules_drops_changed_ones_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'changed.db'}"
    with Engine(policy_set(POLICY), audit=url) as engine:
        engine.process_many(
            [
                ev("r1", "req", "account:1"),
                ev("m1", "msg", "account:2"),
                ev("m2", "msg", "account:2", timedelta(minutes=1)),
            ]
        )
    # The threshold's window changes; the expect rule does not; a new rule appears.
    changed = _changed(POLICY, "within: 1h", "within: 2h") + textwrap.indent(
        textwrap.dedent("""\
        - id: late-answer
          match: event.type == "resp"
        """),
        "  ",
    )
    with caplog.at_level(logging.WARNING, logger="tosengine"):
        engine = Engine(policy_set(changed), audit=url)
    assert engine.dropped_rules == ("requests/bursts",)
    assert "requests/bursts" in caplog.text
    late = engine.process_many(
        [ev("m3", "msg", "account:2", timedelta(minutes=2)), ev("x1", "tick", "account:9", timedelta(days=2))]
    )
    engine.close()
    # The obligation survived (its lapse fires); the window did not (m3 alone is no burst).
    assert [(v.rule, v.evidence) for v in late] == [("requests/unanswered", ("r1",))]
    eng = create_engine(url)
    with eng.connect() as c:
        ((what, detail),) = c.execute(select(StateChange.what, StateChange.detail)).all()
    eng.dispose()
    assert what == "state-dropped" and json.loads(detail)["rules"] == ["requests/bursts"]


def test_the_cli_says_on_stderr_whose_state_was_dropped(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "requests.yaml").write_text(POLICY, encoding="utf-8")
    events = tmp_path / "a.jsonl"
    events.write_text(
        "\n".join(json.dumps(e) for e in [ev("r1", "req", "account:1"), ev("m1", "msg", "account:2")]), encoding="utf-8"
    )
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    assert _tosengine("replay", str(events), "--policies", str(policies), "--db", url).returncode == 0
    (policies / "requests.yaml").write_text(_changed(POLICY, "within: 1d", "within: 2d"), encoding="utf-8")
    p = _tosengine("replay", str(events), "--policies", str(policies), "--db", url)
    assert p.returncode == 0, p.stderr
    assert "the state of requests/unanswered was dropped" in p.stderr


def test_reload_keeps_the_state_of_unchanged_rules(tmp_path: Path) -> None:
    with Engine(policy_set(POLICY)) as engine:
        engine.process_many(
            [
                ev("r1", "req", "account:1"),
                ev("m1", "msg", "account:2"),
                ev("m2", "msg", "account:2", timedelta(minutes=1)),
            ]
        )
        engine.reload(policy_set(_changed(POLICY, "count: 3", "count: 4")))
        assert engine.dropped_rules == ("requests/bursts",)
        out = engine.process_many(
            [ev("m3", "msg", "account:2", timedelta(minutes=2)), ev("x1", "tick", "account:9", timedelta(days=2))]
        )
    assert [(v.rule, v.evidence) for v in out] == [("requests/unanswered", ("r1",))]


def test_a_rule_removed_in_between_is_reported_and_a_new_rule_starts_empty(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'removed.db'}"
    with Engine(policy_set(POLICY), audit=url) as engine:
        engine.process_many([ev("r1", "req", "account:1"), ev("m1", "msg", "account:2")])
    without_expect = POLICY[: POLICY.index("  - id: unanswered")] + POLICY[POLICY.index("  - id: bursts") :]
    with Engine(policy_set(without_expect), audit=url) as engine:
        assert engine.dropped_rules == ("requests/unanswered",)
        assert engine.state_size()["threshold_items"] == 1 and engine.state_size()["obligations"] == 0


def test_events_after_the_checkpoint_are_replayed_with_the_policies_that_first_saw_them(tmp_path: Path) -> None:
    """A process dies after writing events but before its next checkpoint; the policies change before
    the restart. The tail is replayed with the old policies (their texts are in the log), then the state
    carries over to the new ones as a reload does."""
    url = f"sqlite:///{tmp_path / 'tail.db'}"
    # No checkpoint after the two events: they are the tail.
    _run_and_die(
        url,
        [[ev("m1", "msg", "account:2"), ev("m2", "msg", "account:2", timedelta(minutes=1))]],
        checkpoint_every=1_000_000,
        dedupe_hours=24 * 7,
    )
    assert [position for position, _, _ in _checkpoints(url)] == [0]  # the one written when it opened
    new = _changed(POLICY, "count: 3", "count: 2")  # would have fired on m2 already
    with Engine(policy_set(new), audit=url) as engine:
        assert engine.resumed_events == 2 and engine.dropped_rules == ("requests/bursts",)
        assert engine.state_size()["threshold_items"] == 0
        eng = create_engine(url)
        with eng.connect() as c:
            assert c.execute(select(func.count()).select_from(ViolationRow)).scalar_one() == 0
        eng.dispose()


def test_the_redelivery_memory_beyond_its_window_is_the_audit_log(tmp_path: Path) -> None:
    """Reading an input again after a crash: copies older than the window are recognised from the log."""
    url = f"sqlite:///{tmp_path / 'redelivered.db'}"
    first = [ev("r1", "req", "account:1"), ev("m1", "msg", "account:3")]
    later = [ev("x1", "tick", "account:9", timedelta(days=30))]
    with Engine(policy_set(POLICY), audit=url) as engine:
        engine.process_many(first + later)
    with Engine(policy_set(POLICY), audit=url) as engine:
        assert engine.process_many(first + later) == []  # 30 days late, past the window: the log knows them
        assert engine.stats["duplicates"] == 3
    with Engine(policy_set(POLICY)) as dry:  # no log: the memory is the window, and these are past it
        dry.process_many(first + later)
        assert [v.rule for v in dry.process_many(first)] == ["requests/unanswered"]


def test_a_replay_into_an_existing_log_continues_its_state_through_the_cli(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "requests.yaml").write_text(POLICY, encoding="utf-8")
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(json.dumps(ev("r1", "req", "account:1")) + "\n", encoding="utf-8")
    b.write_text(json.dumps(ev("x1", "tick", "account:9", timedelta(days=2))) + "\n", encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'ab.db'}"
    assert _ids(_tosengine("replay", str(a), "--policies", str(policies), "--db", url, "--format", "json").stdout) == []
    p = _tosengine("replay", str(b), "--policies", str(policies), "--db", url, "--format", "json")
    assert [json.loads(x)["rule"] for x in p.stdout.splitlines()] == ["requests/unanswered"]


_HOLDER = """
import sys
from tests.support import policy_set
from tests.test_state import POLICY
from tosengine import Engine

engine = Engine(policy_set(POLICY), audit=sys.argv[1], partition=sys.argv[2])
print("open", flush=True)
sys.stdin.readline()  # until the test says so, or kills it
engine.close()
"""


def test_one_engine_at_a_time_runs_a_partition_of_a_log(db_url: str) -> None:
    # Two engines on one partition would each hold part of its state and overwrite each other's
    # checkpoints. The second is refused while the first is open, in another process or this one, and
    # opens once the first is closed, or killed; another partition of the same log opens meanwhile.
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, db_url, "p1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        with pytest.raises(AuditError, match=r"partition 'p1' of the audit log at .* is in use by another engine"):
            Engine(policy_set(POLICY), audit=db_url, partition="p1")
        with Engine(policy_set(POLICY), audit=db_url, partition="p2") as other:
            other.process(ev("r1", "req", "account:1"))
            with pytest.raises(AuditError, match="partition 'p2'"):
                Engine(policy_set(POLICY), audit=db_url, partition="p2")  # in this process too
        holder.kill()  # a killed holder leaves nothing claimed
        holder.wait(timeout=60)
        with Engine(policy_set(POLICY), audit=db_url, partition="p1") as engine:
            engine.process(ev("r2", "req", "account:2"))
        with Engine(policy_set(POLICY), audit=db_url, partition="p2") as engine:  # closed, so free again
            assert engine.resumed_events == 0
    finally:
        holder.kill()
        holder.wait(timeout=60)


def test_replay_into_a_partition_another_process_runs_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'busy.db'}"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, url, ""], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        stream = tmp_path / "in.jsonl"
        stream.write_text(json.dumps(ev("r1", "req", "account:1")) + "\n", encoding="utf-8")
        policies = tmp_path / "policies"
        policies.mkdir()
        (policies / "requests.yaml").write_text(POLICY, encoding="utf-8")
        run = _tosengine("replay", str(stream), "--policies", str(policies), "--db", url)
        assert run.returncode == 2 and "is in use by another engine" in run.stderr, run.stderr
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(timeout=60) == 0
    finally:
        holder.kill()
        holder.wait(timeout=60)
    eng = create_engine(url)
    with eng.connect() as c:
        assert c.execute(text("SELECT count(*) FROM events")).scalar_one() == 0
    eng.dispose()
    run = _tosengine("replay", str(stream), "--policies", str(policies), "--db", url)
    assert run.returncode == 0, run.stderr


def test_an_engine_whose_claim_cannot_be_taken_runs_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Where the lock beside a SQLite log cannot be taken at all (here a directory is in its way; some
    # network file systems refuse such locks), the engine runs unguarded, as before claims, and warns.
    db = tmp_path / "unguarded.db"
    (tmp_path / "unguarded.db-lock").mkdir()
    with Engine(policy_set(POLICY), audit=f"sqlite:///{db}") as engine:
        engine.process(ev("r1", "req", "account:1"))
    assert "is not guarded against a second engine" in caplog.text
