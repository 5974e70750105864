"""Shared test helpers (imported by test modules; fixtures live in conftest.py): policies from YAML text,
events, engine runs, and the databases the audit tests run on (SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tosengine import Engine, Violation, check_sources
from tosengine.audit import VerifyResult, verify_chain
from tosengine.audit.reader import AuditReader
from tosengine.events import parse_time
from tosengine.policy.model import CheckedPolicySet
from tosengine.policy.sources import Source

T0 = parse_time("2026-01-01T00:00:00Z")


def policy_set(*texts: str) -> CheckedPolicySet:
    """Check policy texts (named p0.yaml, p1.yaml, ...); fail the test with the diagnostics if invalid."""
    checked, diags = check_sources([Source(f"p{i}.yaml", t) for i, t in enumerate(texts)])
    if checked is None:
        pytest.fail("\n".join(d.render() for d in diags))
    return checked


def ev(eid: str, etype: str, subject: str, at: timedelta | str = timedelta(0), **data: Any) -> dict[str, Any]:
    """An event at T0 + `at` (or at an RFC 3339 time)."""
    when = at if isinstance(at, str) else (T0 + at).isoformat().replace("+00:00", "Z")
    out: dict[str, Any] = {"id": eid, "type": etype, "time": when, "subject": subject}
    if data:
        out["data"] = data
    return out


def run(policies: CheckedPolicySet, events: Iterable[dict[str, Any]], until: datetime | None = None) -> list[Violation]:
    """Every violation the engine reports for the stream (and an optional final clock advance)."""
    with Engine(policies) as engine:
        out = engine.process_many(events)
        if until is not None:
            out += engine.advance_to(until)
    return out


def summary(vs: Iterable[Violation]) -> list[tuple[str, str, tuple[str, ...]]]:
    """(rule, subject, evidence) of each violation, sorted: what most assertions compare."""
    return sorted((v.rule, v.subject, v.evidence) for v in vs)


def tosengine(*args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m tosengine ARGS` in a subprocess (this checkout's CLI), its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "tosengine", *args], input=stdin, capture_output=True, text=True, cwd=cwd, timeout=300
    )


# The shared conformance suite: beside the repo, or where TOSENGINE_CONFORMANCE says (CI's run against
# the native build works in a copy of the checkout elsewhere).
CONFORMANCE = Path(
    os.environ.get("TOSENGINE_CONFORMANCE") or Path(__file__).resolve().parents[1].parent / "shared" / "conformance"
)

PG_URL = os.environ.get("TOSENGINE_TEST_DATABASE_URL")
REQUIRE_PG = os.environ.get("TOSENGINE_REQUIRE_POSTGRES") == "1"


@contextmanager
def pg_schema() -> Iterator[str]:
    """A URL for a new, empty schema in the PostgreSQL test database, dropped afterwards."""
    if not PG_URL:
        if REQUIRE_PG:
            pytest.fail("TOSENGINE_REQUIRE_POSTGRES=1 but TOSENGINE_TEST_DATABASE_URL is not set")
        pytest.skip(
            "PostgreSQL tests need TOSENGINE_TEST_DATABASE_URL (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)"
        )
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as c:
        c.execute(text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as c:
            c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def verify(url: str) -> VerifyResult:
    """`audit verify` of the log at `url`."""
    with AuditReader(url) as log:
        return verify_chain(log.engine, log.key)


# Shared conformance cases (../shared/conformance) pinned by open issues: expected failures, strict, with
# the title as the reason (tests/test_conformance.py, tests/test_reference_conformance.py).
# None are pending now; a new case that fails until its issue lands goes here as `name: title`.
PENDING: dict[str, str] = {}
