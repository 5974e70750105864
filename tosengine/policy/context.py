"""Stage check (one file): what the passes over one policy file share, and how they read its fields.

A FileContext holds the source, the loaded document with its spans, the names the file declares
(params, lists, macros) and the diagnostics found so far. Its readers turn a field into a checked
value (an expression, a duration, one of a set of choices) or report why not and give None.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from tosengine.durations import parse_duration
from tosengine.policy.diagnostics import Diagnostic, Span
from tosengine.policy.expr import Expr, ExprSyntaxError, ListLit, Lit, Path, parse_expression, walk
from tosengine.policy.model import ItemKind
from tosengine.policy.sources import Source
from tosengine.policy.yaml import Key, Located

__all__ = ["FileContext", "suggest"]


def suggest(word: str, choices: Iterable[str]) -> str:
    """`did you mean ...?` for the closest of `choices`, or ""."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else ""


@dataclass
class FileContext:
    """What the checks of one file share: the source, its spans, its names, and the diagnostics so far."""

    source: Source
    doc: Located
    diags: list[Diagnostic]
    lines: list[str]
    lists: dict[str, ListLit] = field(default_factory=dict)
    macros: dict[str, Expr] = field(default_factory=dict)
    params: dict[str, int | float | str] = field(default_factory=dict)

    # ------------------------------------------------------------ places and values

    def error(self, span: Span, code: str, message: str, hint: str = "") -> None:
        """Report a problem at `span`."""
        line = self.lines[span.line - 1] if 0 < span.line <= len(self.lines) else ""
        self.diags.append(Diagnostic(self.source.path, span, code, message, hint, source_line=line))

    def at(self, path: Key) -> Span:
        """Where the value at `path` starts."""
        return self.doc.span(path)

    def key_at(self, path: Key) -> Span:
        """Where the key naming `path` starts."""
        return self.doc.key_span(path)

    def raw(self, path: Key) -> Any:
        """The value at `path` as loaded."""
        v: Any = self.doc.value
        for p in path:
            v = v[p]
        return v

    def value(self, path: Key) -> Any:
        """The raw value at `path`, with a `params` name replaced by its value."""
        raw = self.raw(path)
        return self.params[raw] if isinstance(raw, str) and raw in self.params else raw

    # ------------------------------------------------------------ readers

    def known_fields(self, path: Key, allowed: Iterable[str], what: str) -> None:
        """Report every key of the mapping at `path` that is not in `allowed`."""
        allowed = tuple(allowed)
        for k in self.raw(path):
            if k not in allowed:
                self.error(
                    self.key_at((*path, k)),
                    "unknown-field",
                    f"unknown field `{k}` in {what}",
                    suggest(k, allowed) or f"{what} fields: {', '.join(allowed)}",
                )

    def choice(self, path: Key, choices: tuple[str, ...], default: str) -> str:
        """The value at `path` if it is one of `choices`; `default` if absent (or wrong, reported)."""
        obj = self.raw(path[:-1])
        if path[-1] not in obj:
            return default
        v = obj[path[-1]]
        if v not in choices:
            self.error(
                self.at(path),
                "invalid-value",
                f"`{path[-1]}` must be one of {', '.join(choices)}",
                suggest(str(v), choices),
            )
            return default
        return str(v)

    def duration(self, path: Key) -> timedelta | None:
        """A positive duration literal (or a param naming one) at `path`."""
        raw = self.value(path)
        d = parse_duration(raw) if isinstance(raw, str) else None
        if d is None:
            self.error(
                self.at(path),
                "invalid-value",
                "a duration is a number with ms, s, m, h or d, at most 36500d: 500ms 30s 10m 2h 14d",
            )
            return None
        if d <= timedelta(0):
            self.error(self.at(path), "invalid-value", "a duration must be longer than zero")
            return None
        return d

    def expression(self, path: Key, roots: set[str], *, boolean: bool = True) -> Expr | None:
        """The expression at `path`, parsed and resolved (names, functions, types); with `boolean`
        false, a bare number or boolean is taken as a literal."""
        from tosengine.policy.resolve import Resolver  # resolve.py reports into a FileContext

        raw = self.raw(path)
        if isinstance(raw, bool | int | float) and not boolean:
            return Lit(raw, self.at(path))
        if not isinstance(raw, str) or not raw.strip():
            self.error(self.at(path), "invalid-value", f"`{path[-1]}` must be an expression (a string)")
            return None
        try:
            e = parse_expression(raw, self.at(path))
        except ExprSyntaxError as exc:
            self.error(self.at(path).shifted(exc.offset), "expr-syntax", exc.message)
            return None
        return Resolver(self, roots).resolve(e)

    def condition(self, path: Key, roots: set[str], *, boolean: bool = True) -> Expr | None:
        """An expression whose every root (after macros are inlined) is one of `roots`."""
        e = self.expression(path, roots, boolean=boolean)
        if e is not None and not self.roots_allowed(e, roots):
            return None
        return e

    def roots_allowed(self, e: Expr, roots: set[str]) -> bool:
        """After macro inlining, every path root must be allowed where the expression is used."""
        ok = True
        for p in walk(e):
            if isinstance(p, Path) and p.root not in roots:
                self.error(
                    p.span,
                    "unknown-name",
                    f"`{p.root}` is not available here",
                    suggest(p.root, roots) or f"names available here: {', '.join(sorted(roots))}",
                )
                ok = False
        return ok

    def item_kind(self, e: Expr, span: Span) -> ItemKind:
        """`fact` if the condition reads fact.*, else `event`; both is a `mixed-item` error."""
        roots = {n.root for n in walk(e) if isinstance(n, Path)}
        if "event" in roots and "fact" in roots:
            self.error(span, "mixed-item", "a condition matches either an event (event.*) or a fact (fact.*), not both")
        return "fact" if "fact" in roots else "event"
