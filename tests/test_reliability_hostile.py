"""Reliability II: hostile events and policies neither crash, hang nor block the engine, and every refused
input has a recorded reason. Each test is a hole an outside review found; each fails on the code before."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select

from tests.support import T0, ev, policy_set, verify
from tosengine import Engine, EventError, check_sources
from tosengine.audit.models import AcceptedEvent, EvaluationErrorRow, RejectedEvent, ViolationRow
from tosengine.policy.sources import Source, read_sources

ROOT = Path(__file__).resolve().parents[1]

REQUESTS = """
policy: requests
clause: Answer our requests in time.
severity: high
action: restrict
rules:
  - id: unanswered
    expect:
      after: event.type == "enforcement.info_request"
      fulfilled_by: event.type == "developer.info_response"
      within: days(after.data.due_days)
"""


def _tosengine(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tosengine", *args], capture_output=True, text=True, timeout=300, cwd=ROOT, input=stdin
    )


def _count(url: str, model: type[Any]) -> int:
    eng = create_engine(url)
    try:
        with eng.connect() as c:
            return int(c.execute(select(func.count()).select_from(model)).scalar_one())
    finally:
        eng.dispose()


def _policies(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    d = tmp_path / "policies"
    d.mkdir(exist_ok=True)
    (d / name).write_text(text, encoding="utf-8")
    return d


# ---------------------------------------------------------------- poison events


def test_a_poison_number_is_dead_lettered_and_the_replay_goes_on(tmp_path: Path) -> None:
    policies = _policies(tmp_path, REQUESTS)
    lines = [
        json.dumps(ev("r1", "enforcement.info_request", "developer:1", due_days=7)),
        '{"id": "r2", "type": "enforcement.info_request", "time": "2026-01-01T01:00:00Z", '
        '"subject": "developer:2", "data": {"due_days": 1' + "0" * 400 + "}}",
        json.dumps(ev("x1", "tick", "account:9", timedelta(days=30))),
    ]
    stream = tmp_path / "s.jsonl"
    stream.write_text("\n".join(lines) + "\n", encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'a.db'}"
    for _ in range(2):  # a rerun does not die at the same line either
        p = _tosengine("replay", str(stream), "--policies", str(policies), "--db", url, "--format", "json")
        assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
        assert "s.jsonl:2: rejected: field `data.due_days`: integers must fit in 64 bits" in p.stderr
    assert _count(url, AcceptedEvent) == 2 and _count(url, RejectedEvent) == 1  # the rerun adds no row
    assert _count(url, ViolationRow) == 1  # the line after the poison was processed: r1 lapsed


def test_the_library_raises_event_error_and_does_not_half_see_the_event() -> None:
    with Engine(policy_set(REQUESTS)) as engine:
        poison = ev("r2", "enforcement.info_request", "developer:2", due_days=10**400)
        for _ in range(2):  # not "seen" the first time: the retry is judged again, not a duplicate
            with pytest.raises(EventError, match="64 bits"):
                engine.process(poison)
        assert engine.stats["events"] == 0 and engine.stats["duplicates"] == 0


@pytest.mark.parametrize("value", [b"bytes", {1, 2}, 1j, object(), (1.0, float("nan")), (1, 2)])
def test_values_json_cannot_hold_are_refused_by_the_dict_api(value: object) -> None:
    with Engine(policy_set(REQUESTS)) as engine:
        with pytest.raises(EventError, match="not a JSON value") as info:
            engine.process(ev("v1", "x", "account:1", value=value))
        assert info.value.field == "data.value"


def test_an_error_inside_one_rule_is_recorded_and_the_other_rules_still_judge(tmp_path: Path) -> None:
    two = REQUESTS + '  - id: noted\n    match: event.type == "enforcement.info_request"\n'
    url = f"sqlite:///{tmp_path / 'e.db'}"
    engine = Engine(policy_set(two), audit=url)
    # Fault injection: the expect rule's `after` trigger fails on every item (no policy can make the
    # compiled expressions raise, which is the point; this is the net under them).
    after = next(t.id for t in engine.plan.triggers if t.role == "after")

    def broken(env: object) -> bool:
        raise ValueError("boom")

    engine._program.local[after] = broken
    out = engine.process(ev("r1", "enforcement.info_request", "developer:1", due_days=1))
    assert [v.rule for v in out] == ["requests/noted"]
    assert engine.stats["evaluation_errors"] == 1
    engine.process(ev("r1", "enforcement.info_request", "developer:1", due_days=1))  # a redelivery: nothing more
    engine.close()
    eng = create_engine(url)
    with eng.connect() as c:
        ((rule, event_id, error),) = c.execute(
            select(EvaluationErrorRow.rule, EvaluationErrorRow.event_id, EvaluationErrorRow.error)
        ).all()
    eng.dispose()
    assert (rule, event_id, error) == ("requests/unanswered", "r1", "ValueError: boom")


def test_numbers_beyond_what_a_duration_holds_are_absent_not_an_exception() -> None:
    text = REQUESTS + '  - id: long\n    match: event.type == "x" and days(event.data.n) > days(1)\n'
    with Engine(policy_set(text)) as engine:
        for i, n in enumerate((1e300, 9223372036854775807, -9223372036854775808)):
            assert engine.process(ev(f"n{i}", "x", "account:1", n=n)) == []
        assert engine.stats.get("evaluation_errors", 0) == 0 and engine.stats["events"] == 3


# ---------------------------------------------------------------- what PostgreSQL cannot store


NUL_POLICY = """
policy: harvest
clause: You will not collect logins.
severity: critical
action: disable
key: event.data.origin
rules:
  - id: login
    match: event.type == "account.login"
    subject: '"origin:" + event.data.origin'
    message: "{event.subject} logged in on {event.data.origin}"
"""


def test_nul_characters_and_long_values_a_rule_renders_are_stored_and_block_nothing(db_url: str) -> None:
    events = [
        ev("n1", "account.login", "account:1", origin="evil\u0000.example"),
        ev("n2", "account.login", "account:2", timedelta(seconds=1), origin="x" * 5000),
        ev("n3", "account.login", "account:3", timedelta(seconds=2), origin="fine.example"),
    ]
    with Engine(policy_set(NUL_POLICY), audit=db_url) as engine:
        assert len(engine.process_many(events)) == 3
    eng = create_engine(db_url)
    with eng.connect() as c:
        rows = c.execute(
            select(ViolationRow.subject, ViolationRow.key, ViolationRow.message).order_by(ViolationRow.seq)
        ).all()
    eng.dispose()
    assert rows[0] == (
        "origin:evil\\u0000.example",
        "evil\\u0000.example",
        "account:1 logged in on evil\\u0000.example",
    )
    assert len(rows[1][0]) == 1000 and "sha256:" in rows[1][0] and len(rows[1][2]) > 5000
    assert rows[2][0] == "origin:fine.example"
    assert verify(db_url).ok


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("subject", "account:a\u0000b", "NUL"),
        ("id", "i\u0000d", "NUL"),
        ("source", "s\u0000", "NUL"),
        ("id", "i" * 1001, "at most 1000"),
        ("type", "t" * 401, "at most 400"),
    ],
)
def test_envelope_values_a_column_cannot_hold_are_refused_with_the_field(field: str, value: str, problem: str) -> None:
    with Engine(policy_set(REQUESTS)) as engine, pytest.raises(EventError, match=problem) as info:
        engine.process({**ev("e1", "x", "account:1"), field: value})
    assert info.value.field == field


# ---------------------------------------------------------------- the clock, sizes, the dead letter


def test_an_event_far_ahead_of_the_clock_is_refused_and_lapses_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    with Engine(policy_set(REQUESTS), audit=url) as engine:
        engine.process(ev("r1", "enforcement.info_request", "developer:1", due_days=14))
        with pytest.raises(EventError, match="ahead of the event-time clock") as info:
            engine.process(ev("far", "account.login", "account:9", "2199-01-01T00:00:00Z"))
        assert info.value.field == "time"
        assert engine.state_size()["obligations"] == 1 and engine.clock == T0
        relaxed = Engine(policy_set(REQUESTS), max_clock_lead=None)
        relaxed.process(ev("r1", "enforcement.info_request", "developer:1", due_days=14))
        assert [v.rule for v in relaxed.process(ev("far", "x", "account:9", "2199-01-01T00:00:00Z"))] == [
            "requests/unanswered"
        ]
        relaxed.close()
    assert _count(url, RejectedEvent) == 1


def test_an_over_long_line_is_dead_lettered_without_being_held(tmp_path: Path) -> None:
    policies = _policies(tmp_path, REQUESTS)
    huge = json.dumps(ev("big", "x", "account:1", blob="y" * (3 << 20)))
    stream = tmp_path / "big.jsonl"
    stream.write_text(
        huge + "\n" + json.dumps(ev("r1", "enforcement.info_request", "developer:1", due_days=1)) + "\n",
        encoding="utf-8",
    )
    url = f"sqlite:///{tmp_path / 'b.db'}"
    p = _tosengine("replay", str(stream), "--policies", str(policies), "--db", url)
    assert p.returncode == 1 and "big.jsonl:1: rejected: line longer than 1048576 bytes" in p.stderr
    assert _count(url, AcceptedEvent) == 1
    eng = create_engine(url)
    with eng.connect() as c:
        raw = c.execute(select(RejectedEvent.raw)).scalar_one()
    eng.dispose()
    assert len(raw) < 2000  # not the 3 MB


def test_rejecting_the_same_line_again_adds_no_row_and_a_changed_copy_is_recorded(tmp_path: Path) -> None:
    policies = _policies(tmp_path, REQUESTS)
    first = ev("r1", "enforcement.info_request", "developer:1", due_days=1)
    changed = {**first, "data": {"due_days": 30}}  # same source and id, another body
    stream = tmp_path / "s.jsonl"
    stream.write_text("\n".join([json.dumps(first), "{not json", json.dumps(changed)]) + "\n", encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'd.db'}"
    for _ in range(3):
        assert _tosengine("replay", str(stream), "--policies", str(policies), "--db", url).returncode == 1
    eng = create_engine(url)
    with eng.connect() as c:
        reasons = sorted(r for (r,) in c.execute(select(RejectedEvent.reason)))
    eng.dispose()
    assert len(reasons) == 2, reasons  # the bad line once, the conflicting copy once: not three times each
    assert any("different body" in r for r in reasons)


# ---------------------------------------------------------------- hostile policy files


@pytest.mark.parametrize(
    "rule",
    [
        'threshold: {match: event.type == "a", count: 2, within: 999999999d}',
        'threshold: {match: event.type == "a", count: 2, within: 99999999999d}',
        'match: event.type == "a" and event.data.n > ' + "9" * 5000,
        'match: event.type == "a" and event.data.n == ' + " + ".join(["1"] * 1900),
        'expect: {after: event.type == "a", fulfilled_by: event.type == "b", within: days(1) + 99999999999d}',
    ],
)
def test_hostile_numbers_and_chains_are_diagnostics_not_crashes(rule: str) -> None:
    policy = f"policy: p\nclause: c\nrules:\n  - id: r\n    {rule}\n"
    checked, diags = check_sources([Source("p.yaml", policy)])
    assert checked is None and diags and all(d.severity == "error" for d in diags)


def test_a_deeply_nested_policy_file_is_a_diagnostic() -> None:
    deep = "policy: p\nclause: c\nrules: " + "[" * 20000 + "]" * 20000 + "\n"
    _, diags = check_sources([Source("p.yaml", deep)])
    assert [d.code for d in diags] == ["limit"]


def test_long_in_lists_cannot_hang_durable_rules_at_load(tmp_path: Path) -> None:
    """12 rules on one type, each `in` over 43 names (516 branches), and one list of 600 names: the
    matcher gets none of those branches (they are checked in Python), so the engine builds at once."""
    names = [f"n{i}" for i in range(43)]
    rules = "".join(f'  - id: r{i}\n    match: event.type == "t" and event.data.x in names\n' for i in range(12))
    rules += '  - id: big\n    match: event.type == "t" and event.data.x in many\n'
    lists = f"lists:\n  names: {json.dumps(names)}\n  many: {json.dumps([f'b{i}' for i in range(600)])}\n"
    d = _policies(tmp_path, f"policy: p\nclause: c\n{lists}rules:\n{rules}")
    code = (
        "import sys; from tosengine import Engine; from tosengine.policy.check import check_policy_set; "
        "from tosengine.policy.sources import read_sources; "
        f"e = Engine(check_policy_set(read_sources({str(d)!r}))); "
        "print(len(e.process({'id': '1', 'type': 't', 'time': '2026-01-01T00:00:00Z', 'subject': 'a:1', "
        "'data': {'x': 'n5'}})))"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert p.returncode == 0 and p.stdout.strip() == "12", p.stderr


def test_a_symlink_in_the_policy_directory_is_refused_and_not_printed(tmp_path: Path) -> None:
    secret = tmp_path / "credentials"
    secret.write_text("aws_secret_access_key: hunter2-very-secret\n", encoding="utf-8")
    d = _policies(tmp_path, REQUESTS)
    os.symlink(secret, d / "zz.yaml")
    p = _tosengine("check", str(d))
    assert p.returncode == 1 and "error[unsafe-file]" in p.stdout and "symbolic link" in p.stdout
    assert "hunter2" not in p.stdout + p.stderr
    assert [s.problem != "" for s in read_sources(d)] == [False, True]


# ---------------------------------------------------------------- output that could be forged


def test_a_subject_cannot_forge_rows_of_a_table(tmp_path: Path) -> None:
    policies = _policies(tmp_path, NUL_POLICY)
    forged = "x.example\n2026-01-01T00:00:00Z     harvest/login   origin:innocent\x1b[2K"
    stream = tmp_path / "f.jsonl"
    stream.write_text(json.dumps(ev("f1", "account.login", "account:1", origin=forged)) + "\n", encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'f.db'}"
    p = _tosengine("replay", str(stream), "--policies", str(policies), "--db", url)
    listed = _tosengine("audit", "list", "--db", url)
    for out in (p.stdout, listed.stdout):
        assert len(out.strip().splitlines()) == 2 and "\x1b" not in out  # the header and one row
        assert "\\n2026-01-01" in out and "\\x1b[2K" in out


# ---------------------------------------------------------------- resources


RELOADS = """
import sys
from tosengine import Engine, check_sources
from tosengine.policy.sources import Source, read_sources

def rss():
    return next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmRSS")) / 1024

sources = read_sources(sys.argv[1])
a, _ = check_sources(sources)
b, _ = check_sources([Source(s.path, s.text.replace("burst_count: 60", "burst_count: 61")) for s in sources])
engine = Engine(a)
for i in range(50):
    engine.reload(b if i % 2 else a)
base = rss()
for i in range(1000):
    engine.reload(b if i % 2 else a)
print(rss() - base)
"""


def test_a_thousand_reloads_do_not_grow_memory() -> None:
    """Reloads take over the durable_rules rulesets that did not change: before, 400 reloads of the default
    pack cost 363 MB, as durable_rules does not give back a deleted ruleset's memory."""
    p = subprocess.run(
        [sys.executable, "-c", RELOADS, str(ROOT / "policies")], capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert p.returncode == 0, p.stderr
    assert float(p.stdout) < 30, f"{p.stdout} MB more after 1,000 reloads"


def test_state_size_is_safe_to_read_while_threads_process() -> None:
    import threading

    engine = Engine(policy_set(REQUESTS))
    errors: list[BaseException] = []

    def feed(t: int) -> None:
        try:
            for i in range(400):
                engine.process(
                    ev(f"{t}-{i}", "enforcement.info_request", f"developer:{t}-{i}", timedelta(seconds=i), due_days=1)
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=feed, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    sizes = [engine.state_size() for _ in range(300)]
    for th in threads:
        th.join()
    engine.close()
    assert not errors and sizes[-1]["obligations"] <= 3200


# ---------------------------------------------------------------- sensitive values, on every path


SENSITIVE = """
policy: logins
clause: You will not collect our users' passwords.
severity: critical
action: disable
sensitive: [data.password, data.cards.0.number]
rules:
  - id: offsite
    match: event.type == "account.login" and event.data.origin != "facebook.com"
    key: event.data.password
    subject: '"pw:" + event.data.password'
    message: "{event.subject} typed {event.data.password} and card {event.data.cards} on {event.data.origin}"
    emit: {fact: login.leaked, data: {pw: event.data.password, origin: event.data.origin}}
  - id: leaked-twice
    threshold:
      match: fact.type == "login.leaked"
      count: 2
      within: 1h
    key: fact.data.pw
"""


def test_check_refuses_what_it_cannot_mask_and_warns_when_a_rule_renders_a_sensitive_field() -> None:
    checked, diags = check_sources([Source("p.yaml", SENSITIVE)])
    assert checked is not None
    assert [(d.severity, d.code) for d in diags] == [("warning", "sensitive-read")]
    _, diags = check_sources(
        [Source("p.yaml", SENSITIVE.replace("data.cards.0.number]", "data.cards.0.number, subject]"))]
    )
    assert [(d.code, "cannot be masked" in d.message) for d in diags if d.severity == "error"] == [
        ("invalid-value", True)
    ]


def test_no_sensitive_value_is_stored_or_shown_anywhere(tmp_path: Path, db_url: str) -> None:
    secrets = ["hunter2-p4ssw0rd", "4111111111111111"]
    policies = _policies(tmp_path, SENSITIVE)
    events = [
        ev(
            f"s{i}",
            "account.login",
            f"account:{i}",
            timedelta(minutes=i),
            origin="evil.example",
            password=secrets[0],
            cards=[{"number": secrets[1]}],
        )
        for i in range(3)
    ]
    lines = [json.dumps(e) for e in events]
    lines.insert(1, '{"id": "bad", "data": {"password": "' + secrets[0] + '", "oops"')  # not JSON: still masked
    stream = tmp_path / "s.jsonl"
    stream.write_text("\n".join(lines) + "\n", encoding="utf-8")
    outputs = [
        _tosengine("replay", str(stream), "--policies", str(policies), "--db", db_url, fmt)
        for fmt in ("--format=json", "--format=table")
    ]
    assert outputs[0].returncode == 1 and '"repeat_of"' not in outputs[0].stdout
    listed = _tosengine("audit", "list", "--db", db_url, "--format", "json")
    violations = [json.loads(x) for x in listed.stdout.splitlines()]
    assert {v["rule"] for v in violations} == {"logins/offsite", "logins/leaked-twice"}
    subject = violations[0]["subject"]
    assert subject.startswith("masked:hmac-sha256:")  # built from the password: masked at the source
    outputs += [
        listed,
        _tosengine("audit", "list", "--db", db_url),
        _tosengine("audit", "export", "--subject", subject, "--db", db_url, "--format", "html"),
        _tosengine("audit", "export", "--subject", subject, "--db", db_url),
        *(_tosengine("explain", v["id"], "--db", db_url) for v in violations),
    ]
    for p in outputs:
        for secret in secrets:
            assert secret not in p.stdout + p.stderr, p.args
    # Every table, every text and binary column, the checkpoints decompressed.
    import zlib

    from sqlalchemy import MetaData

    eng = create_engine(db_url)
    meta = MetaData()
    meta.reflect(eng)
    stored: list[str] = []
    with eng.connect() as c:
        for table in meta.sorted_tables:
            for row in c.execute(table.select()):
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        stored.append(zlib.decompress(bytes(value)).decode("utf-8"))
                    elif value is not None:
                        stored.append(str(value))
    eng.dispose()
    blob = "\n".join(stored)
    assert "masked:hmac-sha256:" in blob
    for secret in secrets:
        assert secret not in blob
