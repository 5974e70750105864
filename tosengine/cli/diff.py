"""`tosengine diff`: what a policy change would change, replayed over events."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from tosengine.cli.common import EXIT_USAGE, Command

__all__ = ["DIFF"]


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("rest", nargs=argparse.REMAINDER)


def _run(args: argparse.Namespace, out: TextIO) -> int:
    print("tosengine diff: not available yet", file=sys.stderr)
    return EXIT_USAGE


DIFF = Command("diff", "what a policy change would change, replayed over events", _arguments, _run)
