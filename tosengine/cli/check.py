"""`tosengine check [PATH...]`: every diagnostic at once, as path:line:col: error[code]: message."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from tosengine.cli.common import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE, Command, policies_dir
from tosengine.policy.check import check_sources
from tosengine.policy.diagnostics import CODES
from tosengine.policy.sources import read_paths

__all__ = ["CHECK", "NO_SCHEMA_NOTE"]

NO_SCHEMA_NOTE = (
    "note: no event schema (events.schema.yaml) applies to these policies, so event field names "
    '(event.data.*) are not checked; see docs/policy-language.md, "Event schemas"'
)


def _arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="policy directories or files (default: $TOSENGINE_POLICIES or ./policies)",
    )
    c.add_argument("--format", choices=("text", "json"), default="text", help="diagnostics as text or JSON lines")
    c.add_argument("--codes", action="store_true", help="list every diagnostic code and exit")


def _run(args: argparse.Namespace, out: TextIO) -> int:
    if args.codes:
        for code, meaning in CODES.items():
            print(f"{code:18} {meaning}", file=out)
        return EXIT_OK
    paths = args.paths or [policies_dir(None)]
    where = " ".join(paths)
    try:
        files = read_paths(paths)
    except FileNotFoundError as exc:
        print(f"tosengine: {exc}", file=sys.stderr)
        return EXIT_USAGE
    checked, diags = check_sources(files.sources, files.schemas, partial=files.partial)
    for d in diags:
        print(json.dumps(d.to_json(), ensure_ascii=False) if args.format == "json" else d.render() + "\n", file=out)
    if args.format == "text" and not files.schemas:
        print(NO_SCHEMA_NOTE, file=out)
    if checked is None:
        if args.format == "text":
            print(f"{sum(d.severity == 'error' for d in diags)} error(s) in {where}", file=out)
        return EXIT_FINDINGS
    if args.format == "text":
        disabled = len(checked.disabled)
        more = f" ({disabled} disabled)" if disabled else ""
        print(f"ok: {len(checked.policies)} policies, {len(checked.rules)} rules{more} in {where}", file=out)
    return EXIT_OK


CHECK = Command(
    "check",
    "check policy files; exit 0 if valid, 1 with diagnostics",
    _arguments,
    _run,
    "Check the policy files in each PATH (a directory, or a single file checked with the event schema "
    "beside it) and print all problems at once as path:line:col: error[code]: message.",
)
