"""`tosengine test [POLICY_DIR]`: check and run the *_test.yaml cases beside the policies."""

from __future__ import annotations

import argparse
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TextIO

from tosengine.cli.common import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE, Command, policies_dir
from tosengine.policy.check import check_sources
from tosengine.policy.sources import read_schemas, read_sources
from tosengine.testing import TestRun, run_policy_tests

__all__ = ["TEST", "junit_xml"]


def _arguments(t: argparse.ArgumentParser) -> None:
    t.add_argument(
        "policy_dir",
        nargs="?",
        default=None,
        metavar="POLICY_DIR",
        help="directory of policies and their tests (default: $TOSENGINE_POLICIES or ./policies)",
    )
    t.add_argument("--coverage", action="store_true", help="also list the rules no case makes fire")
    t.add_argument("--run", metavar="PATTERN", help="only the cases whose name PATTERN (a regular expression) finds")
    t.add_argument("-v", "--verbose", action="store_true", help="print every case with PASS or FAIL and its time")
    t.add_argument("--junit-xml", metavar="FILE", help="also write the results as JUnit XML (for CI) to FILE")


def junit_xml(run: TestRun) -> bytes:
    """The run as JUnit XML: a testsuite per test file, a testcase per case, a file's diagnostics as an error."""
    suites = ET.Element("testsuites", name="tosengine test")
    by_file: dict[str, ET.Element] = {}
    for f in run.files:
        suite = by_file[f.path] = ET.SubElement(suites, "testsuite", name=f.path)
        errors = [d for d in f.diagnostics if d.severity == "error"]
        if errors:
            case = ET.SubElement(suite, "testcase", name="(the test file)", classname=Path(f.path).stem)
            err = ET.SubElement(case, "error", message=f"{len(errors)} error(s) in the test file: no case ran")
            err.text = "\n\n".join(d.render() for d in f.diagnostics)
    for r in run.results:
        suite = by_file[r.path]
        case = ET.SubElement(
            suite, "testcase", name=r.name, classname=Path(r.path).stem, time=f"{r.seconds:.3f}", file=r.path
        )
        case.set("line", str(r.span.line))
        if not r.passed:
            fail = ET.SubElement(case, "failure", message=r.error or f"{r.name}: the violations differ")
            fail.text = r.render()
    for suite in suites:
        cases = suite.findall("testcase")
        suite.set("tests", str(len(cases)))
        suite.set("failures", str(sum(c.find("failure") is not None for c in cases)))
        suite.set("errors", str(sum(c.find("error") is not None for c in cases)))
        suite.set("time", f"{sum(float(c.get('time', '0')) for c in cases):.3f}")
    ET.indent(suites)
    text: bytes = ET.tostring(suites, encoding="utf-8", xml_declaration=True)
    return text + b"\n"


def _run(args: argparse.Namespace, out: TextIO) -> int:
    directory = policies_dir(args.policy_dir)
    try:
        pattern = re.compile(args.run) if args.run is not None else None
    except re.error as exc:
        print(f"tosengine: --run {args.run!r} is not a regular expression: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        checked, diags = check_sources(read_sources(directory), read_schemas(directory))
    except FileNotFoundError as exc:
        print(f"tosengine: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if checked is None:
        for d in diags:
            print(d.render() + "\n", file=out)
        print("the policies do not check: no test ran", file=out)
        return EXIT_FINDINGS
    run = run_policy_tests(checked, directory, pattern)
    for d in run.diagnostics:
        print(d.render() + "\n", file=out)
    for r in run.results:
        if args.verbose:
            print(f"{'PASS' if r.passed else 'FAIL'}  {r.name}  ({r.seconds:.2f}s)  {r.where}", file=out)
        if not r.passed:
            print(r.render() + "\n", file=out)
    passed = sum(r.passed for r in run.results)
    summary = f"{passed} passed, {len(run.results) - passed} failed"
    if run.errors:
        broken = sum(not f.ok for f in run.files)
        summary += f", {run.errors} error(s) in {broken} test file(s) that did not run"
    if run.skipped:
        summary += f", {run.skipped} not run (--run)"
    print(summary, file=out)
    if args.coverage:
        missing = run.uncovered()
        print(f"coverage: {len(run.rules) - len(missing)}/{len(run.rules)} rules fire in some case", file=out)
        for rid in missing:
            print(f"  not covered: {rid}", file=out)
    if args.junit_xml:
        Path(args.junit_xml).write_bytes(junit_xml(run))
    if not run.files:
        print(f"no *_test.yaml files found in {directory}", file=sys.stderr)
    elif not run.results and not run.errors:
        print("no case ran" + (f": none matches --run {args.run!r}" if args.run else ""), file=sys.stderr)
    return EXIT_OK if run.passed else EXIT_FINDINGS


TEST = Command(
    "test",
    "check and run the *_test.yaml policy tests; exit 0 all pass, 1 any failure or error",
    _arguments,
    _run,
    "Check every *_test.yaml beside the policies in POLICY_DIR as strictly as `check` checks policies "
    "(unknown keys, rules and evidence ids are diagnostics with file:line:col), then run each case on a "
    "fresh engine and print each failure with every field of the violations expected and found.",
)
