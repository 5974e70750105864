"""Durations as the policy language and the test files write them: `30s 10m 2h 14d` (and `1h30m`).

The one parser of durations: policies, policy tests and the CLI all read them here.
"""

from __future__ import annotations

import re
from datetime import timedelta

__all__ = ["MAX_DURATION", "format_duration", "parse_duration"]

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_SINGLE = re.compile(r"(\d+)([smhd])")
_COMPOUND = re.compile(r"(?:\d+[smhd])+")
_PART = re.compile(r"(\d+)([smhd])")
# Far beyond any window a policy needs, and small enough that event times (1970-2200) plus or minus
# it never leave the range datetime can hold.
MAX_DURATION = timedelta(days=36_500)


def parse_duration(text: str, *, compound: bool = False) -> timedelta | None:
    """`14d` -> timedelta (with `compound`, also `1h30m`); None if the text is not such a duration.

    Durations longer than MAX_DURATION are not durations: None, so callers report them as invalid.
    """
    text = text.strip()
    if not (_COMPOUND if compound else _SINGLE).fullmatch(text):
        return None
    total = timedelta()
    for n, unit in _PART.findall(text):
        if len(n) > 9:  # more digits than any duration under the maximum needs
            return None
        total += timedelta(**{_UNITS[unit]: int(n)})
        if total > MAX_DURATION:
            return None
    return total


def format_duration(d: timedelta) -> str:
    """A duration as the language writes it: 10m, 1d, 1h30m (fractions of a second dropped)."""
    secs = int(d.total_seconds())
    if secs == 0:
        return "0s"
    sign, secs = ("-", -secs) if secs < 0 else ("", secs)
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if secs >= size:
            out.append(f"{secs // size}{unit}")
            secs %= size
    return sign + "".join(out)
