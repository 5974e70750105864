"""`tosengine eval [EVENT]`: one event against the policies, rule by rule: what matched, and why not."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from tosengine.cli.common import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE, Command, policies_dir, printable
from tosengine.cli.rules import tag_arg
from tosengine.errors import EventError
from tosengine.events import EventRecord, parse_record
from tosengine.policy.check import check_sources
from tosengine.policy.sources import read_paths
from tosengine.trace import RuleTrace, trace_event
from tosengine.violation import format_time

__all__ = ["EVAL"]


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "event",
        nargs="?",
        default="-",
        metavar="EVENT",
        help="the event: its JSON text, a file holding it, or - (the default) to read it from stdin",
    )
    p.add_argument(
        "--policies", default=None, help="policy directory or file (default: $TOSENGINE_POLICIES or ./policies)"
    )
    tag_arg(p, "the rules")
    p.add_argument("--matched", action="store_true", help="show only the rules that took the event")
    p.add_argument("--format", choices=("text", "json"), default="text", help="text, or one JSON document")


def _read_event(arg: str) -> str:
    if arg == "-":
        return sys.stdin.read()
    if not arg.lstrip().startswith("{") and Path(arg).is_file():
        return Path(arg).read_text(encoding="utf-8")
    return arg


def _value(v: Any) -> str:
    return "absent" if v is None else json.dumps(v, ensure_ascii=False, default=str)


def _text(record: EventRecord, traces: list[RuleTrace], where: str, out: TextIO) -> None:
    head = f"event {record.id}  {record.type}  {record.subject}  {format_time(record.time)}"
    out.write(printable(head) + f"\n{len(traces)} rule(s) in {where}\n\n")
    width = max((len(t.rule.id) for t in traces), default=4)
    for t in traces:
        label = "MATCHED" if t.matched else t.outcome
        mode = " [shadow]" if t.rule.mode == "shadow" and t.rule.enabled else ""
        out.write(printable(f"{label:10} {t.rule.id:{width}}  ({t.rule.kind}){mode}") + "\n")
        out.write(printable(f"{'':10} {t.detail}") + "\n")
        if t.failure is not None:
            out.write(printable(f"{'':10} failed: {t.failure.condition}") + "\n")
            for path, v in t.failure.to_json()["values"].items():
                out.write(printable(f"{'':10}   {path} = {_value(v)}") + "\n")
        for v in t.violations:
            out.write(printable(f"{'':10} message: {v.message}") + "\n")
        for note in t.notes:
            out.write(printable(f"{'':10} also: {note}") + "\n")
    matched = sum(t.matched for t in traces)
    out.write(f"\n{matched} of {len(traces)} rule(s) took the event\n")


def _run(args: argparse.Namespace, out: TextIO) -> int:
    where = policies_dir(args.policies)
    try:
        files = read_paths([where])
    except FileNotFoundError as exc:
        print(f"tosengine: {exc}", file=sys.stderr)
        return EXIT_USAGE
    checked, diags = check_sources(files.sources, files.schemas, partial=files.partial)
    if checked is None:
        for d in diags:
            print(d.render() + "\n", file=sys.stderr)
        return EXIT_USAGE
    try:
        record = parse_record(_read_event(args.event).strip())
    except EventError as exc:
        print(printable(f"tosengine: not a valid event: {exc}"), file=sys.stderr)
        return EXIT_FINDINGS
    traces, _ = trace_event(checked, record)
    if args.tags:
        traces = [t for t in traces if set(t.rule.tags) & set(args.tags)]
    if args.matched:
        traces = [t for t in traces if t.matched]
    if args.format == "json":
        doc = {"event": record.id, "source": record.source, "rules": [t.to_json() for t in traces]}
        out.write(json.dumps(doc, ensure_ascii=False, default=str) + "\n")
    else:
        _text(record, traces, where, out)
    return EXIT_OK


EVAL = Command(
    "eval",
    "one event against the policies: what each rule made of it, and why not",
    _arguments,
    _run,
    "Run one event (JSON text, a file, or stdin) through the policies on a fresh engine and print, for "
    "every rule, what it made of the event: the violation it recorded; for a threshold, sequence or "
    "expect, what one event does (counts 1 of N, starts step X, opens an obligation due T); and for a "
    "rule that did not match, the first condition that failed with the values it read. Exit 1 if the "
    "event is not valid.",
)
