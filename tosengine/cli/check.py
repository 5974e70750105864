"""`tosengine check [POLICY_DIR]`: every diagnostic at once, as path:line:col: error[code]: message."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from tosengine.cli.common import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE, Command, policies_dir
from tosengine.policy.check import check_sources
from tosengine.policy.diagnostics import CODES
from tosengine.policy.sources import read_schemas, read_sources

__all__ = ["CHECK"]


def _arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument(
        "policy_dir",
        nargs="?",
        default=None,
        metavar="POLICY_DIR",
        help="directory of policy files (default: $TOSENGINE_POLICIES or ./policies)",
    )
    c.add_argument("--format", choices=("text", "json"), default="text", help="diagnostics as text or JSON lines")
    c.add_argument("--codes", action="store_true", help="list every diagnostic code and exit")


def _run(args: argparse.Namespace, out: TextIO) -> int:
    if args.codes:
        for code, meaning in CODES.items():
            print(f"{code:18} {meaning}", file=out)
        return EXIT_OK
    directory = policies_dir(args.policy_dir)
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


CHECK = Command(
    "check",
    "check policy files; exit 0 if valid, 1 with diagnostics",
    _arguments,
    _run,
    "Check every policy file in POLICY_DIR and print all problems at once as path:line:col: error[code]: message.",
)
