"""Read commands never write: `audit list/verify/export` and `explain` leave the database file as it
was, work on a read-only copy, never migrate or create, and do not block a writer."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.support import ev, pg_schema, policy_set
from tosengine import Engine
from tosengine.audit.connect import connect_readonly
from tosengine.audit.log import AuditLog
from tosengine.errors import AuditError

ROOT = Path(__file__).resolve().parents[1]


def tosengine(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tosengine", *args], capture_output=True, text=True, timeout=300, cwd=ROOT
    )


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def quickstart_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quickstart replayed into a SQLite audit log, closed (its WAL checkpointed into the file)."""
    path = tmp_path_factory.mktemp("ro") / "audit.db"
    p = tosengine(
        "replay",
        "examples/quickstart/events.jsonl",
        "--policies",
        "examples/quickstart/policies",
        "--db",
        f"sqlite:///{path}",
    )
    assert p.returncode == 0, p.stderr
    return path


def _read_commands(url: str, vid: str) -> list[list[str]]:
    return [
        ["audit", "list", "--db", url],
        ["audit", "verify", "--db", url],
        ["audit", "export", "--subject", "account:18", "--db", url],
        ["audit", "export", "--subject", "account:18", "--format", "html", "--db", url],
        ["explain", vid, "--db", url],
    ]


def _first_id(path: Path) -> str:
    listed = tosengine("audit", "list", "--db", f"sqlite:///{path}", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    return str(json.loads(listed.stdout.splitlines()[0])["id"])


def test_read_commands_leave_the_file_byte_identical(quickstart_db: Path) -> None:
    before = _digest(quickstart_db)
    for args in _read_commands(f"sqlite:///{quickstart_db}", _first_id(quickstart_db)):
        p = tosengine(*args)
        assert p.returncode == 0, (args, p.stderr)
        assert _digest(quickstart_db) == before, args


def test_read_commands_work_on_a_read_only_copy(quickstart_db: Path) -> None:
    """A copy whose file and folder nobody may write, read as a user the permissions bind (as root, the
    commands run as `nobody`: root is not bound by file permissions)."""
    as_user: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot read as a user the file permissions bind")
        as_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    vid = _first_id(quickstart_db)
    folder = Path(tempfile.mkdtemp(prefix="tosengine-ro-"))
    copy = folder / "audit.db"
    shutil.copy(quickstart_db, copy)
    copy.chmod(0o444)
    folder.chmod(0o555)  # nothing can be created beside it either (no -wal, no -shm)
    try:
        url = f"sqlite:///{copy}"
        for args in _read_commands(url, vid):
            p = subprocess.run(
                [*as_user, sys.executable, "-m", "tosengine", *args],
                capture_output=True,
                text=True,
                timeout=300,
                cwd=ROOT,
            )
            assert p.returncode == 0, (args, p.stderr)
            assert "Traceback" not in p.stderr
        assert sorted(x.name for x in folder.iterdir()) == ["audit.db"]
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder)


def test_a_reader_connection_refuses_to_write(quickstart_db: Path) -> None:
    """Whatever the permissions, a reader's connection is SQLite's own read-only open."""
    url = f"sqlite:///{quickstart_db}"
    eng = connect_readonly(url)
    try:
        with eng.connect() as c:
            assert c.execute(text("SELECT count(*) FROM violations")).scalar_one() > 0
            with pytest.raises(Exception, match=r"readonly|read-only|attempt to write"):
                c.execute(text("INSERT INTO meta (name, value) VALUES ('x', 'y')"))
    finally:
        eng.dispose()


def test_reading_never_creates_or_migrates(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    with pytest.raises(AuditError, match="no audit database"):
        connect_readonly(f"sqlite:///{missing}")
    assert not missing.exists()
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    for args in (["audit", "verify"], ["audit", "list"]):
        p = tosengine(*args, "--db", f"sqlite:///{empty}")
        assert p.returncode == 2 and "holds no tosengine audit log" in p.stderr, p.stderr
    assert empty.read_bytes() == b""


def test_a_reader_does_not_block_a_writer(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'busy.db'}"
    policies = policy_set("""
policy: p
clause: c
rules:
  - id: r
    match: event.type == "a"
""")
    with Engine(policies, audit=url) as engine:
        engine.process_many([ev(f"a{i}", "a", f"account:{i}", timedelta(seconds=i)) for i in range(100)])
    reader = connect_readonly(url)
    holding, done = threading.Event(), threading.Event()

    def hold_a_read() -> None:  # a long verify: one read transaction open for seconds
        with reader.connect() as c, c.begin():
            c.execute(text("SELECT count(*) FROM violations")).scalar_one()
            holding.set()
            done.wait(20)

    t = threading.Thread(target=hold_a_read)
    t.start()
    assert holding.wait(10)
    try:
        t0 = time.monotonic()
        log = AuditLog(url, batch_size=1_000_000)
        with Engine(policies, audit=log) as engine:
            engine.process_many([ev(f"b{i}", "a", f"account:{i}", timedelta(hours=1, seconds=i)) for i in range(100)])
        assert time.monotonic() - t0 < 10  # the writer committed while the read was open
    finally:
        done.set()
        t.join()
        reader.dispose()


def test_postgresql_readers_are_read_only() -> None:
    with pg_schema() as url:
        with Engine(
            policy_set('policy: p\nclause: c\nrules:\n  - id: r\n    match: event.type == "a"\n'), audit=url
        ) as engine:
            engine.process(ev("a1", "a", "account:1"))
        eng = connect_readonly(url)
        try:
            with eng.connect() as c:
                assert c.execute(text("SELECT count(*) FROM violations")).scalar_one() == 1
                with pytest.raises(Exception, match=r"read-only"):
                    c.execute(text("INSERT INTO meta (name, value) VALUES ('x', 'y')"))
        finally:
            eng.dispose()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("sqlite:////no/such/folder/audit.db", "cannot open the audit log at sqlite:////no/such/folder/audit.db"),
        (
            "postgresql+psycopg://tosengine:s3cret@127.0.0.1:1/none",
            "postgresql+psycopg://tosengine:***@127.0.0.1:1/none",
        ),
        ("mysql://root@localhost/x", "unsupported database 'mysql'"),
        ("not a url", "not a database URL"),
    ],
)
def test_a_bad_database_url_is_an_audit_error_naming_it(url: str, says: str) -> None:
    policies = policy_set('policy: p\nclause: c\nrules:\n  - id: r\n    match: event.type == "a"\n')
    with pytest.raises(AuditError) as info:
        Engine(policies, audit=url)
    assert says in str(info.value) and "s3cret" not in str(info.value)
