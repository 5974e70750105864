"""`tosengine produce`: load a JSON Lines file into a Kafka topic."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from tosengine.cli.common import EXIT_USAGE, Command

__all__ = ["PRODUCE"]


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("rest", nargs=argparse.REMAINDER)


def _run(args: argparse.Namespace, out: TextIO) -> int:
    print("tosengine produce: not available yet", file=sys.stderr)
    return EXIT_USAGE


PRODUCE = Command("produce", "load a JSON Lines file into a Kafka topic", _arguments, _run)
