"""`tosengine serve`: run the engine as an HTTP service (CloudEvents)."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from tosengine.cli.common import EXIT_USAGE, Command

__all__ = ["SERVE"]


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("rest", nargs=argparse.REMAINDER)


def _run(args: argparse.Namespace, out: TextIO) -> int:
    print("tosengine serve: not available yet", file=sys.stderr)
    return EXIT_USAGE


SERVE = Command("serve", "run the engine as an HTTP service (CloudEvents)", _arguments, _run)
