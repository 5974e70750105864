"""`tosengine diff EVENTS... --base DIR|git:REV[:PATH] --candidate DIR`: what a policy change would change."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from typing import TextIO

from tosengine.cli.common import (
    EXIT_FINDINGS,
    EXIT_OK,
    EXIT_USAGE,
    Command,
    policies_dir,
    printable,
    settle_heap,
    time_arg,
)
from tosengine.cli.diff_render import render_markdown, render_table
from tosengine.cli.progress import ProgressBar
from tosengine.cli.rules import tag_arg
from tosengine.diff import CELLS, DiffReport, Side, diff_replays
from tosengine.errors import EventError
from tosengine.events import MAX_EVENT
from tosengine.lines import Line, input_size, read_lines
from tosengine.policy.check import check_sources
from tosengine.policy.gitsource import read_git_policies
from tosengine.policy.sources import read_paths

__all__ = ["DIFF", "FailOn", "parse_fail_on"]

_CONDITION = re.compile(r"\s*(base|candidate|both|added|removed|changed)\s*(>=|>)\s*(\d+)\s*")
FailOn = list[tuple[str, str, int]]


def parse_fail_on(text: str) -> FailOn:
    """`added>0,removed>=10` -> [(cell, operator, number)]; argparse reports a malformed one."""
    out = []
    for part in text.split(","):
        m = _CONDITION.fullmatch(part)
        if m is None:
            raise argparse.ArgumentTypeError(
                f"{part.strip()!r}: a condition is CELL>N or CELL>=N, CELL one of {', '.join(CELLS)} (e.g. added>0)"
            )
        out.append((m[1], m[2], int(m[3])))
    return out


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("events", nargs="+", metavar="EVENTS", help="JSON Lines files of events, or - for stdin")
    p.add_argument(
        "--base",
        required=True,
        metavar="DIR|git:REV[:PATH]",
        help="the policies now: a directory, or a git revision (PATH defaults to the candidate's directory)",
    )
    p.add_argument(
        "--candidate",
        default=None,
        metavar="DIR|git:REV[:PATH]",
        help="the policies proposed (default: $TOSENGINE_POLICIES or ./policies)",
    )
    p.add_argument("--format", choices=("table", "json", "markdown"), default="table", help="markdown: for a PR")
    p.add_argument(
        "--until", type=time_arg, default=None, metavar="TIME", help="after the events, move the clock to TIME"
    )
    tag_arg(p, "report the rules")
    p.add_argument("--samples", type=int, default=3, metavar="N", help="samples per rule and cell (default 3)")
    p.add_argument("--subjects", type=int, default=10, metavar="N", help="subjects shown in table/markdown")
    p.add_argument(
        "--fail-on",
        type=parse_fail_on,
        default=[],
        metavar="CONDITIONS",
        help="exit 1 when a total crosses a bound, e.g. added>0,removed>10 (cells: " + ", ".join(CELLS) + ")",
    )


def _side(spec: str, default_dir: str) -> Side | None:
    """Load and check one side; None (diagnostics on stderr) if it does not check."""
    if spec.startswith("git:"):
        files, commit = read_git_policies(spec, default_dir)
        label = f"{spec} ({commit[:12]})"
    else:
        files, label = read_paths([spec]), spec
    checked, diags = check_sources(files.sources, files.schemas, partial=files.partial)
    if checked is None:
        print(f"tosengine: the policies of {label} do not check:", file=sys.stderr)
        for d in diags:
            print(d.render() + "\n", file=sys.stderr)
        return None
    return Side(label, checked)


def _rejected(origin: str, number: int, _text: str, exc: EventError) -> None:
    field = f"field `{exc.field}`: " if exc.field else ""
    print(printable(f"{origin}:{number}: rejected: {field}{exc.problem}"), file=sys.stderr)


def _tripped(report: DiffReport, fail_on: FailOn) -> list[str]:
    totals = report.totals
    return [
        f"{cell}{op}{n} ({totals[cell]} {cell})"
        for cell, op, n in fail_on
        if (totals[cell] > n if op == ">" else totals[cell] >= n)
    ]


def _run(args: argparse.Namespace, out: TextIO) -> int:
    candidate_spec = args.candidate or policies_dir(None)
    default_dir = "policies" if candidate_spec.startswith("git:") else candidate_spec
    try:
        base, candidate = _side(args.base, default_dir), _side(candidate_spec, default_dir)
    except FileNotFoundError as exc:
        print(f"tosengine: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if base is None or candidate is None:
        return EXIT_USAGE
    with ProgressBar("diff", input_size(args.events)) as bar:

        def lines() -> Iterator[Line]:
            for line in read_lines(args.events, MAX_EVENT):
                bar.advance(len(line[2]))
                yield line

        settle_heap()
        try:
            report = diff_replays(
                base,
                candidate,
                lines(),
                until=args.until,
                samples=args.samples,
                tags=args.tags or (),
                rejected=_rejected,
            )
        except OSError as exc:
            print(f"tosengine: {exc}", file=sys.stderr)
            return EXIT_USAGE
    tripped = _tripped(report, args.fail_on)
    if args.format == "json":
        doc = report.to_json()
        doc["fail_on"] = {"conditions": [f"{c}{o}{n}" for c, o, n in args.fail_on], "tripped": tripped}
        out.write(json.dumps(doc, ensure_ascii=False, default=str) + "\n")
    elif args.format == "markdown":
        out.write(render_markdown(report, args.subjects, tripped))
    else:
        out.write(render_table(report, args.subjects))
    for t in tripped:
        print(f"tosengine diff: --fail-on {t}", file=sys.stderr)
    return EXIT_FINDINGS if tripped else EXIT_OK


DIFF = Command(
    "diff",
    "what a policy change would change, replayed over events",
    _arguments,
    _run,
    "Replay EVENTS through the base and the candidate policies (each as `replay --dry-run` would) and "
    "report, per rule, the violations of each, those in both, added, removed, and those whose action or "
    "severity changed; per subject counts; and a few samples per cell with why they fired. The base (or "
    "the candidate) may be a git revision, git:REV[:PATH], read without touching the work tree. "
    "--fail-on sets exit status 1 for CI.",
)
