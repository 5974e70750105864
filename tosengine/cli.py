"""The `tosengine` command: a thin client of the public API (check, replay, audit, db)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, TextIO

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from tosengine._version import __version__
from tosengine.audit.log import AuditLog, connect
from tosengine.audit.migrate import upgrade_database
from tosengine.audit.query import export_html, export_json, list_violations, row_json
from tosengine.audit.verify import verify_chain
from tosengine.errors import EventError, PolicyError, TosEngineError
from tosengine.events import parse_time
from tosengine.explain import explain_violation
from tosengine.policy.check import check_policy_set, check_sources
from tosengine.policy.diagnostics import CODES
from tosengine.policy.model import ACTIONS
from tosengine.policy.sources import read_schemas, read_sources
from tosengine.runtime.engine import SMOKE_TEST_TIMEOUT, Engine
from tosengine.runtime.matcher import BATCH
from tosengine.testing import run_policy_tests
from tosengine.violation import Violation, format_time

__all__ = ["main"]

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2


def _default_policies() -> str:
    return os.environ.get("TOSENGINE_POLICIES", "policies")


def _default_db() -> str:
    return os.environ.get("TOSENGINE_DB", "sqlite:///tosengine.db")


def _db_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", default=None, metavar="URL",
                   help="audit database URL (default: $TOSENGINE_DB or sqlite:///tosengine.db)")


def _time_arg(text: str) -> datetime:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tosengine",
        description="Terms-of-service enforcement: check policies, replay events, find violations.",
        epilog="Policy language: docs/policy-language.md. Exit codes: 0 ok, 1 findings "
               "(diagnostics or rejected events), 2 usage or unusable policies.")
    p.add_argument("--version", action="version", version=f"tosengine {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("check", help="check policy files; exit 0 if valid, 1 with diagnostics",
                       description="Check every policy file in POLICY_DIR and print all problems at once as "
                                   "path:line:col: error[code]: message.")
    c.add_argument("policy_dir", nargs="?", default=None, metavar="POLICY_DIR",
                   help="directory of policy files (default: $TOSENGINE_POLICIES or ./policies)")
    c.add_argument("--format", choices=("text", "json"), default="text", help="diagnostics as text or JSON lines")
    c.add_argument("--codes", action="store_true", help="list every diagnostic code and exit")

    t = sub.add_parser("test", help="run the *_test.yaml policy tests; exit 0 all pass, 1 any failure",
                       description="Run every *_test.yaml case beside the policies in POLICY_DIR and print each "
                                   "failure as a diff of expected and actual violations.")
    t.add_argument("policy_dir", nargs="?", default=None, metavar="POLICY_DIR",
                   help="directory of policies and their tests (default: $TOSENGINE_POLICIES or ./policies)")
    t.add_argument("--coverage", action="store_true", help="also list the rules no case makes fire")

    r = sub.add_parser("replay", help="run events (JSON Lines) through the policies and print violations",
                       description="Replay JSON Lines events through the policies and write the violations, "
                                   "the accepted events and the rejected lines to the audit log (unless "
                                   "--dry-run). Bad lines are reported on stderr with their line number and "
                                   "skipped; the exit status is 1 if any line was rejected, 2 if the policies "
                                   "or the audit database cannot be used. Running the same replay again adds "
                                   "nothing: violation ids are deterministic.")
    r.add_argument("files", nargs="+", metavar="FILE", help="JSON Lines files of events, or - for stdin")
    r.add_argument("--policies", default=None, help="policy directory (default: $TOSENGINE_POLICIES or ./policies)")
    _db_arg(r)
    r.add_argument("--dry-run", action="store_true", help="print violations without writing the audit log")
    r.add_argument("--until", type=_time_arg, default=None, metavar="TIME",
                   help="after the last event, advance the clock to TIME (RFC 3339) so deadlines before it fire")
    r.add_argument("--format", choices=("table", "json"), default="table",
                   help="table, or json: one violation per line")
    r.add_argument("--summary", action="store_true",
                   help="instead of every violation, print counts per rule, the subjects at each action step "
                        "and where to look next")

    a = sub.add_parser("audit", help="read and verify the audit log")
    asub = a.add_subparsers(dest="audit_command", required=True, metavar="AUDIT_COMMAND")
    al = asub.add_parser("list", help="list violations (all that match, unless --limit)")
    _db_arg(al)
    al.add_argument("--subject", help="only violations against this subject")
    al.add_argument("--policy", help="only violations of this policy")
    al.add_argument("--since", type=_time_arg, metavar="TIME", help="only violations at or after TIME")
    al.add_argument("--limit", type=int, metavar="N", help="at most N violations")
    al.add_argument("--format", choices=("table", "json"), default="table")
    av = asub.add_parser("verify", help="check the hash chain; exit 0 intact, 1 naming the first bad row")
    _db_arg(av)
    ae = asub.add_parser("export", help="the case file of one subject: violations, clauses, evidence, chain check")
    _db_arg(ae)
    ae.add_argument("--subject", required=True)
    ae.add_argument("--format", choices=("json", "html"), default="json")

    x = sub.add_parser("explain", help="explain one recorded violation: rule, clause, evidence, chain",
                       description="Explain VIOLATION_ID from the audit log: the rule and its clause, the "
                                   "evidence events with the fields the rule read, the derived facts in the "
                                   "chain and, for expect rules, the deadline and what would have fulfilled it.")
    x.add_argument("violation_id", metavar="VIOLATION_ID")
    _db_arg(x)

    d = sub.add_parser("db", help="manage the audit database")
    dsub = d.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    du = dsub.add_parser("upgrade", help="create or migrate the audit database to the latest schema")
    _db_arg(du)
    return p


def _check(args: argparse.Namespace, out: TextIO) -> int:
    if args.codes:
        for code, meaning in CODES.items():
            print(f"{code:18} {meaning}", file=out)
        return EXIT_OK
    directory = args.policy_dir or _default_policies()
    try:
        sources = read_sources(directory)
    except (FileNotFoundError, NotADirectoryError) as exc:
        print(f"tosengine: {exc}", file=sys.stderr)
        return EXIT_USAGE
    checked, diags = check_sources(sources, read_schemas(directory))
    for d in diags:
        print(json.dumps(d.to_json(), ensure_ascii=False) if args.format == "json" else d.render() + "\n", file=out)
    if checked is None:
        if args.format == "text":
            print(f"{sum(d.severity == 'error' for d in diags)} error(s) in {directory}", file=out)
        return EXIT_FINDINGS
    if args.format == "text":
        print(f"ok: {len(checked.policies)} policies, {len(checked.rules)} rules in {directory}", file=out)
    return EXIT_OK


def _test(args: argparse.Namespace, out: TextIO) -> int:
    directory = args.policy_dir or _default_policies()
    checked, diags = check_sources(read_sources(directory), read_schemas(directory))
    if checked is None:
        for d in diags:
            print(d.render() + "\n", file=out)
        return EXIT_FINDINGS
    run = run_policy_tests(checked, directory)
    for r in run.results:
        if not r.passed:
            print(r.render() + "\n", file=out)
    passed = sum(r.passed for r in run.results)
    print(f"{passed} passed, {len(run.results) - passed} failed", file=out)
    if args.coverage:
        missing = run.uncovered()
        print(f"coverage: {len(run.rules) - len(missing)}/{len(run.rules)} rules fire in some case", file=out)
        for rid in missing:
            print(f"  not covered: {rid}", file=out)
    if not run.results:
        print(f"no *_test.yaml cases found in {directory}", file=sys.stderr)
    return EXIT_OK if run.passed else EXIT_FINDINGS


def _lines(files: Sequence[str]) -> Iterator[tuple[str, int, str | None, bytes]]:
    """(file, line number, text or None if not UTF-8, raw bytes) for every line of every input."""
    for name in files:
        if name == "-":
            stream, label = sys.stdin.buffer, "<stdin>"
            yield from _decode(label, stream)
        else:
            with open(name, "rb") as fh:
                yield from _decode(name, fh)


def _decode(label: str, stream: BinaryIO) -> Iterator[tuple[str, int, str | None, bytes]]:
    for n, raw in enumerate(stream, 1):
        try:
            yield label, n, raw.decode("utf-8"), raw
        except UnicodeDecodeError:
            yield label, n, None, raw


def _print_violation(v: Violation, fmt: str, out: TextIO) -> None:
    if fmt == "json":
        out.write(json.dumps(v.to_json(), ensure_ascii=False) + "\n")
    else:
        out.write(f"{format_time(v.time):24} {v.rule:48} {v.subject:28} {v.severity:8} {v.action:14} "
                  f"{','.join(v.evidence)}\n")


def _replay(args: argparse.Namespace, out: TextIO) -> int:
    directory = args.policies or _default_policies()
    try:
        policies = check_policy_set(read_sources(directory), read_schemas(directory))
    except PolicyError as exc:
        for d in exc.diagnostics:
            print(d.render(), file=sys.stderr)
        return EXIT_USAGE
    except FileNotFoundError as exc:
        print(f"tosengine: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        audit = None if args.dry_run else AuditLog(args.db or _default_db())
    except (TosEngineError, SQLAlchemyError) as exc:
        print(f"tosengine: cannot open the audit log: {exc}", file=sys.stderr)
        return EXIT_USAGE
    engine = Engine(policies, audit=audit, smoke_test=SMOKE_TEST_TIMEOUT)
    rejected = accepted = found = 0
    pending: list[Violation] = []
    summary = _Summary()

    def acknowledge() -> None:
        # Violations are printed only once the audit log holds them: nothing is acknowledged unwritten.
        nonlocal found
        engine.flush()
        for v in pending:
            if args.summary:
                summary.add(v)
            else:
                _print_violation(v, args.format, out)
        found += len(pending)
        pending.clear()

    # Lines are processed in batches (durable_rules matches a batch in one call), except from stdin,
    # where a live stream's violations must not wait for the next events. Each line goes to the engine
    # as text, which the audit log stores as is.
    batch: list[tuple[str, int, str]] = []  # (file, line number, text)
    batch_size = 1 if "-" in args.files else BATCH

    def refuse(name: str, n: int, text: str, exc: EventError) -> None:
        nonlocal rejected
        rejected += 1
        engine.reject(text.rstrip("\n"), EventError(exc.field, exc.problem, line=n), origin=name)
        field = f"field `{exc.field}`: " if exc.field else ""
        print(f"{name}:{n}: rejected: {field}{exc.problem}", file=sys.stderr)

    def run_batch() -> None:
        nonlocal accepted
        before = rejected
        pending.extend(engine.process_many(
            [text for _, _, text in batch],
            on_error=lambda pos, _event, exc: refuse(*batch[pos], exc)))
        accepted += len(batch) - (rejected - before)
        batch.clear()

    with engine:
        if args.format == "table" and not args.summary:
            out.write(f"{'TIME':24} {'RULE':48} {'SUBJECT':28} {'SEVERITY':8} {'ACTION':14} EVIDENCE\n")
        try:
            for name, n, line, raw in _lines(args.files):
                if line is None:
                    refuse(name, n, raw.decode("utf-8", "backslashreplace"),
                           EventError("", "the line is not valid UTF-8"))
                    continue
                if not line.strip():
                    continue
                batch.append((name, n, line))
                if len(batch) >= batch_size:
                    run_batch()
                    if args.dry_run or len(pending) >= 1000:
                        acknowledge()
            run_batch()
            if args.until is not None:
                pending.extend(engine.advance_to(args.until))
            acknowledge()
        except OSError as exc:
            print(f"tosengine: {exc}", file=sys.stderr)
            return EXIT_USAGE
    if args.summary:
        summary.write(None if args.dry_run else (args.db or _default_db()), out)
    where = "" if args.dry_run else f", written to {args.db or _default_db()}"
    print(f"{accepted} event(s) accepted, {rejected} rejected, {found} violation(s){where}", file=sys.stderr)
    return EXIT_FINDINGS if rejected else EXIT_OK


class _Summary:
    """Counts per rule and each subject's strongest action, kept small however long the replay."""

    def __init__(self) -> None:
        self.total = 0
        self.per_rule: dict[str, int] = {}
        self.strongest: dict[str, tuple[int, str]] = {}  # subject -> (action rank, a violation id)

    def add(self, v: Violation) -> None:
        self.total += 1
        self.per_rule[v.rule] = self.per_rule.get(v.rule, 0) + 1
        rank = ACTIONS.index(v.action)
        if rank > self.strongest.get(v.subject, (-1, ""))[0]:
            self.strongest[v.subject] = (rank, v.id)

    def write(self, db: str | None, out: TextIO) -> None:
        out.write(f"{self.total} violation(s)\n\nviolations per rule:\n")
        for rule, n in sorted(self.per_rule.items()):
            out.write(f"  {n:6}  {rule}\n")
        out.write("\nsubjects by the strongest action recorded against them:\n")
        for rank in range(len(ACTIONS) - 1, -1, -1):
            subjects = sorted(s for s, (r, _) in self.strongest.items() if r == rank)
            if subjects:
                out.write(f"  {ACTIONS[rank]:15} {', '.join(subjects)}\n")
        if db is not None and self.strongest:
            top = max(self.strongest, key=lambda s: (self.strongest[s][0], s))
            flag = "" if db == _default_db() else f" --db {db}"
            out.write(f"\nnext:\n  tosengine audit list --subject {top}{flag}\n"
                      f"  tosengine audit export --subject {top} --format html{flag} > case.html\n"
                      f"  tosengine explain {self.strongest[top][1]}{flag}\n"
                      f"  tosengine audit verify{flag}\n")


def _open_existing(url: str) -> AuditLog:
    """The audit log at `url` for reading; a SQLite file that does not exist is an error, not a new log."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:") \
            and not Path(parsed.database).exists():
        raise TosEngineError(f"no audit database at {parsed.database} (replay writes one; see --db)")
    return AuditLog(url)  # migrates an older schema in place


def _audit(args: argparse.Namespace, out: TextIO) -> int:
    url = args.db or _default_db()
    log = _open_existing(url)
    try:
        if args.audit_command == "verify":
            result = verify_chain(log.engine, log.key)
            print(result.describe(), file=out)
            return EXIT_OK if result.ok else EXIT_FINDINGS
        if args.audit_command == "list":
            rows = list_violations(log.engine, subject=args.subject, policy=args.policy, since=args.since,
                                   limit=args.limit)
            if args.format == "table":
                out.write(f"{'TIME':24} {'RULE':48} {'SUBJECT':28} {'SEVERITY':8} {'ACTION':14} ID\n")
            for r in rows:
                j = row_json(r)
                if args.format == "json":
                    out.write(json.dumps(j, ensure_ascii=False) + "\n")
                else:
                    out.write(f"{j['time']:24} {j['rule']:48} {j['subject']:28} {j['severity']:8} "
                              f"{j['action']:14} {j['id']}\n")
            return EXIT_OK
        result = verify_chain(log.engine, log.key)
        if args.format == "html":
            out.write(export_html(log.engine, args.subject, result) + "\n")
        else:
            out.write(json.dumps(export_json(log.engine, args.subject, result), ensure_ascii=False, indent=2) + "\n")
        return EXIT_OK
    finally:
        log.close()


def _explain(args: argparse.Namespace, out: TextIO) -> int:
    log = _open_existing(args.db or _default_db())
    try:
        print(explain_violation(log.engine, args.violation_id).render(), file=out)
    finally:
        log.close()
    return EXIT_OK


def _db(args: argparse.Namespace, out: TextIO) -> int:
    url = args.db or _default_db()
    upgrade_database(connect(url))
    print(f"ok: {url} is at the latest schema", file=out)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `tosengine` command."""
    args = _parser().parse_args(argv)
    out = sys.stdout
    try:
        if args.command == "check":
            return _check(args, out)
        if args.command == "test":
            return _test(args, out)
        if args.command == "audit":
            return _audit(args, out)
        if args.command == "explain":
            return _explain(args, out)
        if args.command == "db":
            return _db(args, out)
        return _replay(args, out)
    except SQLAlchemyError as exc:
        print(f"tosengine: database error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except TosEngineError as exc:
        print(f"tosengine: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
