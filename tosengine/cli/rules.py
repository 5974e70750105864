"""`tosengine rules`: list the rules with their kind, key, subject, tags and mode."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from tosengine.cli.common import EXIT_USAGE, Command

__all__ = ["RULES"]


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("rest", nargs=argparse.REMAINDER)


def _run(args: argparse.Namespace, out: TextIO) -> int:
    print("tosengine rules: not available yet", file=sys.stderr)
    return EXIT_USAGE


RULES = Command("rules", "list the rules with their kind, key, subject, tags and mode", _arguments, _run)
