"""Sensitive values: what `sensitive:` paths hold is never stored or shown in the clear.

A Masker replaces a value by `masked:hmac-sha256:<digest>`, an HMAC keyed with a salt (the audit
database's, so equal values give equal masks across processes; without an audit log, the engine's
own). Equal values still compare equal, which is all a rule keyed or correlated on a masked value
needs; the value itself cannot be recovered. It masks events (a path may go through list indices,
`data.cards.0.number`), text that could not be parsed as an event (by the last name of each path), and
single values a rule renders from a sensitive field (a key, a subject, a message part, emitted data).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from typing import Any

from tosengine.policy.expr import Expr, Path, walk

__all__ = ["MASK_PREFIX", "Masker", "expr_reads_sensitive", "reads_sensitive"]

MASK_PREFIX = "masked:hmac-sha256:"


def _json(v: Any) -> str:
    return json.dumps(v, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def reads_sensitive(parts: tuple[str, ...], paths: tuple[tuple[str, ...], ...]) -> bool:
    """Whether reading an event at `parts` reveals a sensitive path: the path itself, a part of it, or
    an object that holds it (`event.data` holds `data.password`)."""
    return any(parts[: len(p)] == p or p[: len(parts)] == parts for p in paths)


def expr_reads_sensitive(e: Expr, paths: tuple[tuple[str, ...], ...]) -> bool:
    """Whether an expression reads a sensitive path of an event (through `event`, `after` or a step's
    name; facts carry no sensitive value: what a rule emits from one is masked at the source)."""
    return bool(paths) and any(
        isinstance(p, Path) and p.root != "fact" and reads_sensitive(p.parts, paths) for p in walk(e)
    )


class Masker:
    """Masks the sensitive `paths` of events, and single values, with an HMAC keyed by `salt`."""

    def __init__(self, salt: bytes, paths: tuple[tuple[str, ...], ...] = ()) -> None:
        self.salt = salt
        self.paths = paths
        names = sorted({re.escape(p[-1]) for p in paths})
        # For text that is not JSON: any "name": value pair with the last name of a sensitive path.
        self._text = (
            re.compile(r'"(' + "|".join(names) + r')"(\s*:\s*)("(?:[^"\\]|\\.)*"|[^,}\]\s]+)') if names else None
        )

    def value(self, v: Any) -> str:
        """The mask of one value."""
        return (
            MASK_PREFIX
            + hmac.new(self.salt, _json(v).encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:24]
        )

    def event(self, body: dict[str, Any]) -> dict[str, Any]:
        """A copy of an event (as JSON values) with every sensitive path masked; the event itself if none."""
        if not self.paths:
            return body
        out: dict[str, Any] = json.loads(_json(body))
        for path in self.paths:
            cur: Any = out
            for part in path[:-1]:
                cur = _step(cur, part)
            last = path[-1]
            if isinstance(cur, dict) and last in cur:
                cur[last] = self.value(cur[last])
            elif isinstance(cur, list) and last.isdigit() and int(last) < len(cur):
                cur[int(last)] = self.value(cur[int(last)])
        return out

    def text(self, raw: str) -> str:
        """Input that was rejected, masked: as an event if it parses as a JSON object, else every value
        named like a sensitive path's last part."""
        if not self.paths:
            return raw
        try:
            obj = json.loads(raw)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            return _json(self.event(obj))
        assert self._text is not None
        return self._text.sub(lambda m: f'"{m[1]}"{m[2]}"{self.value(m[3])}"', raw)


def _step(cur: Any, part: str) -> Any:
    if isinstance(cur, dict):
        return cur.get(part)
    if isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
        return cur[int(part)]
    return None
