"""`tosengine explain VIOLATION_ID`: why a recorded violation fired (the audit log, read-only)."""

from __future__ import annotations

import argparse
from typing import TextIO

from tosengine.audit.connect import database_errors
from tosengine.audit.reader import AuditReader
from tosengine.cli.common import EXIT_OK, Command, db_arg, db_url
from tosengine.explain import explain_violation

__all__ = ["EXPLAIN"]


def _arguments(x: argparse.ArgumentParser) -> None:
    x.add_argument("violation_id", metavar="VIOLATION_ID")
    db_arg(x)


def _run(args: argparse.Namespace, out: TextIO) -> int:
    url = db_url(args.db)
    with AuditReader(url) as log, database_errors(url, "read"):
        print(explain_violation(log.engine, args.violation_id).render(), file=out)
    return EXIT_OK


EXPLAIN = Command(
    "explain",
    "explain one recorded violation: rule, clause, evidence, chain",
    _arguments,
    _run,
    "Explain VIOLATION_ID from the audit log: the rule and its clause, the evidence events with the "
    "fields the rule read, the derived facts in the chain and, for expect rules, the deadline and "
    "what would have fulfilled it.",
)
