"""Reading the audit log: violations by subject/policy/time, and the case file for one subject."""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from tosengine.audit.models import PolicyVersion, ViolationRow
from tosengine.audit.verify import VerifyResult
from tosengine.violation import format_time

__all__ = ["export_html", "export_json", "list_violations", "row_json"]


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


def _case(engine: Engine, subject: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    rows = list_violations(engine, subject=subject)
    out = []
    for r in rows:
        j = row_json(r)
        j["evidence_events"] = json.loads(r.evidence_events)
        out.append(j)
    versions = {r.policy_version for r in rows}
    with Session(engine) as s:
        texts = {pv.version: pv.text for pv in s.scalars(select(PolicyVersion)) if pv.version in versions}
    return out, texts


def export_json(engine: Engine, subject: str, verification: VerifyResult) -> dict[str, Any]:
    """The case file for one subject: violations, clauses, evidence events, policy texts, chain check."""
    violations, texts = _case(engine, subject)
    return {
        "subject": subject,
        "violations": violations,
        "policy_texts": texts,
        "chain": {"ok": verification.ok, "rows_checked": verification.rows, "result": verification.describe()},
    }


def export_html(engine: Engine, subject: str, verification: VerifyResult) -> str:
    """The case file as a self-contained HTML page a lawyer can read in a browser."""
    violations, _ = _case(engine, subject)
    e = html.escape
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Case file: {e(subject)}</title><style>body{{font:15px/1.45 system-ui,sans-serif;max-width:60em;"
        "margin:2em auto;padding:0 1em}table{border-collapse:collapse;width:100%}td,th{border:1px solid #ccc;"
        "padding:.3em .5em;text-align:left;vertical-align:top}pre{white-space:pre-wrap;font-size:13px;"
        "background:#f6f6f6;padding:.5em}.ok{color:#075}.bad{color:#b00}blockquote{border-left:3px solid #999;"
        "margin:.5em 0;padding-left:1em}</style></head><body>",
        f"<h1>Case file: {e(subject)}</h1>",
        f"<p class='{'ok' if verification.ok else 'bad'}'><strong>Audit log integrity:</strong> "
        f"{e(verification.describe())}</p>",
        f"<p>{len(violations)} violation(s) recorded against this subject.</p>",
        "<h2>Overview</h2><table><tr><th>#</th><th>time (UTC)</th><th>rule</th><th>action</th>"
        "<th>what happened</th></tr>",
        *(
            f"<tr><td><a href='#v{n}'>{n}</a></td><td>{e(v['time'])}</td><td>{e(v['rule'])}</td>"
            f"<td>{e(v['action'])}</td><td>{e(v['message'])}</td></tr>"
            for n, v in enumerate(violations, 1)
        ),
        "</table>",
    ]
    for n, v in enumerate(violations, 1):
        parts += [
            f"<h2 id='v{n}'>{n}. {e(v['rule'])} &mdash; {e(v['time'])}</h2>",
            "<table>",
            *(
                f"<tr><th>{e(k)}</th><td>{e(str(v[k]))}</td></tr>"
                for k in (
                    "id",
                    "policy",
                    "policy_version",
                    "severity",
                    "action",
                    "message",
                    "recorded_at",
                    "seq",
                    "hash",
                )
            ),
            f"<tr><th>escalation ladder step</th><td>{e(str(v['detail'].get('ladder_step') or '-'))}</td></tr>",
            f"<tr><th>evidence (event ids)</th><td>{e(', '.join(v['evidence']))}</td></tr>",
            "</table>",
            f"<h3>Terms</h3><blockquote>{e(v['clause'])}</blockquote>",
            "<h3>Evidence</h3>",
            *(f"<pre>{e(json.dumps(ev, indent=2, ensure_ascii=False))}</pre>" for ev in v["evidence_events"]),
        ]
    parts.append("</body></html>")
    return "\n".join(parts)
