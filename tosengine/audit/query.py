"""Stage audit (reading): violations by subject, policy and time (the case file is audit/casefile.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from tosengine.audit.models import RepeatRow, ViolationRow
from tosengine.violation import format_time

__all__ = ["list_repeats", "list_violations", "repeat_json", "row_json"]


def _aware(t: datetime) -> datetime:
    """SQLite hands back naive UTC datetimes; PostgreSQL aware ones."""
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def row_json(row: ViolationRow) -> dict[str, Any]:
    """A stored violation in the JSON shape of DESIGN.md section 4, plus its place in the chain."""
    return {
        "id": row.id,
        "policy": row.policy,
        "rule": row.rule,
        "subject": row.subject,
        "key": row.key,
        "severity": row.severity,
        "action": row.action,
        "time": format_time(_aware(row.time)),
        "evidence": json.loads(row.evidence),
        "message": row.message,
        "clause": row.clause,
        "policy_version": row.policy_version,
        "causes": json.loads(row.causes),
        "detail": json.loads(row.detail),
        "recorded_at": format_time(_aware(row.recorded_at)),
        "seq": row.seq,
        "hash": row.hash,
    }


def list_violations(
    engine: Engine,
    *,
    subject: str | None = None,
    policy: str | None = None,
    since: datetime | None = None,
    limit: int | None = None,
) -> list[ViolationRow]:
    """Violations in chain order, filtered; all of them unless `limit` is given."""
    q = select(ViolationRow).order_by(ViolationRow.seq)
    if subject is not None:
        q = q.where(ViolationRow.subject == subject)
    if policy is not None:
        q = q.where(ViolationRow.policy == policy)
    if since is not None:
        q = q.where(ViolationRow.time >= since)
    if limit is not None:
        q = q.limit(limit)
    with Session(engine) as s:
        return list(s.scalars(q))


def repeat_json(row: RepeatRow) -> dict[str, Any]:
    """A stored repeat record, as `replay --format json` prints it, plus its place in its chain."""
    return {
        "id": row.id,
        "repeat_of": row.repeat_of,
        "policy": row.policy,
        "rule": row.rule,
        "subject": row.subject,
        "key": row.key,
        "count": row.count,
        "time": format_time(_aware(row.time)),
        "first": format_time(_aware(row.first)),
        "last": format_time(_aware(row.last)),
        "evidence": json.loads(row.evidence),
        "recorded_at": format_time(_aware(row.recorded_at)),
        "seq": row.seq,
        "hash": row.hash,
    }


def list_repeats(
    engine: Engine,
    *,
    subject: str | None = None,
    policy: str | None = None,
    since: datetime | None = None,
    limit: int | None = None,
    repeat_of: str | None = None,
) -> list[RepeatRow]:
    """Repeat records in chain order, filtered as list_violations filters (`since` on the window's end)."""
    q = select(RepeatRow).order_by(RepeatRow.seq)
    if subject is not None:
        q = q.where(RepeatRow.subject == subject)
    if policy is not None:
        q = q.where(RepeatRow.policy == policy)
    if since is not None:
        q = q.where(RepeatRow.time >= since)
    if repeat_of is not None:
        q = q.where(RepeatRow.repeat_of == repeat_of)
    if limit is not None:
        q = q.limit(limit)
    with Session(engine) as s:
        return list(s.scalars(q))
