"""`tosengine replay FILE... | -`: events (JSON Lines) through the policies, violations to the audit log."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from tosengine.cli.common import (
    EXIT_FINDINGS,
    EXIT_OK,
    EXIT_USAGE,
    Command,
    db_arg,
    db_url,
    load_policies,
    print_repeat,
    print_violation,
    printable,
    settle_heap,
    time_arg,
)
from tosengine.cli.progress import ProgressBar
from tosengine.cli.rules import tag_arg
from tosengine.errors import EventError
from tosengine.ingest import Ingest
from tosengine.lines import input_size, read_lines
from tosengine.policy.model import ACTIONS
from tosengine.runtime.engine import SMOKE_TEST_TIMEOUT, Engine
from tosengine.runtime.matcher import BATCH
from tosengine.violation import Repeat, Violation

__all__ = ["REPLAY"]


def _arguments(r: argparse.ArgumentParser) -> None:
    r.add_argument("files", nargs="+", metavar="FILE", help="JSON Lines files of events, or - for stdin")
    r.add_argument("--policies", default=None, help="policy directory (default: $TOSENGINE_POLICIES or ./policies)")
    db_arg(r)
    r.add_argument("--dry-run", action="store_true", help="print violations without writing the audit log")
    r.add_argument(
        "--until",
        type=time_arg,
        default=None,
        metavar="TIME",
        help="after the last event, advance the clock to TIME (RFC 3339) so deadlines before it fire",
    )
    r.add_argument(
        "--format", choices=("table", "json"), default="table", help="table, or json: one violation per line"
    )
    tag_arg(r, "print the violations")
    r.add_argument(
        "--summary",
        action="store_true",
        help="instead of every violation, print counts per rule, the subjects at each action step "
        "and where to look next",
    )


def _rejected(origin: str, number: int, _text: str, exc: EventError) -> None:
    field = f"field `{exc.field}`: " if exc.field else ""
    print(printable(f"{origin}:{number}: rejected: {field}{exc.problem}"), file=sys.stderr)


def _run(args: argparse.Namespace, out: TextIO) -> int:
    policies = load_policies(args.policies)
    if policies is None:
        return EXIT_USAGE
    url = None if args.dry_run else db_url(args.db)
    engine = Engine(policies, audit=url, smoke_test=SMOKE_TEST_TIMEOUT)
    if engine.dropped_rules:
        print(
            f"tosengine: the state of {', '.join(engine.dropped_rules)} was dropped: the rules changed (or were "
            "removed) since the audit log's checkpoint; they start empty",
            file=sys.stderr,
        )
    summary = _Summary()
    # --tag: the violations of rules carrying one of the tags are printed; all are recorded.
    tagged = {r.id for r in policies.rules if set(r.tags) & set(args.tags)} if args.tags else None

    def acknowledge(violations: list[Violation], repeats: list[Repeat]) -> None:
        # Called only once the audit log holds them: nothing is printed that is not recorded.
        if tagged is not None:
            violations = [v for v in violations if v.rule in tagged]
            repeats = [r for r in repeats if r.rule in tagged]
        for v in violations:
            if args.summary:
                summary.add(v)
            else:
                print_violation(v, args.format, out)
        for r in repeats:
            if args.summary:
                summary.add_repeat(r)
            else:
                print_repeat(r, args.format, out)

    # Lines go in batches (durable_rules matches a batch in one call), except from stdin, where a live
    # stream's violations must not wait for the next events.
    ingest = Ingest(
        engine,
        acknowledge=acknowledge,
        rejected=_rejected,
        batch_size=1 if "-" in args.files else BATCH,
        ack_every=0 if args.dry_run else 1000,
    )
    settle_heap()
    # Events the engine found already processed (redeliveries, or an input read again): the counter may
    # carry earlier runs' from a checkpoint, so this run's are the difference.
    copies_before = engine.stats["duplicates"]
    with engine, ProgressBar("replay", input_size(args.files), live=None if args.summary else out) as bar:
        if args.format == "table" and not args.summary:
            out.write(f"{'TIME':24} {'RULE':48} {'SUBJECT':28} {'SEVERITY':8} {'ACTION':14} EVIDENCE\n")
        try:
            for name, n, raw, too_long in read_lines(args.files, engine.max_event_size):
                bar.advance(len(raw))
                if too_long:
                    ingest.reject(
                        name,
                        n,
                        raw[:1000].decode("utf-8", "backslashreplace") + "...",
                        EventError("", f"line longer than {engine.max_event_size} bytes"),
                    )
                    continue
                ingest.add(name, n, raw)
            ingest.finish(args.until)
            copies = engine.stats["duplicates"] - copies_before
        except OSError as exc:
            print(f"tosengine: {exc}", file=sys.stderr)
            return EXIT_USAGE
    if args.summary:
        summary.write(url, db_url(None), out)
    where = f", written to {url}" if url is not None else ""
    again = f", {copies} already processed (not again)" if copies else ""
    print(
        f"{ingest.accepted - copies} event(s) accepted{again}, {ingest.rejected} rejected, "
        f"{ingest.violations} violation(s){where}",
        file=sys.stderr,
    )
    return EXIT_FINDINGS if ingest.rejected else EXIT_OK


class _Summary:
    """Counts per rule and each subject's strongest action, kept small however long the replay."""

    def __init__(self) -> None:
        self.total = 0
        self.per_rule: dict[str, int] = {}
        self.repeated: dict[str, int] = {}  # rule -> matches counted in repeat records
        self.strongest: dict[str, tuple[int, str]] = {}  # subject -> (action rank, a violation id)

    def add(self, v: Violation) -> None:
        self.total += 1
        self.per_rule[v.rule] = self.per_rule.get(v.rule, 0) + 1
        rank = ACTIONS.index(v.action)
        if rank > self.strongest.get(v.subject, (-1, ""))[0]:
            self.strongest[v.subject] = (rank, v.id)

    def add_repeat(self, r: Repeat) -> None:
        self.repeated[r.rule] = self.repeated.get(r.rule, 0) + r.count

    def write(self, db: str | None, default_db: str, out: TextIO) -> None:
        repeats = sum(self.repeated.values())
        out.write(
            f"{self.total} violation(s)"
            + (f", and {repeats} more matches in repeat records" if repeats else "")
            + "\n\nviolations per rule:\n"
        )
        for rule, n in sorted(self.per_rule.items()):
            more = f"  (+{self.repeated[rule]} repeats)" if self.repeated.get(rule) else ""
            out.write(f"  {n:6}  {rule}{more}\n")
        out.write("\nsubjects by the strongest action recorded against them:\n")
        for rank in range(len(ACTIONS) - 1, -1, -1):
            subjects = sorted(s for s, (r, _) in self.strongest.items() if r == rank)
            if subjects:
                out.write(f"  {ACTIONS[rank]:15} {printable(', '.join(subjects))}\n")
        if db is not None and self.strongest:
            top = max(self.strongest, key=lambda s: (self.strongest[s][0], s))
            flag = "" if db == default_db else f" --db {db}"
            shown = printable(top)
            out.write(
                f"\nnext:\n  tosengine audit list --subject {shown}{flag}\n"
                f"  tosengine audit export --subject {shown} --format html{flag} > case.html\n"
                f"  tosengine explain {self.strongest[top][1]}{flag}\n"
                f"  tosengine audit verify{flag}\n"
            )


REPLAY = Command(
    "replay",
    "run events (JSON Lines) through the policies and print violations",
    _arguments,
    _run,
    "Replay JSON Lines events through the policies and write the violations, the accepted events "
    "and the rejected lines to the audit log (unless --dry-run). Bad lines are reported on stderr "
    "with their line number and skipped; the exit status is 1 if any line was rejected, 2 if the "
    "policies or the audit database cannot be used. Running the same replay again adds nothing: "
    "violation ids are deterministic.",
)
