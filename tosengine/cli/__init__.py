"""The `tosengine` command: a thin client of the library, one module per command (tosengine/cli/*.py).

`main` builds the parser from NAMES and dispatches to the command's `run`; every error tosengine
raises on purpose becomes a message and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from tosengine._version import __version__
from tosengine.cli.common import EXIT_OK, EXIT_USAGE, Command
from tosengine.errors import TosEngineError

__all__ = ["NAMES", "command", "main"]

# The commands, in the order `tosengine --help` lists them; each is the Command of tosengine/cli/NAME.py.
# A command's module is imported when it runs (all of them only for `tosengine --help`), so each command
# loads only what it uses: `check`, `test`, `eval` and `replay --dry-run` start without the audit log's
# SQLAlchemy and Alembic, about 0.8 s of a start-up that is otherwise 0.4 s.
NAMES = (
    "check",
    "test",
    "rules",
    "schema",
    "eval",
    "replay",
    "diff",
    "audit",
    "explain",
    "db",
    "serve",
    "worker",
    "produce",
)


def command(name: str) -> Command:
    """The command called `name` (one of NAMES), its module imported."""
    module = importlib.import_module(f"tosengine.cli.{name}")
    found = getattr(module, name.upper())
    assert isinstance(found, Command) and found.name == name
    return found


class _Version(argparse.Action):
    """--version: the version and the build, worked out only when asked (it looks at the files)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help=str(kwargs.get("help")))

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        from tosengine._native import describe

        print(f"tosengine {__version__} ({describe()})")
        parser.exit()


def _parser(chosen: str | None) -> argparse.ArgumentParser:
    """The parser; with a command `chosen`, only that command's module is loaded (the others are named)."""
    p = argparse.ArgumentParser(
        prog="tosengine",
        description="Terms-of-service enforcement: check policies, replay events, find violations.",
        epilog="Policy language: docs/policy-language.md. Exit codes: 0 ok, 1 findings "
        "(diagnostics or rejected events), 2 usage or unusable policies.",
    )
    p.add_argument("--version", action=_Version, help="show the version and the build (pure Python or native)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in NAMES:
        if chosen is None or name == chosen:
            c = command(name)
            c.arguments(sub.add_parser(c.name, help=c.help, description=c.description or c.help))
        else:
            sub.add_parser(name)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `tosengine` command."""
    given = list(sys.argv[1:] if argv is None else argv)
    args = _parser(given[0] if given and given[0] in NAMES else None).parse_args(given)
    try:
        return command(args.command).run(args, sys.stdout)
    except TosEngineError as exc:
        print(f"tosengine: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_OK
