"""Stage check and match (patterns): the regular expressions of `matches()`, run by RE2.

Patterns are written by policy authors but run on attacker-controlled events, so they run on RE2
(the `google-re2` bindings), whose matching time is linear in the input whatever the pattern:
`(a+)+$`, `\\s+$` or `^.*=.*=.*;$` cannot hang the engine on a 1 MiB string. RE2 has no
backreferences and no lookaround; check refuses patterns that use them. `matches(s, p)` is RE2's
search (a match anywhere; anchor with ^ and $).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import re2

__all__ = ["MAX_PATTERN", "compile_pattern", "compile_search", "pattern_problem"]

MAX_PATTERN = 500


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False  # a refused pattern is a diagnostic, not a line on stderr
    return options


def compile_pattern(pattern: str) -> Any:
    """The compiled pattern; re2.error if RE2 refuses it (check has said so before this is reached)."""
    return re2.compile(pattern, options=_options())


def compile_search(pattern: str) -> Callable[[str], bool]:
    """Whether the pattern matches anywhere in a string: `compile_pattern(pattern).search(s) is not None`.

    The bindings' search builds a match object through a Python generator that maps byte offsets back
    to characters (about 15 us a call); a yes/no needs none of it, so when the bindings expose the
    compiled RE2 object, its Match is asked directly (about 3 us). The text is encoded as the bindings
    encode it, so a string they refuse is refused the same way.
    """
    rx = compile_pattern(pattern)
    native = getattr(getattr(rx, "_regexp", None), "Match", None)
    anchor = getattr(getattr(re2, "_Anchor", None), "UNANCHORED", None)
    if native is None or anchor is None:  # other bindings: their public search
        return lambda s: rx.search(s) is not None
    no_match = (-1, -1)

    def search(s: str) -> bool:
        b = s.encode("utf-8")
        return bool(native(anchor, b, 0, len(b))[0] != no_match)

    return search


def pattern_problem(pattern: str) -> str:
    """Why a matches() pattern is refused (too long, or RE2 cannot compile it), or ""."""
    if len(pattern) > MAX_PATTERN:
        return f"regular expression longer than {MAX_PATTERN} characters"
    try:
        compile_pattern(pattern)
    except re2.error as exc:
        detail = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        return (
            f"regular expression not accepted by RE2 (the linear-time matcher): {detail}; backreferences and "
            "lookaround are not supported"
        )
    return ""
