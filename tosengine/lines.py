"""Stage input (streams): files or stdin -> numbered lines, an over-long line cut and flagged, not held.

`replay` and `diff` read their JSON Lines here, so both see the same lines with the same numbers.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from typing import BinaryIO

__all__ = ["Line", "input_size", "read_lines"]

# (file, line number, raw bytes, whether the line was longer than the limit)
Line = tuple[str, int, bytes, bool]


def read_lines(files: Sequence[str], limit: int) -> Iterator[Line]:
    """Every line of every input ("-" is stdin); a line longer than `limit` bytes is read past, not held
    (its first `limit` bytes are what is kept), and flagged."""
    for name in files:
        if name == "-":
            yield from _read("<stdin>", sys.stdin.buffer, limit)
        else:
            with open(name, "rb") as fh:
                yield from _read(name, fh, limit)


def _read(label: str, stream: BinaryIO, limit: int) -> Iterator[Line]:
    n = 0
    while raw := stream.readline(limit + 1):
        n += 1
        if len(raw) <= limit or raw.endswith(b"\n"):
            yield label, n, raw, len(raw.rstrip(b"\r\n")) > limit
            continue
        while (rest := stream.readline(1 << 20)) and not rest.endswith(b"\n"):
            pass  # the rest of an over-long line, dropped
        yield label, n, raw, True


def input_size(files: Sequence[str]) -> int | None:
    """The total bytes of the inputs (for a progress bar), or None when one is stdin or not a plain file."""
    total = 0
    for name in files:
        if name == "-" or not os.path.isfile(name):
            return None
        total += os.path.getsize(name)
    return total
