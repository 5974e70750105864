"""`tosengine test [POLICY_DIR]`: run the *_test.yaml cases beside the policies."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from tosengine.cli.common import EXIT_FINDINGS, EXIT_OK, Command, policies_dir
from tosengine.policy.check import check_sources
from tosengine.policy.sources import read_schemas, read_sources
from tosengine.testing import run_policy_tests

__all__ = ["TEST"]


def _arguments(t: argparse.ArgumentParser) -> None:
    t.add_argument(
        "policy_dir",
        nargs="?",
        default=None,
        metavar="POLICY_DIR",
        help="directory of policies and their tests (default: $TOSENGINE_POLICIES or ./policies)",
    )
    t.add_argument("--coverage", action="store_true", help="also list the rules no case makes fire")


def _run(args: argparse.Namespace, out: TextIO) -> int:
    directory = policies_dir(args.policy_dir)
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


TEST = Command(
    "test",
    "run the *_test.yaml policy tests; exit 0 all pass, 1 any failure",
    _arguments,
    _run,
    "Run every *_test.yaml case beside the policies in POLICY_DIR and print each failure as a diff "
    "of expected and actual violations.",
)
