"""Durations as the policy language and the test files write them: `30s 10m 2h 14d`, sub-second
`500ms` or `0.5s`, and (where a compound is allowed) `1h30m`.

The one parser of durations: policies, policy tests and the CLI all read them here.
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

__all__ = ["MAX_DURATION", "format_duration", "parse_duration"]

# Microseconds per unit; `ms` before `m` in the patterns so `500ms` is not read as 500 minutes.
_MICROS = {"ms": 1_000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000, "d": 86_400_000_000}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|[smhd])")
_SINGLE = re.compile(rf"{_PART.pattern}")
_COMPOUND = re.compile(rf"(?:{_PART.pattern})+")
# Far beyond any window a policy needs, and small enough that event times (1970-2200) plus or minus
# it never leave the range datetime can hold.
MAX_DURATION = timedelta(days=36_500)


def parse_duration(text: str, *, compound: bool = False) -> timedelta | None:
    """`14d` -> timedelta (also `500ms`, `0.5s`, `1.5h`; with `compound`, `1h30m`); None if the text is
    not such a duration. Fractions finer than a microsecond are dropped (so `0.0000001s` is zero, which
    the callers that need a positive duration report).

    Durations longer than MAX_DURATION are not durations: None, so callers report them as invalid.
    """
    text = text.strip()
    if not (_COMPOUND if compound else _SINGLE).fullmatch(text):
        return None
    micros = 0
    for n, unit in _PART.findall(text):
        if len(n) > 12:  # more digits than any duration under the maximum needs
            return None
        # Decimal, not float: 0.1s is exactly 100ms.
        micros += int(Decimal(n) * _MICROS[unit])
        if micros > MAX_DURATION // timedelta(microseconds=1):
            return None
    return timedelta(microseconds=micros)


def format_duration(d: timedelta) -> str:
    """A duration as the language writes it: 10m, 1d, 1h30m, 500ms, 1s250ms (parse_duration with
    `compound` reads it back)."""
    micros = d // timedelta(microseconds=1)
    if micros == 0:
        return "0s"
    sign, micros = ("-", -micros) if micros < 0 else ("", micros)
    secs, frac = divmod(micros, 1_000_000)
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            out.append(f"{secs // size}{unit}")
            secs %= size
    if frac % 1000:  # finer than a millisecond: seconds with a decimal fraction
        out.append(f"{secs}.{frac:06d}".rstrip("0") + "s")
    else:
        if secs:
            out.append(f"{secs}s")
        if frac:
            out.append(f"{frac // 1000}ms")
    return sign + "".join(out)
