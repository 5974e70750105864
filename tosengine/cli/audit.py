"""`tosengine audit list|verify|head|export`: read the audit log (opened read-only: nothing is ever written)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from tosengine.audit.casefile import export_html, export_json, subject_is_recorded, suggest_subjects
from tosengine.audit.connect import database_errors
from tosengine.audit.query import MODES, list_repeats, list_violations, repeat_json, row_json, tagged_rules
from tosengine.audit.reader import AuditReader
from tosengine.audit.verify import format_anchor, parse_anchor, read_anchor, verify_chain
from tosengine.cli.common import EXIT_FINDINGS, EXIT_OK, Command, db_arg, db_url, printable, time_arg
from tosengine.cli.rules import tag_arg

__all__ = ["AUDIT"]


def _arguments(a: argparse.ArgumentParser) -> None:
    asub = a.add_subparsers(dest="audit_command", required=True, metavar="AUDIT_COMMAND")
    al = asub.add_parser("list", help="list violations (all that match, unless --limit)")
    db_arg(al)
    al.add_argument("--subject", help="only violations against this subject")
    al.add_argument("--policy", help="only violations of this policy")
    al.add_argument("--since", type=time_arg, metavar="TIME", help="only violations at or after TIME")
    al.add_argument("--limit", type=int, metavar="N", help="at most N violations")
    al.add_argument("--format", choices=("table", "json"), default="table")
    al.add_argument("--no-repeats", action="store_true", help="leave out the repeat records (once_per windows)")
    _mode_arg(al)
    tag_arg(al, "violations")
    av = asub.add_parser("verify", help="check the hash chain; exit 0 intact, 1 naming the first bad row")
    db_arg(av)
    av.add_argument(
        "--head",
        metavar="HEAD",
        help="also check the log against a head printed earlier by `audit head` (kept elsewhere): rows "
        "deleted at the end since then are caught even without the audit key",
    )
    ah = asub.add_parser(
        "head",
        help="print the chains' head (one line) to keep elsewhere and check later with `verify --head`",
        description="Print the current head of the violation and repeat chains as one line. Keep it somewhere "
        "the database's writers cannot change (a ticket, a notary, another system); `audit verify --head "
        "LINE` then proves that no row recorded up to that point was deleted or changed.",
    )
    db_arg(ah)
    ae = asub.add_parser("export", help="the case file of one subject: violations, clauses, evidence, chain check")
    db_arg(ae)
    ae.add_argument("--subject", required=True)
    ae.add_argument("--format", choices=("json", "html"), default="json")
    _mode_arg(ae)


def _mode_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--mode",
        choices=MODES,
        default="enforce",
        help="enforce (the default: what is acted on), shadow (violations of shadow rules), or all",
    )


def _run(args: argparse.Namespace, out: TextIO) -> int:
    url = db_url(args.db)
    with AuditReader(url) as log, database_errors(url, "read"):
        if args.audit_command == "verify":
            anchor = parse_anchor(args.head) if args.head else None
            result = verify_chain(log.engine, log.key, anchor)
            print(result.describe(), file=out)
            return EXIT_OK if result.ok else EXIT_FINDINGS
        if args.audit_command == "head":
            print(format_anchor(read_anchor(log.engine)), file=out)
            return EXIT_OK
        if args.audit_command == "list":
            rules = tagged_rules(log.engine, set(args.tags)) if args.tags else None
            filters = {"subject": args.subject, "policy": args.policy, "since": args.since, "limit": args.limit}
            rows = list_violations(log.engine, **filters, mode=args.mode, rules=rules)
            repeats = list_repeats(log.engine, **filters, mode=args.mode, rules=rules) if not args.no_repeats else []
            if args.format == "table":
                mode = "  MODE" if args.mode == "all" else ""
                out.write(f"{'TIME':24} {'RULE':48} {'SUBJECT':28} {'SEVERITY':8} {'ACTION':14} ID{mode}\n")
            for r in rows:
                j = row_json(r)
                if args.format == "json":
                    out.write(json.dumps(j, ensure_ascii=False) + "\n")
                else:
                    shadow = "  shadow" if args.mode == "all" and j["mode"] == "shadow" else ""
                    out.write(
                        f"{j['time']:24} {j['rule']:48} {printable(j['subject']):28} {j['severity']:8} "
                        f"{j['action']:14} {j['id']}{shadow}\n"
                    )
            for rr in repeats:
                j = repeat_json(rr)
                if args.format == "json":
                    out.write(json.dumps(j, ensure_ascii=False) + "\n")
                else:
                    more = f"+{j['count']} more"
                    out.write(
                        f"{j['time']:24} {j['rule']:48} {printable(j['subject']):28} {'repeat':8} {more:14} "
                        f"of {j['repeat_of']} ({j['first']}..{j['last']})\n"
                    )
            return EXIT_OK
        if not subject_is_recorded(log.engine, args.subject):
            # Nothing on stdout: an empty document for a mistyped subject would read as "a clean record".
            close = suggest_subjects(log.engine, args.subject)
            names = [repr(c) for c in close]
            hint = (
                "did you mean " + (", ".join(names[:-1]) + " or " if len(names) > 1 else "") + names[-1] + "? "
                if names
                else "the audit log holds no violations yet; "
            ) + "`tosengine audit list` shows the subjects with violations"
            print(
                f"tosengine: error: no violation or repeat record against subject {args.subject!r} in the audit log; "
                + hint,
                file=sys.stderr,
            )
            return EXIT_FINDINGS
        result = verify_chain(log.engine, log.key)
        if args.format == "html":
            out.write(export_html(log.engine, args.subject, result, mode=args.mode) + "\n")
        else:
            case = export_json(log.engine, args.subject, result, mode=args.mode)
            out.write(json.dumps(case, ensure_ascii=False, indent=2) + "\n")
        return EXIT_OK


AUDIT = Command("audit", "read and verify the audit log (read-only)", _arguments, _run)
