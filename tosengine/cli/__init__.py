"""The `tosengine` command: a thin client of the library, one module per command (tosengine/cli/*.py).

`main` builds the parser from COMMANDS and dispatches to the command's `run`; every error tosengine
raises on purpose becomes a message and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tosengine._version import __version__
from tosengine.cli.audit import AUDIT
from tosengine.cli.check import CHECK
from tosengine.cli.common import EXIT_OK, EXIT_USAGE, Command
from tosengine.cli.db import DB
from tosengine.cli.diff import DIFF
from tosengine.cli.eval import EVAL
from tosengine.cli.explain import EXPLAIN
from tosengine.cli.produce import PRODUCE
from tosengine.cli.replay import REPLAY
from tosengine.cli.rules import RULES
from tosengine.cli.schema import SCHEMA
from tosengine.cli.serve import SERVE
from tosengine.cli.test import TEST
from tosengine.cli.worker import WORKER
from tosengine.errors import TosEngineError

__all__ = ["COMMANDS", "main"]

COMMANDS: dict[str, Command] = {
    c.name: c for c in (CHECK, TEST, RULES, SCHEMA, EVAL, REPLAY, DIFF, AUDIT, EXPLAIN, DB, SERVE, WORKER, PRODUCE)
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tosengine",
        description="Terms-of-service enforcement: check policies, replay events, find violations.",
        epilog="Policy language: docs/policy-language.md. Exit codes: 0 ok, 1 findings "
        "(diagnostics or rejected events), 2 usage or unusable policies.",
    )
    p.add_argument("--version", action="version", version=f"tosengine {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for c in COMMANDS.values():
        c.arguments(sub.add_parser(c.name, help=c.help, description=c.description or c.help))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `tosengine` command."""
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command].run(args, sys.stdout)
    except TosEngineError as exc:
        print(f"tosengine: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_OK
