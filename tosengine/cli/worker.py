"""`tosengine worker`: run a Kafka consumer-group worker."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from tosengine.cli.common import EXIT_USAGE, Command

__all__ = ["WORKER"]


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("rest", nargs=argparse.REMAINDER)


def _run(args: argparse.Namespace, out: TextIO) -> int:
    print("tosengine worker: not available yet", file=sys.stderr)
    return EXIT_USAGE


WORKER = Command("worker", "run a Kafka consumer-group worker", _arguments, _run)
