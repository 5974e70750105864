"""`tosengine eval`: one event against the policies, rule by rule."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from tosengine.cli.common import EXIT_USAGE, Command

__all__ = ["EVAL"]


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("rest", nargs=argparse.REMAINDER)


def _run(args: argparse.Namespace, out: TextIO) -> int:
    print("tosengine eval: not available yet", file=sys.stderr)
    return EXIT_USAGE


EVAL = Command("eval", "one event against the policies, rule by rule", _arguments, _run)
