"""`tosengine diff` output: a DiffReport -> a table for a terminal, or Markdown for a pull request comment."""

from __future__ import annotations

import json
from typing import Any

from tosengine.diff import CELLS, DiffReport, RuleDiff, SubjectDiff
from tosengine.text import printable
from tosengine.violation import format_time

__all__ = ["render_markdown", "render_table"]

_SIGN = {"added": "+", "removed": "-", "changed": "~"}


def _span(report: DiffReport) -> str:
    if report.first is None or report.last is None:
        return "no events"
    return f"{format_time(report.first)} .. {format_time(report.last)}"


def _side(name: str, side: dict[str, Any]) -> str:
    return f"{name:9}  {side['label']}  (ruleset {side['ruleset']}: {side['policies']} policies, {side['rules']} rules)"


def _notes(r: RuleDiff, arrow: str = "->") -> str:
    """What to know about the rule beside its counts: new or gone, and its mode where it is not enforce
    (`shadow`, or `enforce -> shadow` when the change moves it)."""
    notes = [] if r.in_base and r.in_candidate else ["new" if r.in_candidate else "gone"]
    b, c = r.modes["base"], r.modes["candidate"]
    if b and c and b != c:
        notes.append(f"{b} {arrow} {c}")
    elif "shadow" in (b, c):
        notes.append("shadow")
    return f" ({', '.join(notes)})" if notes else ""


def _changed_subjects(report: DiffReport, n: int) -> tuple[list[SubjectDiff], int]:
    moved = [s for s in report.subjects.values() if s.counts["added"] or s.counts["removed"] or s.counts["changed"]]
    moved.sort(key=lambda s: (-(s.counts["added"] + s.counts["removed"] + s.counts["changed"]), s.subject))
    return moved[:n], len(moved)


def _why(sample: dict[str, Any]) -> list[str]:
    """The rule's conditions as written, then the fields it read from the first evidence events."""
    why = sample["why"]
    out = [f"{field}: {text}" for field, text in why["conditions"]]
    for ev in why["read"]:
        fields = ", ".join(f"{p} = {json.dumps(v, ensure_ascii=False, default=str)}" for p, v in ev["fields"].items())
        if fields:
            out.append(f"read from {ev['event']}: {fields}")
    if why.get("more_events"):
        out.append(f"(and {why['more_events']} more evidence events)")
    return out


def _evidence(sample: dict[str, Any], limit: int = 5) -> str:
    ev = sample["evidence"]
    more = f", ... ({len(ev)} events)" if len(ev) > limit else ""
    return ", ".join(ev[:limit]) + more


def _what(cell: str, s: dict[str, Any], arrow: str = "->") -> str:
    if cell == "changed":
        b = s["base"]
        return f"{b['severity']} {b['action']} {arrow} {s['severity']} {s['action']}"
    return f"{s['severity']} {s['action']}"


# ---------------------------------------------------------------- table


def render_table(report: DiffReport, subjects: int) -> str:
    """The report for a terminal: header, a row per rule, the subjects that moved, then samples."""
    out = [
        f"{report.events} event(s), {report.rejected} rejected, {_span(report)}"
        + (f", clock moved to {format_time(report.until)}" if report.until else ""),
        _side("base", report.base),
        _side("candidate", report.candidate),
        "",
    ]
    rows = sorted(report.rules.values(), key=lambda r: r.rule)
    width = max([len(r.rule) for r in rows] + [5])
    head = "  ".join(f"{c.upper():>9}" for c in CELLS)
    out.append(f"{'RULE':{width}}  {head}  REPEATS")
    for r in rows:
        cells = "  ".join(f"{r.counts[c]:>9}" for c in CELLS)
        where = _notes(r)
        repeats = f"{r.repeats['base']} -> {r.repeats['candidate']}" if any(r.repeats.values()) else ""
        out.append(f"{r.rule:{width}}  {cells}  {repeats:7}{where}".rstrip())
    totals = report.totals
    out.append(f"{'total':{width}}  " + "  ".join(f"{totals[c]:>9}" for c in CELLS))
    shown, moved = _changed_subjects(report, subjects)
    if shown:
        out += ["", f"subjects with changes ({len(shown)} of {moved}):"]
        sw = max(len(printable(s.subject)) for s in shown)
        out.append(f"  {'SUBJECT':{sw}}  " + "  ".join(f"{c.upper():>9}" for c in CELLS))
        for s in shown:
            out.append(f"  {printable(s.subject):{sw}}  " + "  ".join(f"{s.counts[c]:>9}" for c in CELLS))
    samples = [(r, cell) for r in rows for cell in ("added", "removed", "changed") if r.samples[cell]]
    if samples:
        out += ["", "samples:"]
    for r, cell in samples:
        out.append(f"  {r.rule}  {cell} ({r.counts[cell]}):")
        for smp in r.samples[cell]:
            line = f"{_SIGN[cell]} {smp['subject']}  {smp['time']}  {_what(cell, smp)}  evidence {_evidence(smp)}"
            out.append(printable(f"    {line}  {smp['id']}"))
            out += [printable(f"        {why}") for why in _why(smp)]
    if not any(r.differs for r in rows):
        out += ["", "no differences"]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- markdown


def _md(text: Any) -> str:
    """Text safe in Markdown, in a table cell too: HTML and pipes escaped, on one line."""
    s = printable(str(text)).replace("\n", " ").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return s.replace("|", "\\|").replace("`", "'").replace("*", "\\*").replace("_", "\\_")


def _code(text: Any) -> str:
    """A code span (shown as is: no HTML inside it), safe in a table cell."""
    return "`" + printable(str(text)).replace("\n", " ").replace("`", "'").replace("|", "\\|") + "`"


def _num(counts: dict[str, int], cell: str) -> str:
    n = counts[cell]
    if cell in _SIGN and n:
        return f"**{_SIGN[cell]}{n}**"
    return str(n)


def render_markdown(report: DiffReport, subjects: int, tripped: list[str]) -> str:
    """The report as a pull request comment: a summary line, the rules that differ, details folded."""
    totals = report.totals
    differ = [r for r in sorted(report.rules.values(), key=lambda r: r.rule) if r.differs]
    b, c = report.base, report.candidate
    out = [
        "### tosengine diff",
        "",
        f"**{report.events} events** ({_md(_span(report))}"
        + (f", {report.rejected} rejected" if report.rejected else "")
        + f") · base {_code(b['label'])} (ruleset {_code(b['ruleset'])}) → candidate {_code(c['label'])} "
        f"(ruleset {_code(c['ruleset'])})",
        "",
        f"**{totals['added']} added**, **{totals['removed']} removed**, **{totals['changed']} changed** "
        f"({totals['base']} → {totals['candidate']} violations; {totals['both']} in both)",
    ]
    if tripped:
        out += ["", "**Failed:** " + ", ".join(_code(t) for t in tripped)]
    out.append("")
    if not differ:
        out.append("No rule records anything different over these events.")
    else:
        out.append("| rule | " + " | ".join(CELLS) + " | repeats |")
        out.append("|---|" + "---:|" * len(CELLS) + "---:|")
        for r in differ:
            note = _md(_notes(r, "→"))
            repeats = f"{r.repeats['base']} → {r.repeats['candidate']}" if any(r.repeats.values()) else ""
            cells = " | ".join(_num(r.counts, cell) for cell in CELLS)
            out.append(f"| {_code(r.rule)}{note} | {cells} | {repeats} |")
    same = len(report.rules) - len(differ)
    if same:
        out += ["", f"{same} other rule(s) record the same violations on both sides."]
    shown, moved = _changed_subjects(report, subjects)
    if shown:
        out += ["", f"<details><summary>Subjects with changes ({len(shown)} of {moved})</summary>", ""]
        out.append("| subject | " + " | ".join(CELLS) + " |")
        out.append("|---|" + "---:|" * len(CELLS))
        for s in shown:
            out.append(f"| {_code(s.subject)} | " + " | ".join(_num(s.counts, cell) for cell in CELLS) + " |")
        out += ["", "</details>"]
    if any(r.samples[cell] for r in differ for cell in _SIGN):
        out += ["", "<details><summary>Samples, and why they fired</summary>", ""]
        for r in differ:
            for cell in ("added", "removed", "changed"):
                if not r.samples[cell]:
                    continue
                out.append(f"**{_code(r.rule)}: {r.counts[cell]} {cell}**")
                out.append("")
                for smp in r.samples[cell]:
                    what = _md(_what(cell, smp, "→"))
                    out.append(
                        f"- {_code(smp['subject'])} at {_md(smp['time'])}: {what}; evidence {_code(_evidence(smp))}"
                    )
                    out += [f"  - {_code(line)}" for line in _why(smp)]
                out.append("")
        out.append("</details>")
    return "\n".join(out) + "\n"
