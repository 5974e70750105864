"""What the commands share: defaults, arguments, exit codes, and how violations are printed."""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, TextIO

from tosengine.errors import PolicyError
from tosengine.events import parse_time
from tosengine.text import printable
from tosengine.violation import Repeat, Violation, format_time

if TYPE_CHECKING:
    from tosengine.policy.model import CheckedPolicySet

__all__ = [
    "EXIT_FINDINGS",
    "EXIT_OK",
    "EXIT_USAGE",
    "Command",
    "db_arg",
    "db_url",
    "load_policies",
    "policies_dir",
    "print_repeat",
    "print_violation",
    "printable",
    "time_arg",
]

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2


@dataclass(frozen=True)
class Command:
    """One CLI command: its name, help line, arguments and what it runs (returning the exit status)."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, TextIO], int]
    description: str = ""


def settle_heap() -> None:
    """Exempt what start-up made (modules, the compiled policies, a resumed state) from the cyclic garbage
    collector: it lives as long as the process, and each full collection would walk it again. About a tenth
    of a 100,000-event dry replay (docs/performance.md). For the commands that own their process; the
    library leaves the collector as the embedding program set it."""
    gc.freeze()


def policies_dir(given: str | None) -> str:
    """The policy directory: as given, else $TOSENGINE_POLICIES, else ./policies."""
    return given or os.environ.get("TOSENGINE_POLICIES", "policies")


def load_policies(given: str | None) -> CheckedPolicySet | None:
    """The checked policy set of the directory `given` (policies_dir's default), or None after printing
    every diagnostic (or the missing directory) to stderr: the caller exits with EXIT_USAGE."""
    # Imported here: the commands that read no policies (audit, db) do not load the checker.
    from tosengine.policy.check import check_policy_set
    from tosengine.policy.sources import read_schemas, read_sources

    directory = policies_dir(given)
    try:
        return check_policy_set(read_sources(directory), read_schemas(directory))
    except PolicyError as exc:
        for d in exc.diagnostics:
            print(d.render(), file=sys.stderr)
    except FileNotFoundError as exc:
        print(f"tosengine: {exc}", file=sys.stderr)
    return None


def db_url(given: str | None) -> str:
    """The audit database URL: as given, else $TOSENGINE_DB, else sqlite:///tosengine.db."""
    return given or os.environ.get("TOSENGINE_DB", "sqlite:///tosengine.db")


def db_arg(p: argparse.ArgumentParser) -> None:
    """The --db option."""
    p.add_argument(
        "--db",
        default=None,
        metavar="URL",
        help="audit database URL (default: $TOSENGINE_DB or sqlite:///tosengine.db)",
    )


def time_arg(text: str) -> datetime:
    """An RFC 3339 time argument."""
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def print_repeat(r: Repeat, fmt: str, out: TextIO) -> None:
    """One repeat record as a table row or a JSON line (with `repeat_of`)."""
    if fmt == "json":
        out.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")
    else:
        more = f"+{r.count} more ({format_time(r.first)}..{format_time(r.last)})"
        out.write(
            f"{format_time(r.time):24} {r.rule:48} {printable(r.subject):28} {'repeat':8} {more:14} of {r.repeat_of}\n"
        )


def print_violation(v: Violation, fmt: str, out: TextIO) -> None:
    """One violation as a table row or a JSON line."""
    if fmt == "json":
        out.write(json.dumps(v.to_json(), ensure_ascii=False) + "\n")
    else:
        evidence = printable(",".join(v.evidence))
        out.write(
            f"{format_time(v.time):24} {v.rule:48} {printable(v.subject):28} {v.severity:8} {v.action:14} {evidence}\n"
        )
