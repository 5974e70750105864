"""Tamper evidence to the last row: an authenticated head, anchored heads, policy texts and evidence
events checked, keyed logs that refuse keyless writers, and a PostgreSQL writer role that cannot
disable the append-only triggers."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from tests.support import ev, pg_schema, policy_set
from tosengine import Engine

ROOT = Path(__file__).resolve().parents[1]

POLICY = """
policy: logins
title: Logins
clause: You will not enter other people's credentials on third-party sites.
severity: high
action: restrict
rules:
  - id: offsite
    match: event.type == "account.login" and event.data.origin != "facebook.com"
"""

KEY = "a secret kept outside the database"


def _cli(*args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TOSENGINE_AUDIT_KEY"}
    if key is not None:
        env["TOSENGINE_AUDIT_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "tosengine", *args], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env
    )


def _replay(tmp: Path, url: str, first: int, n: int, key: str | None = None) -> subprocess.CompletedProcess[str]:
    policies = tmp / "policies"
    policies.mkdir(exist_ok=True)
    (policies / "logins.yaml").write_text(POLICY, encoding="utf-8")
    stream = tmp / f"events-{first}.jsonl"
    events = [
        ev(f"l{i}", "account.login", f"account:{i}", timedelta(minutes=i), origin="evil.example")
        for i in range(first, first + n)
    ]
    stream.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    return _cli("replay", str(stream), "--policies", str(policies), "--db", url, "--format", "json", key=key)


def _sql(url: str, *statements: str, params: dict[str, Any] | None = None) -> None:
    eng = create_engine(url)
    try:
        with eng.begin() as c:
            for s in statements:
                c.execute(text(s), params or {})
    finally:
        eng.dispose()


def _scalar(url: str, sql: str) -> Any:
    eng = create_engine(url)
    try:
        with eng.connect() as c:
            return c.execute(text(sql)).scalar()
    finally:
        eng.dispose()


def _cut_tail_and_rewrite_head(url: str, keep: int) -> None:
    """The attack of the issue: delete the rows after `keep`, then copy the last remaining row's count,
    seq and hash into chain_head, so that the chain and its head agree again."""
    unlock = (
        ["ALTER TABLE violations DISABLE TRIGGER USER"]
        if url.startswith("postgresql")
        else ["DROP TRIGGER IF EXISTS violations_no_delete"]
    )
    _sql(
        url,
        *unlock,
        f"DELETE FROM violations WHERE seq > {keep}",
        f"UPDATE chain_head SET count = {keep}, last_seq = {keep}, "
        f"hash = (SELECT hash FROM violations WHERE seq = {keep}) WHERE name = 'violations'",
    )


def _verify(url: str, *extra: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    return _cli("audit", "verify", "--db", url, *extra, key=key)


def test_with_the_key_deleting_the_newest_rows_and_rewriting_the_head_is_caught(tmp_path: Path, db_url: str) -> None:
    assert _replay(tmp_path, db_url, 0, 12, key=KEY).returncode == 0
    assert _verify(db_url, key=KEY).returncode == 0
    _cut_tail_and_rewrite_head(db_url, keep=9)
    result = _verify(db_url, key=KEY)
    assert result.returncode == 1
    assert "BROKEN at violations chain head" in result.stdout and "HMAC" in result.stdout


def test_without_a_key_a_head_kept_elsewhere_catches_the_same_attack(tmp_path: Path, db_url: str) -> None:
    assert _replay(tmp_path, db_url, 0, 6).returncode == 0
    head = _cli("audit", "head", "--db", db_url)
    assert head.returncode == 0 and head.stdout.startswith("tosengine-head:v1:violations=6:")
    assert _replay(tmp_path, db_url, 6, 6).returncode == 0  # the log grows after the anchor: still fine
    assert _verify(db_url, "--head", head.stdout.strip()).returncode == 0
    later = _cli("audit", "head", "--db", db_url).stdout.strip()
    _cut_tail_and_rewrite_head(db_url, keep=9)
    assert _verify(db_url).returncode == 0  # the chain alone cannot tell: that is what the anchor is for
    result = _verify(db_url, "--head", later)
    assert result.returncode == 1 and "rows at the end were deleted" in result.stdout
    # A head that names a different row at its count: the chain was rewritten before it.
    forged = later.replace("violations=12:", "violations=6:")
    result = _verify(db_url, "--head", forged)
    assert result.returncode == 1 and "anchored hash" in result.stdout
    bad = _verify(db_url, "--head", "not a head")
    assert bad.returncode == 2 and "audit head" in bad.stderr


def test_a_forged_policy_text_is_caught(tmp_path: Path, db_url: str) -> None:
    assert _replay(tmp_path, db_url, 0, 3).returncode == 0
    _sql(db_url, "UPDATE policy_versions SET text = replace(text, 'third-party', 'any')")
    result = _verify(db_url)
    assert result.returncode == 1
    assert "BROKEN at policy_versions logins sha256:" in result.stdout and "does not hash" in result.stdout


def test_a_changed_or_deleted_evidence_event_is_caught(tmp_path: Path, db_url: str) -> None:
    assert _replay(tmp_path, db_url, 0, 3).returncode == 0
    _sql(db_url, "UPDATE events SET body = replace(body, 'evil.example', 'facebook.com') WHERE event_id = 'l1'")
    result = _verify(db_url)
    assert result.returncode == 1
    assert "evidence event 'l1'" in result.stdout and "was changed" in result.stdout
    _sql(db_url, "DELETE FROM events WHERE event_id = 'l1'")
    result = _verify(db_url)
    assert result.returncode == 1 and "missing from the events table" in result.stdout


def test_a_keyed_log_refuses_a_writer_without_its_key(tmp_path: Path, db_url: str) -> None:
    assert _replay(tmp_path, db_url, 0, 3, key=KEY).returncode == 0
    for key in (None, "another key"):
        result = _replay(tmp_path, db_url, 3, 3, key=key)
        assert result.returncode == 2 and "nothing was written" in result.stderr, result.stderr
    # ...and a key cannot be added to a log written without one.
    plain = f"sqlite:///{tmp_path / 'plain.db'}"
    assert _replay(tmp_path, plain, 0, 3).returncode == 0
    result = _replay(tmp_path, plain, 3, 3, key=KEY)
    assert result.returncode == 2 and "written without TOSENGINE_AUDIT_KEY" in result.stderr
    listed = _cli("audit", "list", "--db", db_url, "--format", "json", key=KEY)
    assert len(listed.stdout.splitlines()) == 3  # the refused writers added nothing
    assert _verify(db_url, key=KEY).returncode == 0
    refused = _verify(db_url)
    assert refused.returncode == 1 and "set TOSENGINE_AUDIT_KEY" in refused.stdout


def test_the_writer_role_appends_but_cannot_lift_the_append_only_guard(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pg_schema() as owner_url:
        role = f"tos_writer_{uuid.uuid4().hex[:8]}"
        try:
            up = _cli("db", "upgrade", "--db", owner_url, "--writer-role", role)
            assert up.returncode == 0, up.stderr
            assert _cli("db", "upgrade", "--db", owner_url, "--writer-role", role).returncode == 0  # idempotent
            writer_url = make_url(owner_url).set(username=role).render_as_string(hide_password=False)
            assert _replay(tmp_path, writer_url, 0, 4).returncode == 0
            second = _replay(tmp_path, writer_url, 4, 4)  # and updates the chain head
            assert second.returncode == 0 and "checkpoints" not in second.stderr, second.stderr
            assert _verify(writer_url).returncode == 0
            # It drops the partition's superseded checkpoints, as the owner would: one is left.
            assert _scalar(owner_url, "SELECT count(*) FROM checkpoints") == 1
            # A larger batch of events goes in by COPY, which INSERT alone allows (no fallback to INSERT).
            caplog.set_level(logging.DEBUG, logger="tosengine")
            with Engine(policy_set(POLICY), audit=writer_url) as engine:
                engine.process_many(
                    ev(f"c{i}", "account.login", "account:9", timedelta(hours=2, seconds=i), origin="facebook.com")
                    for i in range(30)
                )
            assert "inserting them instead" not in caplog.text
            assert _scalar(owner_url, "SELECT count(*) FROM events WHERE event_id LIKE 'c%'") == 30
            for attack in (
                "DROP TRIGGER violations_append_only ON violations",
                "ALTER TABLE violations DISABLE TRIGGER USER",
                "TRUNCATE violations",
                "DELETE FROM violations WHERE seq > 4",
                "UPDATE violations SET subject = 'account:innocent'",
                "DELETE FROM events",
                "TRUNCATE checkpoints",
            ):
                with pytest.raises(DBAPIError) as caught:
                    _sql(writer_url, attack)
                # 42501: insufficient privilege; P0001: the append-only trigger's own refusal.
                assert getattr(caught.value.orig, "sqlstate", None) in ("42501", "P0001"), (attack, caught.value)
            assert _verify(writer_url).returncode == 0
        finally:
            _sql(owner_url, f"DROP OWNED BY {role}", f"DROP ROLE IF EXISTS {role}")


def test_a_writer_granted_before_checkpoints_were_pruned_still_writes_and_keeps_them(tmp_path: Path) -> None:
    """A writer role granted by an earlier tosengine has no DELETE on checkpoints. Its writes that carry
    a checkpoint go through (the older checkpoints kept, with a warning that says how to grant it),
    instead of every one being refused; granting it again lets it prune."""
    with pg_schema() as owner_url:
        role = f"tos_writer_{uuid.uuid4().hex[:8]}"
        try:
            assert _cli("db", "upgrade", "--db", owner_url, "--writer-role", role).returncode == 0
            _sql(owner_url, f"REVOKE DELETE ON checkpoints FROM {role}")  # as the earlier grant left it
            writer_url = make_url(owner_url).set(username=role).render_as_string(hide_password=False)
            for first in (0, 4):
                run = _replay(tmp_path, writer_url, first, 4)
                assert run.returncode == 0, run.stderr
                assert "--writer-role" in run.stderr
            kept = _scalar(owner_url, "SELECT count(*) FROM checkpoints")
            assert kept > 1
            assert _cli("db", "upgrade", "--db", owner_url, "--writer-role", role).returncode == 0
            run = _replay(tmp_path, writer_url, 8, 4)
            assert run.returncode == 0 and "--writer-role" not in run.stderr, run.stderr
            assert _scalar(owner_url, "SELECT count(*) FROM checkpoints") == 1
            assert _scalar(owner_url, "SELECT count(*) FROM violations") == 12  # nothing refused on the way
            assert _verify(writer_url).returncode == 0
        finally:
            _sql(owner_url, f"DROP OWNED BY {role}", f"DROP ROLE IF EXISTS {role}")


def test_a_writer_role_is_refused_on_sqlite(tmp_path: Path) -> None:
    result = _cli("db", "upgrade", "--db", f"sqlite:///{tmp_path / 'a.db'}", "--writer-role", "writer")
    assert result.returncode == 2 and "PostgreSQL feature" in result.stderr
