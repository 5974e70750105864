"""Crashes and concurrency: a replay killed at any point and run again ends with exactly the audit log
of one clean run (at-least-once in, exactly-once out); threads give the same rows as one thread."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import create_engine, select

from tests.support import ev, policy_set, verify
from tosengine import Engine
from tosengine.audit.models import AcceptedEvent, ViolationRow
from tosengine.event_model import parse_event_line

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "examples" / "seed-cases.jsonl"
KILL_POINTS = int(os.environ.get("TOSENGINE_KILL_POINTS", "20"))


def _replay(url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tosengine",
            "replay",
            str(SEED),
            "--policies",
            str(ROOT / "policies"),
            "--db",
            url,
            "--format",
            "json",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _rows(url: str) -> tuple[list[tuple[str, str, str]], int]:
    eng = create_engine(url)
    with eng.connect() as c:
        rows = [(r.id, r.rule, r.evidence) for r in c.execute(select(ViolationRow).order_by(ViolationRow.seq))]
        events = len(list(c.execute(select(AcceptedEvent.seq))))
    eng.dispose()
    return rows, events


def test_killed_replays_resume_to_exactly_one_clean_run(tmp_path: Path) -> None:
    clean = f"sqlite:///{tmp_path / 'clean.db'}"
    t0 = time.monotonic()
    assert _replay(clean).wait(timeout=600) == 0
    full_time = time.monotonic() - t0
    want = _rows(clean)
    assert len(want[0]) > 30
    rng = random.Random(20261128)
    killed_mid_run = 0
    for point in range(KILL_POINTS):
        url = f"sqlite:///{tmp_path / f'k{point}.db'}"
        # One, two or three kills at random moments, then a run to completion.
        for _ in range(1 + point % 3):
            p = _replay(url)
            time.sleep(rng.uniform(0.05, full_time))
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                killed_mid_run += 1
            p.wait(timeout=600)
        assert _replay(url).wait(timeout=600) == 0
        assert _rows(url) == want, f"kill point {point}"
        assert verify(url).ok
    assert killed_mid_run >= KILL_POINTS  # the kills really landed while replay ran


def test_eight_threads_write_the_same_rows_as_one(db_url: str) -> None:
    # Every event falls inside one threshold window, so the interleaving of subjects cannot matter.
    events = [
        ev(f"t{i}", "account.login", f"account:{i % 16}", timedelta(seconds=i // 2), origin="evil.example")
        for i in range(480)
    ]
    streams = [[e for e in events if int(e["subject"].split(":")[1]) % 8 == t] for t in range(8)]
    with Engine(policy_set(POLICY_BY_ACCOUNT), audit=db_url) as engine:
        threads = [threading.Thread(target=engine.process_many, args=(s,)) for s in streams]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    many = sorted(r[0] for r in _rows(db_url)[0])
    single = sorted(v.id for v in Engine(policy_set(POLICY_BY_ACCOUNT)).process_many(events))
    assert many == single and len(single) > 400
    assert verify(db_url).ok


POLICY_BY_ACCOUNT = """
policy: logins
title: Logins
clause: No third-party logins.
rules:
  - id: offsite
    match: event.type == "account.login" and event.data.origin != "facebook.com"
  - id: bursts
    threshold:
      match: event.type == "account.login"
      count: 3
      within: 10m
"""


def test_an_embedding_service_restarts_with_its_windows_and_obligations(tmp_path: Path) -> None:
    """Open obligations, partial sequences and threshold windows survive a restart: a new Engine
    resumes them from the audit log's checkpoint (written at close) and the rest of the stream gives
    exactly one clean run's rows."""
    lines = SEED.read_text(encoding="utf-8").splitlines()
    clean = f"sqlite:///{tmp_path / 'clean.db'}"
    with Engine.from_directory(ROOT / "policies", audit=clean) as engine:
        engine.process_many(parse_event_line(x) for x in lines)
    for cut in (len(lines) // 3, 2 * len(lines) // 3):
        url = f"sqlite:///{tmp_path / f'restart-{cut}.db'}"
        first = Engine.from_directory(ROOT / "policies", audit=url)
        first.process_many(parse_event_line(x) for x in lines[:cut])
        first.close()  # the service stops; its memory is gone
        second = Engine.from_directory(ROOT / "policies", audit=url)
        assert second.restore() == 0  # nothing to replay: close() checkpointed everything
        assert second.state_size()["obligations"] + second.state_size()["threshold_keys"] > 0
        second.process_many(parse_event_line(x) for x in lines[cut:])
        second.close()
        assert _rows(url) == _rows(clean), f"restart after {cut} events"
        assert verify(url).ok
