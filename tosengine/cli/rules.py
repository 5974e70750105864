"""`tosengine rules [PATH...]`: the rules with their kind, key, subject, tags and mode."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from tosengine.cli.common import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE, Command, policies_dir, printable
from tosengine.policy.check import check_sources
from tosengine.policy.model import CheckedPolicySet, Rule
from tosengine.policy.sources import read_paths
from tosengine.policy.unparse import format_expr

__all__ = ["RULES", "rule_row", "tag_arg"]


def tag_arg(p: argparse.ArgumentParser, what: str) -> None:
    """The repeatable --tag option (any of the tags given selects)."""
    p.add_argument(
        "--tag",
        dest="tags",
        action="append",
        default=None,
        metavar="TAG",
        help=f"only {what} of rules carrying TAG (a policy's tags count for its rules); repeat for any of several",
    )


def rule_row(rule: Rule) -> dict[str, Any]:
    """What `rules` shows of one rule (also its JSON)."""
    item = next((c.item for c in rule.body.conditions() if c.trigger), "event")
    return {
        "rule": rule.id,
        "policy": rule.policy,
        "kind": rule.kind,
        "key": format_expr(rule.key) if rule.key is not None else f"{item}.subject",
        "subject": format_expr(rule.subject) if rule.subject is not None else None,  # None: the key's value
        "mode": rule.mode,
        "enabled": rule.enabled,
        "tags": list(rule.tags),
        "severity": rule.severity,
        "action": rule.action,
        "violation": rule.violation,
        "emits": rule.emit.fact if rule.emit is not None else None,
        "line": rule.span.line,
    }


def _all_rules(checked: CheckedPolicySet) -> list[Rule]:
    """Every rule, disabled ones included, in file order."""
    return sorted(
        (r for p in checked.policies for r in (*p.rules, *p.disabled)),
        key=lambda r: (checked.policy(r.policy).path, r.span),
    )


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="policy directories or files (default: $TOSENGINE_POLICIES or ./policies)",
    )
    tag_arg(p, "rules")
    p.add_argument("--mode", choices=("enforce", "shadow", "disabled", "all"), default="all", help="only these rules")
    p.add_argument("--format", choices=("table", "json"), default="table", help="table, or json: one rule per line")


def _run(args: argparse.Namespace, out: TextIO) -> int:
    try:
        files = read_paths(args.paths or [policies_dir(None)])
    except FileNotFoundError as exc:
        print(f"tosengine: {exc}", file=sys.stderr)
        return EXIT_USAGE
    checked, diags = check_sources(files.sources, files.schemas, partial=files.partial)
    if checked is None:
        for d in diags:
            print(d.render() + "\n", file=sys.stderr)
        return EXIT_FINDINGS
    rows = [rule_row(r) for r in _all_rules(checked)]
    if args.tags:
        rows = [r for r in rows if set(r["tags"]) & set(args.tags)]
    if args.mode == "disabled":
        rows = [r for r in rows if not r["enabled"]]
    elif args.mode != "all":
        rows = [r for r in rows if r["enabled"] and r["mode"] == args.mode]
    if args.format == "json":
        for r in rows:
            out.write(json.dumps(r, ensure_ascii=False) + "\n")
        return EXIT_OK
    width = max((len(r["rule"]) for r in rows), default=4)
    out.write(f"{'RULE':{width}}  {'KIND':9}  {'MODE':8}  {'KEY':24}  {'SUBJECT':24}  TAGS\n")
    for r in rows:
        mode = r["mode"] if r["enabled"] else "disabled"
        subject = r["subject"] or "(the key)"
        line = f"{r['rule']:{width}}  {r['kind']:9}  {mode:8}  {r['key']:24}  {subject:24}  {','.join(r['tags'])}"
        out.write(printable(line).rstrip() + "\n")
    shadow = sum(r["enabled"] and r["mode"] == "shadow" for r in rows)
    disabled = sum(not r["enabled"] for r in rows)
    enforce = len(rows) - shadow - disabled
    print(f"{len(rows)} rule(s): {enforce} enforce, {shadow} shadow, {disabled} disabled", file=out)
    return EXIT_OK


RULES = Command(
    "rules",
    "list the rules with their kind, key, subject, tags and mode",
    _arguments,
    _run,
    "List every rule of the policies in PATH (directories or files), disabled ones included: its kind, "
    "the key its state is partitioned by, who its violations are against, its mode (enforce, shadow or "
    "disabled) and its tags.",
)
