"""The audit log on SQLite and PostgreSQL: idempotent, atomic, tamper-evident, masked, migrated."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import DBAPIError

from tests.support import ev, pg_schema, policy_set, verify
from tosengine import Engine
from tosengine.audit import AuditLog
from tosengine.audit.log import AuditError
from tosengine.audit.models import AcceptedEvent, Base, RejectedEvent, ViolationRow
from tosengine.events import parse_time, validate_record

POLICY = """
policy: logins
title: Logins
clause: You will not enter other people's credentials on third-party sites.
severity: high
action: restrict
sensitive: [data.password]
rules:
  - id: offsite
    match: event.type == "account.login" and event.data.origin != "facebook.com"
  - id: two-offsite
    threshold:
      match: event.type == "account.login" and event.data.origin != "facebook.com"
      count: 2
      within: 1h
"""


def _events(n: int = 6) -> list[dict[str, Any]]:
    from datetime import timedelta

    return [
        ev(
            f"l{i}",
            "account.login",
            f"account:{i % 2}",
            timedelta(minutes=i),
            origin="evil.example",
            password=f"hunter{i}",
        )
        for i in range(n)
    ]


def _replay(url: str, events: list[dict[str, Any]]) -> list[Any]:
    with Engine(policy_set(POLICY), audit=url) as engine:
        return engine.process_many(events)


def _count(url: str, model: type[Any]) -> int:
    eng = create_engine(url)
    try:
        with eng.connect() as c:
            return int(c.execute(select(func.count()).select_from(model)).scalar_one())
    finally:
        eng.dispose()


def test_replaying_twice_leaves_the_rows_of_one_replay(db_url: str) -> None:
    first = _replay(db_url, _events())
    assert len(first) == 8  # 6 offsite logins + one threshold per account
    counts = (_count(db_url, ViolationRow), _count(db_url, AcceptedEvent))
    assert counts == (8, 6)
    _replay(db_url, _events())
    assert (_count(db_url, ViolationRow), _count(db_url, AcceptedEvent)) == counts
    assert verify(db_url).ok


def test_stored_events_read_back_as_sent(db_url: str) -> None:
    """Event rows bypass SQLAlchemy's bind processing for speed: what the ORM reads back must still be
    each event's identity, subject and instant (UTC), whatever offset the producer wrote."""
    sent = _events(3)
    sent[1]["time"] = "2026-03-01T12:01:00.250+02:00"  # the same instant as 10:01:00.25Z
    _replay(db_url, sent)
    eng = create_engine(db_url)
    with eng.connect() as c:
        rows = c.execute(
            select(AcceptedEvent.event_id, AcceptedEvent.subject, AcceptedEvent.time, AcceptedEvent.body).order_by(
                AcceptedEvent.seq
            )
        ).all()
    eng.dispose()

    def naive_utc(t: datetime) -> datetime:  # SQLite reads back naive UTC, PostgreSQL aware
        return t if t.tzinfo is None else t.astimezone(UTC).replace(tzinfo=None)

    got = [(r[0], r[1], naive_utc(r[2])) for r in rows]
    want = [(e["id"], e["subject"], naive_utc(parse_time(e["time"]))) for e in sent]
    assert got == want
    assert [json.loads(r[3])["time"] for r in rows] == [e["time"] for e in sent]


def test_an_event_given_as_text_is_stored_as_that_text_unless_a_path_is_sensitive(db_url: str) -> None:
    plain = policy_set(POLICY.replace("sensitive: [data.password]\n", ""))
    first, second = (json.dumps(e, indent=1) for e in _events(2))  # whitespace a re-encoding would not keep
    with Engine(plain, audit=db_url) as engine:
        engine.process(first + "\n")
        engine.process_many([second])
    eng = create_engine(db_url)
    with eng.connect() as c:
        bodies = [r[0] for r in c.execute(select(AcceptedEvent.body).order_by(AcceptedEvent.seq))]
    eng.dispose()
    assert bodies == [first, second]


def test_an_event_given_as_text_is_masked_when_a_path_is_sensitive(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    with Engine(policy_set(POLICY), audit=url) as engine:
        engine.process(json.dumps(_events(1)[0]))
    eng = create_engine(url)
    with eng.connect() as c:
        (body,) = c.execute(select(AcceptedEvent.body)).one()
    eng.dispose()
    assert "hunter0" not in body and json.loads(body)["data"]["password"].startswith("masked:hmac-sha256:")


def test_models_and_migrations_agree(db_url: str) -> None:
    AuditLog(db_url).close()  # migrates
    eng = create_engine(db_url)
    with eng.connect() as c:
        diff = compare_metadata(MigrationContext.configure(c), Base.metadata)
    eng.dispose()
    assert diff == []


def test_the_schema_head_constant_is_the_migrations_head() -> None:
    # Opening a log at SCHEMA_HEAD skips Alembic: were the constant behind a new migration, logs would
    # stay unmigrated; ahead of it, every open would run Alembic for nothing.
    from tosengine.audit.migrate import SCHEMA_HEAD, head_revision

    assert head_revision() == SCHEMA_HEAD


def _sqlite_schema(path: Path) -> tuple[list[tuple[str, str, str, str | None]], list[tuple[str]]]:
    import sqlite3

    with sqlite3.connect(path) as db:
        master = db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name").fetchall()
        version = db.execute("SELECT version_num FROM alembic_version").fetchall()
    db.close()
    return master, version


def test_the_statements_a_new_sqlite_log_is_made_from_are_what_the_migrations_build() -> None:
    from tosengine.audit.migrate import SCHEMA_HEAD, sqlite_schema_statements
    from tosengine.audit.sqlite_schema import REVISION, STATEMENTS

    # After a new migration: python -m tosengine.audit.migrate (writes tosengine/audit/sqlite_schema.py).
    assert (REVISION, list(STATEMENTS)) == (SCHEMA_HEAD, sqlite_schema_statements())


def test_a_new_sqlite_log_is_the_schema_the_migrations_build(tmp_path: Path) -> None:
    from tosengine.audit.migrate import run_migrations

    AuditLog(f"sqlite:///{tmp_path / 'new.db'}").close()  # created from the statements, without Alembic
    eng = create_engine(f"sqlite:///{tmp_path / 'migrated.db'}")
    with eng.connect() as conn:
        run_migrations(conn)
    eng.dispose()
    new, migrated = _sqlite_schema(tmp_path / "new.db"), _sqlite_schema(tmp_path / "migrated.db")
    assert new == migrated and len(new[0]) > 20


def test_a_sqlite_file_holding_other_tables_is_migrated_not_created(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "shared.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE theirs (x INTEGER)")
        db.execute("INSERT INTO theirs VALUES (1)")
    db.close()
    AuditLog(f"sqlite:///{path}").close()
    master, version = _sqlite_schema(path)
    assert version == [("0008",)] and ("table", "theirs", "theirs", "CREATE TABLE theirs (x INTEGER)") in master
    assert {name for kind, name, _, _ in master if kind == "table"} >= {"violations", "events", "checkpoints"}


def test_processes_opening_one_new_sqlite_file_at_once_all_open_it(tmp_path: Path) -> None:
    # The write lock is taken before looking for tables: the later ones find the schema and open it.
    url = f"sqlite:///{tmp_path / 'race.db'}"
    code = "import sys\nfrom tosengine.audit import AuditLog\nAuditLog(sys.argv[1]).close()\n"
    procs = [subprocess.Popen([sys.executable, "-c", code, url], stderr=subprocess.PIPE, text=True) for _ in range(4)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    master, version = _sqlite_schema(tmp_path / "race.db")
    from tosengine.audit.sqlite_schema import STATEMENTS

    tables = sum(statement.startswith("CREATE TABLE") for statement in STATEMENTS)
    assert version == [("0008",)] and sum(kind == "table" for kind, *_ in master) == tables


def test_a_log_left_at_an_older_revision_is_migrated_when_opened(tmp_path: Path) -> None:
    from alembic import command

    from tosengine.audit.migrate import SCHEMA_HEAD, alembic_config, revision_of

    url = f"sqlite:///{tmp_path / 'old.db'}"
    AuditLog(url).close()
    eng = create_engine(url)
    with eng.connect() as conn:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0007")
        conn.commit()
        assert revision_of(conn) == "0007"
    AuditLog(url).close()
    with eng.connect() as conn:
        assert revision_of(conn) == SCHEMA_HEAD
    eng.dispose()


def test_sensitive_fields_are_masked_and_the_chain_still_verifies(db_url: str) -> None:
    _replay(db_url, _events(2))
    eng = create_engine(db_url)
    with eng.connect() as c:
        stored = " ".join(r[0] for r in c.execute(select(ViolationRow.evidence_events)))
        stored += " ".join(r[0] for r in c.execute(select(AcceptedEvent.body)))
    eng.dispose()
    assert "hunter" not in stored and "masked:hmac-sha256:" in stored
    assert verify(db_url).ok


def test_a_failing_batch_writes_nothing_and_raises(db_url: str) -> None:
    log = AuditLog(db_url, batch_size=10_000)
    engine = Engine(policy_set(POLICY), audit=log)
    engine.process_many(_events(4))  # durable when it returns
    eng = create_engine(db_url)
    with eng.connect() as c:
        written = c.execute(select(func.count()).select_from(ViolationRow)).scalar_one()
        events = c.execute(select(func.count()).select_from(AcceptedEvent)).scalar_one()
    assert written > 0 and events == 4
    # The database loses a table behind the writer's back: the whole next batch must fail together.
    with eng.begin() as c:
        c.execute(text("DROP TABLE rejected_events"))
    from tosengine.errors import EventError

    engine.reject("garbage", EventError("", "not JSON", line=1))
    more = [
        ev(f"m{i}", "account.login", f"account:{i % 2}", timedelta(hours=1, minutes=i), origin="evil.example")
        for i in range(4)
    ]
    with pytest.raises(AuditError):
        engine.process_many(more)
    with eng.connect() as c:
        assert c.execute(select(func.count()).select_from(ViolationRow)).scalar_one() == written
        assert c.execute(select(func.count()).select_from(AcceptedEvent)).scalar_one() == events
    eng.dispose()


@pytest.mark.parametrize("origin", ["facebook.com", "evil.example"], ids=["event-alone", "with-violations"])
def test_an_event_the_database_refuses_raises_and_is_written_once_it_accepts_it(tmp_path: Path, origin: str) -> None:
    """process() commits an event alone on SQLite's driver connection (audit/log.py), one with violations
    through SQLAlchemy: either way a refused write raises AuditError, writes nothing, and keeps the rows."""
    url = f"sqlite:///{tmp_path / 'refuse.db'}"
    engine = Engine(policy_set(POLICY), audit=url)
    engine.process(ev("ok-1", "account.login", "account:1", timedelta(0), origin="facebook.com"))
    eng = create_engine(url)
    with eng.begin() as c:
        c.execute(
            text(
                "CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.event_id = 'no-1' "
                "BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END"
            )
        )
    with pytest.raises(AuditError, match=r"could not write to the audit log .*refused by a trigger"):
        engine.process(ev("no-1", "account.login", "account:1", timedelta(minutes=1), origin=origin))
    with eng.connect() as c:
        assert c.execute(text("SELECT event_id FROM events")).scalars().all() == ["ok-1"]
        assert c.execute(select(func.count()).select_from(ViolationRow)).scalar_one() == 0
    with eng.begin() as c:
        c.execute(text("DROP TRIGGER refuse"))
    engine.flush()  # what was refused is still queued
    engine.process(ev("ok-2", "account.login", "account:1", timedelta(minutes=2), origin="facebook.com"))
    engine.close()
    with eng.connect() as c:
        assert c.execute(text("SELECT event_id FROM events ORDER BY seq")).scalars().all() == ["ok-1", "no-1", "ok-2"]
        violations = c.execute(select(func.count()).select_from(ViolationRow)).scalar_one()
    assert (violations > 0) == (origin == "evil.example")
    eng.dispose()
    assert verify(url).ok


def test_a_log_that_cannot_be_opened_for_a_write_raises_and_keeps_the_rows(tmp_path: Path) -> None:
    """The first write opens the writer's connection: when the database cannot be opened then, the
    caller gets AuditError and the rows stay queued, to be written once it can."""
    home = tmp_path / "d"
    home.mkdir()
    url = f"sqlite:///{home / 'open.db'}"
    log = AuditLog(url)
    log.engine.dispose()  # no pooled connection left: the write must open one
    log.record(validate_record(ev("o-1", "account.login", "account:1", timedelta(0), origin="facebook.com")), [])
    home.rename(tmp_path / "gone")
    with pytest.raises(AuditError, match="could not write to the audit log"):
        log.flush()
    assert log.queued() == 1
    (tmp_path / "gone").rename(home)
    log.flush()
    log.close()
    eng = create_engine(url)
    with eng.connect() as c:
        assert c.execute(text("SELECT event_id FROM events")).scalars().all() == ["o-1"]
    eng.dispose()


@pytest.mark.parametrize("how", ["close", "release"])
def test_closing_or_releasing_a_log_closes_its_sqlite_connections(tmp_path: Path, how: str) -> None:
    """SQLite removes the write-ahead log when the last connection closes: none is left open, not even
    the one the writer keeps between transactions. release() drops what is queued; close() writes it."""
    db = tmp_path / "rel.db"
    log = AuditLog(f"sqlite:///{db}")
    log.record(validate_record(ev("r-1", "account.login", "account:1", timedelta(0), origin="facebook.com")), [])
    log.flush()
    log.record(validate_record(ev("r-2", "account.login", "account:1", timedelta(1), origin="facebook.com")), [])
    assert Path(f"{db}-wal").exists()
    getattr(log, how)()
    assert not Path(f"{db}-wal").exists()
    eng = create_engine(f"sqlite:///{db}")
    with eng.connect() as c:
        stored = c.execute(text("SELECT event_id FROM events ORDER BY seq")).scalars().all()
    eng.dispose()
    assert stored == (["r-1", "r-2"] if how == "close" else ["r-1"])


def _tamper(url: str, *sql: str) -> None:
    eng = create_engine(url)
    with eng.begin() as c:
        if url.startswith("sqlite"):  # an attacker with the file can drop the append-only triggers
            c.execute(text("DROP TRIGGER IF EXISTS violations_no_update"))
            c.execute(text("DROP TRIGGER IF EXISTS violations_no_delete"))
        for s in sql:
            c.execute(text(s))
    eng.dispose()


@pytest.mark.parametrize(
    "attack,seq,words",
    [
        (["UPDATE violations SET subject = 'account:someone-else' WHERE seq = 3"], 3, "changed"),
        (["DELETE FROM violations WHERE seq = 4"], 5, "deleted, inserted or reordered"),
        (["DELETE FROM violations WHERE seq = 8"], None, "chain head"),
        (
            [
                "UPDATE violations SET seq = 100 WHERE seq = 2",
                "UPDATE violations SET seq = 2 WHERE seq = 5",
                "UPDATE violations SET seq = 5 WHERE seq = 100",
            ],
            2,
            "",
        ),
    ],
)
def test_verify_names_the_first_bad_row_after_tampering_on_sqlite(
    tmp_path: Path, attack: list[str], seq: int | None, words: str
) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    _replay(url, _events())
    assert verify(url).ok
    _tamper(url, *attack)
    result = verify(url)
    assert not result.ok
    assert result.bad_seq == seq
    assert words in result.describe()
    p = subprocess.run(
        [sys.executable, "-m", "tosengine", "audit", "verify", "--db", url], capture_output=True, text=True
    )
    assert p.returncode == 1 and "BROKEN" in p.stdout


def test_postgres_refuses_update_delete_and_truncate_for_the_owner() -> None:
    with pg_schema() as url:
        _replay(url, _events(2))
        eng = create_engine(url)
        for sql in ("UPDATE violations SET subject = 'x'", "DELETE FROM violations", "TRUNCATE violations"):
            with pytest.raises(DBAPIError, match="append-only"), eng.begin() as c:
                c.execute(text(sql))
        eng.dispose()
        assert verify(url).ok


def test_cli_replay_records_rejections_and_exports_a_case_file(tmp_path: Path) -> None:
    pol = tmp_path / "policies"
    pol.mkdir()
    (pol / "logins.yaml").write_text(POLICY, encoding="utf-8")
    lines = [json.dumps(e) for e in _events(3)] + ['{"id": "bad"}', "{not json"]
    (tmp_path / "ev.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'a.db'}"
    run = [sys.executable, "-m", "tosengine"]
    p = subprocess.run(
        [*run, "replay", str(tmp_path / "ev.jsonl"), "--policies", str(pol), "--db", url],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 1, p.stderr
    assert _count(url, RejectedEvent) == 2
    eng = create_engine(url)
    with eng.connect() as c:
        reasons = [r[0] for r in c.execute(select(RejectedEvent.field).order_by(RejectedEvent.seq))]
    eng.dispose()
    assert reasons == ["type", ""]
    p = subprocess.run(
        [*run, "audit", "list", "--db", url, "--subject", "account:0", "--format", "json"],
        capture_output=True,
        text=True,
    )
    listed = [json.loads(x) for x in p.stdout.splitlines()]
    assert [v["rule"] for v in listed] == ["logins/offsite", "logins/offsite", "logins/two-offsite"]
    p = subprocess.run(
        [*run, "audit", "export", "--db", url, "--subject", "account:0", "--format", "html"],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0
    assert "hash chain intact" in p.stdout and "third-party sites" in p.stdout and "l0" in p.stdout
    assert "hunter" not in p.stdout


def test_with_a_key_an_attacker_who_rewrites_the_chain_is_still_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With TOSENGINE_AUDIT_KEY, recomputing every hash after a change (which defeats a plain SHA-256
    chain) still fails verification, because the attacker does not have the key."""
    from tosengine.audit.chain import link_hash

    url = f"sqlite:///{tmp_path / 'keyed.db'}"
    monkeypatch.setenv("TOSENGINE_AUDIT_KEY", "a secret kept outside the database")
    _replay(url, _events())
    assert verify(url).ok
    eng = create_engine(url)
    with eng.begin() as c:  # the attacker: change a row, then re-chain everything with plain SHA-256
        c.execute(text("DROP TRIGGER violations_no_update"))
        c.execute(text("UPDATE violations SET subject = 'account:innocent' WHERE seq = 2"))
        prev = "0" * 64
        for row in c.execute(select(ViolationRow).order_by(ViolationRow.seq)).mappings().all():
            data = {**dict(row), "prev_hash": prev}
            prev = link_hash(data)
            c.execute(
                text("UPDATE violations SET prev_hash = :p, hash = :h WHERE seq = :s"),
                {"p": data["prev_hash"], "h": prev, "s": row["seq"]},
            )
        c.execute(text("UPDATE chain_head SET hash = :h"), {"h": prev})
    eng.dispose()
    result = verify(url)
    assert not result.ok and result.bad_seq == 1
    monkeypatch.delenv("TOSENGINE_AUDIT_KEY")
    result = verify(url)  # without the key, a keyed log cannot be vouched for
    assert not result.ok and "TOSENGINE_AUDIT_KEY" in result.problem
    with eng.begin() as c:  # the attacker also removes the key check: without the key it now passes...
        c.execute(text("DELETE FROM meta WHERE name = 'key_check'"))
    eng.dispose()
    assert verify(url).ok
    monkeypatch.setenv("TOSENGINE_AUDIT_KEY", "a secret kept outside the database")
    result = verify(url)  # ...which is why the verifier holds the key: with it, the forgery shows
    assert not result.ok and "no key check" in result.problem


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2199, 12, 30), timezones=st.just(UTC)),
    st.sampled_from(["Z", "z", "+00:00", "+05:30", "-08:00"]),
    st.integers(0, 9),
)
def test_stored_event_times_do_not_depend_on_how_the_producer_wrote_them(
    when: datetime, offset: str, digits: int
) -> None:
    """The SQLite time text is re-sliced from the producer's text when it can be: it must equal the text
    formatted from the parsed instant, for every way RFC 3339 lets the producer write that instant."""
    from tosengine.audit.log import _sqlite_time

    local = when.astimezone(
        timezone(timedelta(hours=int(offset[:3]), minutes=int(offset[4:]))) if offset[0] in "+-" else UTC
    )
    frac = f".{local.microsecond:06d}{'0' * 3}"[: digits + 1] if digits else ""
    text = local.strftime("%Y-%m-%dT%H:%M:%S") + frac + offset
    parsed = parse_time(text)
    assert _sqlite_time(parsed, text) == _sqlite_time(parsed)


def test_processes_that_open_a_fresh_postgres_log_at_once_all_succeed() -> None:
    """Kafka workers (or a replay beside serve) started together on a new database: each migrates it,
    and every one must start; none may fail on tables another has just created."""
    with pg_schema() as url:
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "tosengine", "db", "upgrade", "--db", url],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(6)
        ]
        results = [(p.wait(timeout=120), p.stderr.read() if p.stderr else "") for p in procs]
        assert [code for code, _ in results] == [0] * 6, [err for _, err in results]
        assert verify(url).ok


def _logins(first: int, n: int) -> list[dict[str, Any]]:
    """`n` logins from facebook.com (no violation), ids l{first}.., a minute apart from `first` minutes."""
    return [
        ev(f"l{i}", "account.login", f"account:{i % 3}", timedelta(minutes=i), origin="facebook.com")
        for i in range(first, first + n)
    ]


def test_postgres_event_columns_are_the_types_copy_writes() -> None:
    # Accepted events go into PostgreSQL by COPY's binary format, which sends each value in the form of
    # the type the writer names: they must be the columns' own types.
    from tosengine.audit.log import _EVENT_COLUMNS, _EVENT_TYPES

    with pg_schema() as url:
        AuditLog(url).close()
        eng = create_engine(url)
        with eng.connect() as c:
            types: dict[str, str] = dict(
                c.execute(
                    text(
                        "SELECT column_name, udt_name FROM information_schema.columns "
                        "WHERE table_schema = current_schema() AND table_name = 'events'"
                    )
                ).all()
            )
        eng.dispose()
    assert [types[c] for c in _EVENT_COLUMNS] == list(_EVENT_TYPES)


def test_postgres_takes_a_batch_of_events_by_copy_and_skips_one_another_writer_recorded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # COPY cannot skip a row that is already there. Another partition's engine recorded some of these
    # events first: the batch then goes in by INSERT, which skips those, and nothing is lost or doubled.
    with pg_schema() as url:
        caplog.set_level(logging.DEBUG, logger="tosengine")
        with Engine(policy_set(POLICY), audit=url, partition="a") as a:
            a.process_many(_logins(0, 40))
        assert "inserting them instead" not in caplog.text  # a fresh batch went in by COPY
        with Engine(policy_set(POLICY), audit=url, partition="b") as b:
            b.process_many(_logins(20, 60))  # l20..l39 are a's
        assert "COPY of 60 event rows refused" in caplog.text
        eng = create_engine(url)
        with eng.connect() as c:
            rows = c.execute(text("SELECT event_id, partition, time FROM events ORDER BY seq")).all()
        eng.dispose()
        assert verify(url).ok
    assert [r[0] for r in rows] == [f"l{i}" for i in range(80)]
    assert {r[0] for r in rows if r[1] == "a"} == {f"l{i}" for i in range(40)}
    assert rows[79][2] == datetime(2026, 1, 1, 1, 19, tzinfo=UTC)  # times arrive as they were


def test_postgres_a_batch_the_server_refuses_raises_writes_nothing_and_is_written_later() -> None:
    # A refusal that is not a conflict (here a trigger) fails the COPY, then the INSERT that follows it,
    # which raises as it always did: nothing of the batch is written, and it stays queued.
    with pg_schema() as url:
        engine = Engine(policy_set(POLICY), audit=url)
        engine.process_many(_logins(0, 30))
        eng = create_engine(url)
        with eng.begin() as c:
            c.execute(
                text(
                    "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    "IF NEW.event_id = 'l45' THEN RAISE EXCEPTION 'refused by a trigger'; END IF; "
                    "RETURN NEW; END $$"
                )
            )
            c.execute(text("CREATE TRIGGER refuse BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION refuse()"))
        with pytest.raises(AuditError, match="refused by a trigger"):
            engine.process_many(_logins(30, 30))
        with eng.connect() as c:
            assert c.execute(text("SELECT count(*) FROM events")).scalar_one() == 30
        with eng.begin() as c:
            c.execute(text("DROP TRIGGER refuse ON events"))
        engine.close()  # writes what is still queued
        with eng.connect() as c:
            ids = c.execute(text("SELECT event_id FROM events ORDER BY seq")).scalars().all()
        eng.dispose()
    assert ids == [f"l{i}" for i in range(60)]
