"""Stage audit (reading): the case file of one subject, the document an enforcement lead and a lawyer read.

`build_case` gathers everything as data (the JSON export); `render_html` turns that same data into one
self-contained HTML page (no external CSS, scripts or fonts) with print CSS, so both formats carry the
same content. Every value that comes from events, policies or the log is escaped with `html.escape`.
"""

from __future__ import annotations

import difflib
import html
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from tosengine._version import __version__
from tosengine.audit.models import ChainHead, PolicyVersion, RepeatRow, ViolationRow
from tosengine.audit.query import list_repeats, list_violations, row_json
from tosengine.audit.verify import VerifyResult
from tosengine.errors import TosEngineError
from tosengine.events import parse_time
from tosengine.explain import explain_violation
from tosengine.policy.model import ACTIONS
from tosengine.policy.yaml import load_yaml
from tosengine.violation import format_time

__all__ = [
    "CASE_FILE_FORMAT",
    "build_case",
    "export_html",
    "export_json",
    "known_subjects",
    "render_html",
    "subject_is_recorded",
    "suggest_subjects",
]

CASE_FILE_FORMAT = 1  # bumped when the JSON shape changes incompatibly
CHAINS = ("violations", "repeats")


def _aware(t: datetime) -> datetime:
    """SQLite hands back naive UTC datetimes; PostgreSQL aware ones."""
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _utc(text: Any) -> Any:
    """A time as written in an event or fact, restated in UTC; anything unparsable is shown as it is."""
    if not isinstance(text, str):
        return text
    try:
        return format_time(parse_time(text))
    except ValueError:
        return text


# --- which subjects exist ------------------------------------------------------------------------


def subject_is_recorded(engine: Engine, subject: str) -> bool:
    """Whether any violation or repeat record is against `subject` (both lookups use an index)."""
    with Session(engine) as s:
        for model in (ViolationRow, RepeatRow):
            if s.scalars(select(model.seq).where(model.subject == subject).limit(1)).first() is not None:
                return True
    return False


def known_subjects(engine: Engine) -> list[str]:
    """Every subject with a violation or a repeat record, sorted."""
    with Session(engine) as s:
        found = set(s.scalars(select(ViolationRow.subject).distinct()))
        found |= set(s.scalars(select(RepeatRow.subject).distinct()))
    return sorted(found)


def suggest_subjects(engine: Engine, subject: str, n: int = 3) -> list[str]:
    """The recorded subjects closest to `subject`, best first (for "did you mean"): up to `n` close ones,
    else the single nearest, so a mistyped subject always gets a lead; [] only when nothing is recorded."""
    known = known_subjects(engine)
    return difflib.get_close_matches(subject, known, n=n) or difflib.get_close_matches(subject, known, n=1, cutoff=0)


# --- policy texts --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PolicyText:
    """One stored policy version and what the case file reads from its YAML."""

    policy: str
    version: str
    path: str
    text: str
    first_seen: datetime
    raw: dict[str, Any]

    @property
    def title(self) -> str:
        return str(self.raw.get("title") or "")

    @property
    def clause_ref(self) -> str:
        return str(self.raw.get("clause_ref") or "")

    @property
    def ladder(self) -> dict[str, Any] | None:
        lad = self.raw.get("ladder")
        return lad if isinstance(lad, dict) else None


def _raw(text: str) -> dict[str, Any]:
    """The policy file as plain values; a text that no longer parses gives {} (the case file still renders)."""
    try:
        value = load_yaml(text).value
    except TosEngineError:
        return {}
    return value if isinstance(value, dict) else {}


def _policy_texts(s: Session) -> list[_PolicyText]:
    return [
        _PolicyText(pv.policy, pv.version, pv.path, pv.text, _aware(pv.first_seen), _raw(pv.text))
        for pv in s.scalars(select(PolicyVersion).order_by(PolicyVersion.seq))
    ]


def _ladder_for(ladders: list[_PolicyText], recorded_at: datetime) -> _PolicyText | None:
    """The ladder policy version in force when a violation was recorded: the newest seen by then."""
    before = [p for p in ladders if p.first_seen <= recorded_at]
    if before:
        return max(before, key=lambda p: p.first_seen)
    return ladders[0] if ladders else None


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _ladder(v: dict[str, Any], lp: _PolicyText | None) -> dict[str, Any] | None:
    """The violation's ladder step and what it means (docs/semantics.md, "The escalation ladder")."""
    step = v["detail"].get("ladder_step")
    if step is None:
        return None
    if lp is None or lp.ladder is None:
        return {"step": step, "meaning": f"ladder step {step} (the policy declaring the ladder is not in the log)"}
    lad = lp.ladder
    steps = [str(x) for x in lad.get("steps") or []]
    within = str(lad.get("within", ""))
    counts = lad.get("counts")
    if isinstance(counts, str):  # the name of one of the ladder policy's lists
        counts = (lp.raw.get("lists") or {}).get(counts)
    counted_policies = [str(x) for x in counts] if isinstance(counts, list) else None
    counted = counted_policies is None or v["policy"] in counted_policies
    subject = v["subject"]
    if counted and step >= 1:
        last = step >= len(steps)
        at_least = steps[step - 1] if step - 1 < len(steps) else (steps[-1] if steps else "?")
        meaning = (
            f"step {step} of {len(steps)}: this is {subject}'s {_ordinal(step)}"
            + (" or later" if last else "")
            + f" counted violation within {within}, so it is recorded at least as {at_least}"
            + (" (the last step repeats)" if last else "")
            + f"; it was recorded as {v['action']}."
        )
    elif counted:
        meaning = f"step {step}: not counted on the ladder."
    else:
        before = "no counted violation" if step == 0 else f"{step} counted violation(s)"
        meaning = (
            f"step {step}: {v['policy']} does not climb the ladder; {subject} had {before} within {within} "
            f"before it (capped at {len(steps)}), and it keeps its rule's action, {v['action']}."
        )
    return {
        "step": step,
        "steps": steps,
        "within": within,
        "counted": counted,
        "counts": counted_policies,
        "policy": lp.policy,
        "policy_version": lp.version,
        "meaning": meaning,
    }


# --- the case ------------------------------------------------------------------------------------


def _value(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return "<absent>"
        obj = obj[part]
    return obj


def _evidence_row(ev: dict[str, Any], fields: list[tuple[str, Any]]) -> dict[str, Any]:
    return {
        "time": _utc(ev.get("time")),
        "type": ev.get("type"),
        "source": ev.get("source", ""),
        "id": ev.get("id"),
        "subject": ev.get("subject"),
        "fields": [{"path": p, "value": val} for p, val in fields],
    }


def _explanation(engine: Engine, v: dict[str, Any], in_case: set[str], ladder: dict[str, Any] | None) -> dict[str, Any]:
    """What `tosengine explain` shows, as data, with the facts linked to violations in this case file."""
    try:
        x = explain_violation(engine, v["id"])
    except TosEngineError as exc:  # e.g. the policy version is missing: say so, keep the rest of the case
        return {
            "error": str(exc),
            "ladder": ladder,
            "deadline": _utc(v["detail"].get("deadline")),
            "evidence": [_evidence_row(ev, []) for ev in v["evidence_events"]],
        }
    facts = []
    for f in x.facts:
        fid = str(f.get("id", ""))
        linked = f.get("type") == "violation" and fid in in_case
        facts.append({**f, "time": _utc(f.get("time")), "anchor": f"v-{fid}" if linked else None})
    return {
        "rule_kind": x.rule_kind,
        "conditions": [{"field": k, "text": t} for k, t in x.conditions],
        "evidence": [_evidence_row(ev, fields) for ev, fields in x.evidence],
        "facts": facts,
        "deadline": _utc(v["detail"].get("deadline")),
        "fulfilment": x.fulfilment,
        "ladder": ladder,
    }


def _repeat_json(r: RepeatRow, paths: list[str]) -> dict[str, Any]:
    events: list[dict[str, Any]] = json.loads(r.evidence_events)
    first, last = format_time(_aware(r.first)), format_time(_aware(r.last))
    times = "time" if r.count == 1 else "times"
    return {
        "id": r.id,
        "anchor": f"r-{r.id}",
        "repeat_of": r.repeat_of,
        "policy": r.policy,
        "rule": r.rule,
        "subject": r.subject,
        "key": r.key,
        "count": r.count,
        "time": format_time(_aware(r.time)),
        "first": first,
        "last": last,
        "summary": f"and {r.count} more {times} between {first} and {last}",
        "evidence": json.loads(r.evidence),
        "evidence_table": [_evidence_row(ev, [(p, _value(ev, p)) for p in paths]) for ev in events],
        "evidence_events": events,
        "recorded_at": format_time(_aware(r.recorded_at)),
        "seq": r.seq,
        "hash": r.hash,
    }


def _chain(s: Session, verification: VerifyResult) -> dict[str, Any]:
    heads = []
    for name in CHAINS:
        h = s.get(ChainHead, name)
        heads.append(
            {"name": name, "count": h.count, "last_seq": h.last_seq, "hash": h.hash}
            if h is not None
            else {"name": name, "count": 0, "last_seq": None, "hash": None}
        )
    return {
        "ok": verification.ok,
        "result": verification.describe(),
        "rows_checked": verification.rows,
        "repeats_checked": verification.repeats,
        "heads": heads,
    }


def build_case(
    engine: Engine,
    subject: str,
    verification: VerifyResult,
    *,
    produced_at: datetime | None = None,
    mode: str = "enforce",
) -> dict[str, Any]:
    """The case file of `subject` as data: header, timeline, violations with their explanation, repeats.
    `mode`: the violations it holds, enforce (the default: what was acted on), shadow or all."""
    rows = list_violations(engine, subject=subject, mode=mode)
    repeat_rows = list_repeats(engine, subject=subject, mode=mode)
    with Session(engine) as s:
        texts = _policy_texts(s)
        chain = _chain(s, verification)
    by_version = {(p.policy, p.version): p for p in texts}
    ladders = [p for p in texts if p.ladder is not None]
    in_case = {r.id for r in rows}
    involved: dict[tuple[str, str], str] = {}  # (policy, version) -> why it is in the case file

    violations = []
    for r in rows:
        v = row_json(r)
        v["anchor"] = f"v-{r.id}"
        v["engine_version"] = r.engine_version
        v["evidence_events"] = json.loads(r.evidence_events)
        pt = by_version.get((r.policy, r.policy_version))
        v["title"] = pt.title if pt else ""
        v["clause_ref"] = pt.clause_ref if pt else ""
        involved.setdefault((r.policy, r.policy_version), "violated")
        lp = _ladder_for(ladders, _aware(r.recorded_at)) if v["detail"].get("ladder_step") is not None else None
        if lp is not None:
            involved.setdefault((lp.policy, lp.version), "escalation ladder")
        v["explanation"] = _explanation(engine, v, in_case, _ladder(v, lp))
        v["repeats"] = []
        violations.append(v)
    by_id = {v["id"]: v for v in violations}

    repeats = []
    for rr in repeat_rows:
        owner = by_id.get(rr.repeat_of)
        # A repeat's events are the items that completed the rule: read the paths the rule read of its
        # violation's completing (last) evidence event.
        ev = owner["explanation"].get("evidence", []) if owner else []
        paths = [f["path"] for f in ev[-1]["fields"]] if ev else []
        rj = _repeat_json(rr, paths)
        rj["repeat_of_anchor"] = owner["anchor"] if owner else None
        repeats.append(rj)
        if owner is not None:
            owner["repeats"].append(rj)

    timeline: list[tuple[datetime, int, dict[str, Any]]] = []
    for r, v in zip(rows, violations, strict=True):
        timeline.append(
            (
                _aware(r.time),
                r.seq,
                {
                    "kind": "violation",
                    "time": v["time"],
                    "id": v["id"],
                    "anchor": v["anchor"],
                    "rule": v["rule"],
                    "severity": v["severity"],
                    "action": v["action"],
                    "what": v["message"],
                },
            )
        )
    for rr, rj in zip(repeat_rows, repeats, strict=True):
        timeline.append(
            (
                _aware(rr.first),
                rr.seq,
                {
                    "kind": "repeat",
                    "time": rj["first"],
                    "id": rj["id"],
                    "anchor": rj["anchor"],
                    "rule": rj["rule"],
                    "repeat_of": rj["repeat_of"],
                    "repeat_of_anchor": rj["repeat_of_anchor"],
                    "severity": "",
                    "action": "",
                    "what": f"{rj['summary']} (the once_per window ended {rj['time']})",
                },
            )
        )
    # Violations before repeat records at the same instant: a repeat follows what it repeats.
    timeline.sort(key=lambda t: (t[0], t[2]["kind"] == "repeat", t[1]))

    policy_versions = [
        {
            "policy": p.policy,
            "version": p.version,
            "path": p.path,
            "title": p.title,
            "clause_ref": p.clause_ref,
            "first_seen": format_time(p.first_seen),
            "role": involved[(p.policy, p.version)],
            "text": p.text,
        }
        for p in texts
        if (p.policy, p.version) in involved
    ]
    actions = [v["action"] for v in violations if v["action"] in ACTIONS]
    times = [t for t, _, _ in timeline] + [_aware(rr.last) for rr in repeat_rows]
    return {
        "case_file": CASE_FILE_FORMAT,
        "subject": subject,
        "mode": mode,
        "produced_at": format_time((produced_at or datetime.now(UTC)).replace(microsecond=0)),
        "engine_version": __version__,
        "times": "All times are UTC (RFC 3339, Z).",
        "chain": chain,
        "policy_versions": policy_versions,
        "summary": {
            "violations": len(violations),
            "repeat_records": len(repeats),
            "repeated_matches": sum(r["count"] for r in repeats),
            "first": format_time(min(times)) if times else None,
            "last": format_time(max(times)) if times else None,
            "strongest_action": max(actions, key=ACTIONS.index) if actions else None,
        },
        "timeline": [entry for _, _, entry in timeline],
        "violations": violations,
        "repeats": repeats,
    }


def export_json(
    engine: Engine,
    subject: str,
    verification: VerifyResult,
    *,
    produced_at: datetime | None = None,
    mode: str = "enforce",
) -> dict[str, Any]:
    """The case file for one subject as data (`audit export --format json`)."""
    return build_case(engine, subject, verification, produced_at=produced_at, mode=mode)


def export_html(
    engine: Engine,
    subject: str,
    verification: VerifyResult,
    *,
    produced_at: datetime | None = None,
    mode: str = "enforce",
) -> str:
    """The case file as one self-contained HTML page (`audit export --format html`)."""
    return render_html(build_case(engine, subject, verification, produced_at=produced_at, mode=mode))


# --- HTML ----------------------------------------------------------------------------------------

CSS = """
:root{color-scheme:light}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;max-width:64em;margin:2em auto;padding:0 1em;
color:#111}
h1{font-size:1.7em;margin:.2em 0}h2{font-size:1.3em;margin-top:1.6em;border-bottom:2px solid #333}
h3{font-size:1.05em;margin:1.2em 0 .4em}
table{border-collapse:collapse;width:100%;margin:.4em 0}
td,th{border:1px solid #bbb;padding:.25em .5em;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{background:#f0f0f0;font-weight:600}
table.kv th{width:13em}
table.timeline td:nth-child(1),table.timeline td:nth-child(2),table.timeline td:nth-child(4){white-space:nowrap}
code,pre,.mono{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:13px}
pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#f6f6f6;padding:.5em;margin:.3em 0}
blockquote{border-left:4px solid #777;margin:.5em 0;padding:.2em 1em;background:#fafafa}
.ok{color:#075}.bad{color:#b00;font-weight:700}
.note{color:#444;font-size:.92em}
.utc{font-weight:600}
.repeat{background:#fff8e1;border-left:4px solid #e0a800;padding:.3em .8em;margin:.8em 0}
.repeat>p:first-child{font-weight:700}
details{margin:.2em 0}summary{cursor:pointer;color:#225}
tr.kind-repeat td{background:#fff8e1}
@media print{
  @page{margin:16mm 14mm}
  body{max-width:none;margin:0;padding:0;font-size:11pt}
  a{color:inherit;text-decoration:underline}
  section.violation,section.appendix{break-before:page;page-break-before:always}
  h1,h2,h3,summary{break-after:avoid-page;page-break-after:avoid}
  tr,blockquote,pre,.repeat>p{break-inside:avoid;page-break-inside:avoid}
  thead{display:table-header-group}
  th,tr.kind-repeat td,.repeat,pre,blockquote{-webkit-print-color-adjust:exact;print-color-adjust:exact}
}
"""


def _e(value: Any) -> str:
    """Escape anything for HTML text or a quoted attribute."""
    return html.escape(value if isinstance(value, str) else str(value), quote=True)


def _j(value: Any) -> str:
    """A value as compact JSON, escaped (what the rule read, as the engine saw it)."""
    return _e(json.dumps(value, ensure_ascii=False))


def _link(href: str | None, text: str) -> str:
    """A link to an anchor in this page or to an http(s) address; anything else stays plain text."""
    if href and (href.startswith("#") or href.startswith(("https://", "http://"))):
        return f"<a href='{_e(href)}'>{_e(text)}</a>"
    return _e(text)


def _table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    """A table; the cells are HTML already (escaped by the caller)."""
    c = f" class='{cls}'" if cls else ""
    h = "".join(f"<th>{_e(x)}</th>" for x in head)
    body = "".join("<tr>" + "".join(f"<td>{x}</td>" for x in r) + "</tr>" for r in rows)
    return f"<table{c}><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def _kv(rows: list[tuple[str, str]]) -> str:
    """A two-column table of (label, HTML)."""
    return "<table class='kv'>" + "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def _fields(fields: list[dict[str, Any]]) -> str:
    if not fields:
        return "<span class='note'>none</span>"
    return "<br>".join(f"<code>{_e(f['path'])} = {_j(f['value'])}</code>" for f in fields)


def _evidence(table: list[dict[str, Any]], events: list[dict[str, Any]]) -> str:
    """The evidence table, then each event's raw JSON collapsed: the table is what a reader reads first."""
    rows = [
        [_e(r["time"]), _e(r["type"]), _e(r["source"] or "-"), f"<code>{_e(r['id'])}</code>", _fields(r["fields"])]
        for r in table
    ]
    out = [_table(["time (UTC)", "type", "source", "id", "fields the rule read"], rows, "evidence")]
    out += [
        f"<details class='raw'><summary>raw event <code>{_e(ev.get('id'))}</code> (JSON as stored; "
        "sensitive fields masked, times as received)</summary>"
        f"<pre>{_e(json.dumps(ev, indent=2, ensure_ascii=False, sort_keys=True))}</pre></details>"
        for ev in events
    ]
    return "\n".join(out)


def _reads_summary(evidence: list[dict[str, Any]]) -> list[list[str]]:
    """(field, value, in how many evidence events) rows: what decided the match, without a row per event."""
    seen: dict[tuple[str, str], list[str]] = {}
    for r in evidence:
        for f in r["fields"]:
            seen.setdefault((f["path"], json.dumps(f["value"], ensure_ascii=False)), []).append(str(r["id"]))
    rows = []
    for (path, value), ids in seen.items():
        where = f"all {len(evidence)} evidence events" if len(ids) == len(evidence) > 1 else ", ".join(ids)
        rows.append([f"<code>{_e(path)}</code>", f"<code>{_e(value)}</code>", _e(where)])
    return rows


def _facts(facts: list[dict[str, Any]]) -> str:
    rows = []
    for f in facts:
        fid = str(f.get("id", ""))
        if f.get("anchor"):
            ref = _link("#" + str(f["anchor"]), f"violation {fid}") + " (in this case file)"
        elif f.get("type") == "violation":
            ref = f"<code>{_e(fid)}</code> <span class='note'>(not in this case file)</span>"
        else:
            ref = f"<code>{_e(fid)}</code>"
        data = f"<code>{_j(f['data'])}</code>" if f.get("data") else ""
        rows.append(
            [_e(f.get("time", "")), _e(f.get("type", "")), _e(f.get("rule", "")), _e(f.get("subject", "")), data, ref]
        )
    return _table(["time (UTC)", "fact", "from rule", "about", "data", "id"], rows, "facts")


def _violation(n: int, v: dict[str, Any]) -> str:
    x = v["explanation"]
    title = v["title"] or v["policy"]
    meta = [
        ("violation id", f"<code>{_e(v['id'])}</code>"),
        ("time (UTC)", _e(v["time"])),
        ("policy", f"{_e(title)} (<code>{_e(v['policy'])}</code>, version <code>{_e(v['policy_version'])}</code>)"),
        ("rule", f"<code>{_e(v['rule'])}</code>" + (f" ({_e(x['rule_kind'])})" if x.get("rule_kind") else "")),
        ("subject", _e(v["subject"])),
        ("key", _e(v["key"])),
        ("severity", _e(v["severity"])),
        ("action", f"<strong>{_e(v['action'])}</strong>"),
        *([("mode", "<strong>shadow</strong>: recorded, acted on by no one")] if v.get("mode") == "shadow" else []),
        ("message", _e(v["message"])),
        ("recorded at (UTC)", _e(v["recorded_at"]) + f" by tosengine {_e(v['engine_version'])}"),
        ("place in the audit log", f"#{_e(v['seq'])}, hash <code>{_e(v['hash'])}</code>"),
    ]
    out = [
        f"<section class='violation' id='{_e(v['anchor'])}'>",
        f"<h2>{n}. {_e(title)} &mdash; {_e(v['time'])}</h2>",
        _kv(meta),
        "<h3>The terms</h3>",
        f"<blockquote class='clause'>{_e(v['clause'])}</blockquote>",
        "<p>Clause: "
        + (_link(v["clause_ref"], v["clause_ref"]) if v["clause_ref"] else "<span class='note'>no reference</span>")
        + "</p>",
    ]
    if x.get("error"):
        out.append(f"<p class='bad'>The explanation is not available: {_e(x['error'])}</p>")
    else:
        out += [
            "<h3>The rule's condition</h3>",
            f"<p class='note'>As written in <code>{_e(v['policy'])}</code> version "
            f"<code>{_e(v['policy_version'])}</code> (a {_e(x['rule_kind'])} rule).</p>",
            _table(["", "condition"], [[_e(c["field"]), f"<code>{_e(c['text'])}</code>"] for c in x["conditions"]]),
        ]
    out.append("<h3>Why it fired</h3>")
    why = []
    if not x.get("error"):
        fired = {
            "match": "The rule's condition held for the evidence event below.",
            "threshold": "The count was reached within the window by the evidence events below.",
            "sequence": "Each step of the sequence was matched, in order, by the evidence below.",
            "expect": "The obligation opened by the evidence event below was not fulfilled by its deadline.",
        }
        why.append(f"<p>{_e(fired.get(x['rule_kind'], 'The rule matched the evidence below.'))}</p>")
    if x.get("deadline"):
        why.append(f"<p><strong>Deadline:</strong> {_e(x['deadline'])}</p>")
    if x.get("fulfilment"):
        why.append(f"<pre class='fulfilment'>{_e(x['fulfilment'])}</pre>")
    lad = x.get("ladder")
    if lad:
        steps = " &rarr; ".join(_e(s) for s in lad.get("steps", []))
        why.append(
            f"<p><strong>Escalation ladder step {_e(lad['step'])}:</strong> {_e(lad['meaning'])}"
            + (f" <span class='note'>(steps: {steps}; policy <code>{_e(lad['policy'])}</code>)</span>" if steps else "")
            + "</p>"
        )
    reads = _reads_summary(x.get("evidence") or [])
    if reads:
        why.append("<p>The fields the rule read, with their values (each event's are in the evidence table):</p>")
        why.append(_table(["field", "value", "in"], reads, "reads"))
    if x.get("facts"):
        why.append("<p>Derived facts in the chain (the facts this violation rests on):</p>")
        why.append(_facts(x["facts"]))
    out += why
    out += ["<h3>Evidence</h3>", _evidence(x.get("evidence") or [], v["evidence_events"])]
    for r in v["repeats"]:
        out.append(_repeat(r))
    out.append("</section>")
    return "\n".join(out)


def _repeat(r: dict[str, Any]) -> str:
    of = "violation " + _e(r["repeat_of"])
    if r.get("repeat_of_anchor"):
        of = _link("#" + r["repeat_of_anchor"], "violation " + r["repeat_of"])
    return "\n".join(
        [
            f"<div class='repeat' id='{_e(r['anchor'])}'>",
            f"<p>{_e(r['summary'])}</p>",
            f"<p class='note'>Repeat record <code>{_e(r['id'])}</code> of {of}: "
            f"the rule's once_per window ended {_e(r['time'])}; matches within it are counted here, not recorded as "
            f"violations. Recorded {_e(r['recorded_at'])}, #{_e(r['seq'])} in the repeat chain, hash "
            f"<code>{_e(r['hash'])}</code>.</p>",
            "<h4>Evidence of the repeats</h4>",
            _evidence(r["evidence_table"], r["evidence_events"]),
            "</div>",
        ]
    )


def _header(case: dict[str, Any]) -> str:
    chain = case["chain"]
    status = "ok" if chain["ok"] else "BROKEN"
    heads = "<br>".join(
        f"{_e(h['name'])}: {_e(h['count'])} row(s), head hash <code>{_e(h['hash'])}</code>"
        if h["hash"]
        else f"{_e(h['name'])}: no rows (no chain head)"
        for h in chain["heads"]
    )
    s = case["summary"]
    span = f"{_e(s['first'])} to {_e(s['last'])}" if s["first"] else "-"
    rows = [
        ("subject", f"<strong>{_e(case['subject'])}</strong>"),
        ("produced at (UTC)", _e(case["produced_at"])),
        ("engine version", f"tosengine {_e(case['engine_version'])}"),
        (
            "chain check",
            f"<span class='{'ok' if chain['ok'] else 'bad'}'>{status}</span>: {_e(chain['result'])}",
        ),
        ("chain heads", heads),
        (
            "recorded against the subject",
            f"{_e(s['violations'])} violation(s), {_e(s['repeat_records'])} repeat record(s) covering "
            f"{_e(s['repeated_matches'])} further match(es), from {span}",
        ),
        ("strongest action", _e(s["strongest_action"] or "-")),
        *(
            [("violations shown", "enforce and shadow (shadow: recorded, acted on by no one)")]
            if case.get("mode") == "all"
            else [("violations shown", "shadow only: recorded, acted on by no one")]
            if case.get("mode") == "shadow"
            else []
        ),
    ]
    pv = [
        [
            f"<code>{_e(p['policy'])}</code>",
            _e(p["title"]),
            f"<code>{_e(p['version'])}</code>",
            f"<code>{_e(p['path'])}</code>",
            _e(p["role"]),
        ]
        for p in case["policy_versions"]
    ]
    return "\n".join(
        [
            "<header id='header'>",
            f"<h1>Case file: {_e(case['subject'])}</h1>",
            f"<p class='utc'>{_e(case['times'])}</p>",
            _kv(rows),
            "<h2 id='policies'>Policy versions involved</h2>",
            _table(["policy", "title", "version", "path", "why"], pv, "policies"),
            "</header>",
        ]
    )


def _timeline(case: dict[str, Any]) -> str:
    number = {v["id"]: n for n, v in enumerate(case["violations"], 1)}
    rows = []
    for t in case["timeline"]:
        what = _e(t["what"])
        if t["kind"] == "repeat" and t.get("repeat_of_anchor"):
            n = number[t["repeat_of"]]
            what += " &mdash; repeats " + _link("#" + t["repeat_of_anchor"], f"violation {n}")
            label = f"repeats of {n}"
        else:
            label = f"violation {number[t['id']]}" if t["kind"] == "violation" else t["kind"]
        rows.append(
            [
                _e(t["time"]),
                _link("#" + t["anchor"], label),
                f"<code>{_e(t['rule'])}</code>",
                _e(t["action"] or "-"),
                what,
            ]
        )
    table = _table(["time (UTC)", "record", "rule", "action", "what happened"], rows, "timeline")
    return "\n".join(
        [
            "<section id='timeline'>",
            "<h2>Timeline</h2>",
            "<p class='note'>Everything recorded against the subject, by time (a repeat record at its first "
            "repeated match).</p>",
            table,
            "</section>",
        ]
    )


def render_html(case: dict[str, Any]) -> str:
    """The case file data as one self-contained HTML page (inline CSS, no scripts, everything escaped)."""
    parts = [
        "<!doctype html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>Case file: {_e(case['subject'])}</title>",
        f"<style>{CSS}</style>",
        "</head><body>",
        _header(case),
        _timeline(case),
    ]
    in_case = {v["id"] for v in case["violations"]}
    parts += [_violation(n, v) for n, v in enumerate(case["violations"], 1)]
    orphans = [r for r in case["repeats"] if r["repeat_of"] not in in_case]
    if orphans:
        parts += [
            "<section class='violation' id='other-repeats'><h2>Repeat records of violations not in this file</h2>",
            *(_repeat(r) for r in orphans),
            "</section>",
        ]
    parts += [
        "<section class='appendix' id='policy-texts'>",
        "<h2>Appendix: the policy texts</h2>",
        "<p class='note'>The exact file text of each policy version involved, as stored in the audit log.</p>",
        *(
            f"<details><summary><code>{_e(p['policy'])}</code> version <code>{_e(p['version'])}</code> "
            f"({_e(p['path'])})</summary><pre>{_e(p['text'])}</pre></details>"
            for p in case["policy_versions"]
        ),
        "</section>",
        f"<footer><p class='note'>Produced {_e(case['produced_at'])} by tosengine {_e(case['engine_version'])}. "
        f"{_e(case['times'])}</p></footer>",
        "</body></html>",
    ]
    return "\n".join(parts)
