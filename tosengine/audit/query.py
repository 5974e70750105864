"""Stage audit (reading): violations by subject, policy and time (the case file is audit/casefile.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, Select, select, tuple_
from sqlalchemy.orm import Session

from tosengine.audit.models import PolicyVersion, RepeatRow, ViolationRow
from tosengine.policy.check import check_sources
from tosengine.policy.sources import Source
from tosengine.violation import format_time

__all__ = ["MODES", "list_repeats", "list_violations", "repeat_json", "row_json", "tagged_rules"]

# What `--mode` selects: a violation's mode, or "all".
MODES = ("enforce", "shadow", "all")
# (rule id, policy version) pairs: a rule as one version of its policy file declared it.
RuleVersions = set[tuple[str, str]]


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
        "mode": row.mode,
    }


def tagged_rules(engine: Engine, tags: set[str]) -> RuleVersions:
    """The (rule, policy version) pairs whose rule carries one of `tags` in that version of its policy,
    read from the policy texts the audit log keeps (a rule's tags may change from version to version)."""
    out: RuleVersions = set()
    with Session(engine) as s:
        for pv in s.scalars(select(PolicyVersion)):
            checked, _ = check_sources([Source(pv.path, pv.text)])
            if checked is None:
                continue
            out |= {(r.id, pv.version) for r in (*checked.rules, *checked.disabled) if set(r.tags) & tags}
    return out


def _mode_filter(q: Select[Any], mode: str) -> Select[Any]:
    return q if mode == "all" else q.where(ViolationRow.mode == mode)


def list_violations(
    engine: Engine,
    *,
    subject: str | None = None,
    policy: str | None = None,
    since: datetime | None = None,
    limit: int | None = None,
    mode: str = "enforce",
    rules: RuleVersions | None = None,
) -> list[ViolationRow]:
    """Violations in chain order, filtered; all of them unless `limit` is given. `mode`: enforce (the
    default: what is acted on), shadow or all; `rules`: only these (rule, policy version) pairs."""
    q = _mode_filter(select(ViolationRow).order_by(ViolationRow.seq), mode)
    if rules is not None:
        q = q.where(tuple_(ViolationRow.rule, ViolationRow.policy_version).in_(sorted(rules)))
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
    mode: str = "all",
    rules: RuleVersions | None = None,
) -> list[RepeatRow]:
    """Repeat records in chain order, filtered as list_violations filters (`since` on the window's end;
    `mode` and `rules` are those of the violation each repeats)."""
    q = select(RepeatRow).order_by(RepeatRow.seq)
    if mode != "all" or rules is not None:
        of = _mode_filter(select(ViolationRow.id), mode)
        if rules is not None:
            of = of.where(tuple_(ViolationRow.rule, ViolationRow.policy_version).in_(sorted(rules)))
        q = q.where(RepeatRow.repeat_of.in_(of))
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
