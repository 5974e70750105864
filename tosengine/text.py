"""Text meant for people (tables, summaries, explanations): shown so that it cannot forge what it is in."""

from __future__ import annotations

import re

__all__ = ["printable"]

# Control characters (newlines, ESC, ...) and the bidirectional overrides could forge rows of a table or
# hide the rest of it; in text meant for people they are shown escaped.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` with every control character shown as an escape (`\\n`, `\\x1b`, `\\u202e`)."""
    if _UNPRINTABLE.search(text) is None:
        return text
    return _UNPRINTABLE.sub(lambda m: repr(m[0])[1:-1] if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", text)
