"""`tosengine schema`: print the JSON Schema of the policy file format."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from tosengine.cli.common import EXIT_USAGE, Command

__all__ = ["SCHEMA"]


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("rest", nargs=argparse.REMAINDER)


def _run(args: argparse.Namespace, out: TextIO) -> int:
    print("tosengine schema: not available yet", file=sys.stderr)
    return EXIT_USAGE


SCHEMA = Command("schema", "print the JSON Schema of the policy file format", _arguments, _run)
