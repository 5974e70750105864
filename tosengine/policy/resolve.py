"""Stage check (expressions): resolve list, macro and param names; check calls, regexes and types.

Everything here reports into a FileContext (policy/context.py), which collects diagnostics for one file.
"""

from __future__ import annotations

import re

from tosengine.durations import parse_duration
from tosengine.policy.context import FileContext, suggest
from tosengine.policy.diagnostics import Span
from tosengine.policy.expr import (
    FUNCTIONS,
    Binary,
    Call,
    DurationLit,
    Expr,
    ExprSyntaxError,
    ListLit,
    Lit,
    Path,
    Unary,
    parse_expression,
)
from tosengine.policy.regex import pattern_problem

__all__ = ["Resolver", "parse_template"]

_TYPE_NAMES = {"num": "number", "str": "string"}


# ---------------------------------------------------------------- expressions


def parse_template(text: str, base: Span) -> tuple[list[str | Expr], list[tuple[str, Span]]]:
    """Split `a {expr} b` into text and parsed expressions; `{{`/`}}` are literal braces."""
    parts: list[str | Expr] = []
    errors: list[tuple[str, Span]] = []
    buf, i = [], 0
    while i < len(text):
        c = text[i]
        if c in "{}" and text[i : i + 2] in ("{{", "}}"):
            buf.append(c)
            i += 2
        elif c == "{":
            end = text.find("}", i)
            if end < 0:
                errors.append(("unclosed `{` in message", base.shifted(i)))
                break
            if buf:
                parts.append("".join(buf))
                buf = []
            try:
                parts.append(parse_expression(text[i + 1 : end], base.shifted(i + 1)))
            except ExprSyntaxError as exc:
                errors.append((exc.message, base.shifted(i + 1 + exc.offset)))
            i = end + 1
        else:
            buf.append(c)
            i += 1
    if buf:
        parts.append("".join(buf))
    return parts, errors


class Resolver:
    """Replaces list and macro names by their values and reports unknown names, functions, types."""

    def __init__(self, ctx: FileContext, roots: set[str]) -> None:
        self.ctx = ctx
        self.roots = roots

    def resolve(self, e: Expr) -> Expr | None:
        ok = True

        def go(x: Expr) -> Expr:
            nonlocal ok
            if isinstance(x, Path):
                if any(p.startswith("_") for p in (x.root, *x.parts)):
                    self.ctx.error(
                        x.span, "invalid-value", f"`{x.dotted}`: names starting with _ are not allowed in expressions"
                    )
                    ok = False
                    return x
                if x.root in self.roots:
                    return x
                if not x.parts and x.root in self.ctx.lists:
                    return ListLit(self.ctx.lists[x.root].items, x.span)
                if not x.parts and x.root in self.ctx.macros:
                    return self.ctx.macros[x.root]
                if not x.parts and x.root in self.ctx.params:
                    v = self.ctx.params[x.root]
                    d = parse_duration(v) if isinstance(v, str) else None
                    return DurationLit(d, x.span) if d is not None else Lit(v, x.span)
                known = sorted(self.roots | set(self.ctx.lists) | set(self.ctx.macros) | set(self.ctx.params))
                self.ctx.error(
                    x.span,
                    "unknown-name",
                    f"unknown name `{x.root}`",
                    suggest(x.root, known) or f"names available here: {', '.join(known)}",
                )
                ok = False
                return x
            if isinstance(x, ListLit):
                return ListLit(tuple(go(i) for i in x.items), x.span)
            if isinstance(x, Unary):
                return Unary(x.op, go(x.operand), x.span)
            if isinstance(x, Binary):
                return Binary(x.op, go(x.left), go(x.right), x.span)
            if isinstance(x, Call):
                if x.func not in FUNCTIONS:
                    self.ctx.error(
                        x.span,
                        "unknown-function",
                        f"unknown function `{x.func}`",
                        suggest(x.func, FUNCTIONS) or f"functions: {', '.join(sorted(FUNCTIONS))}",
                    )
                    ok = False
                elif len(x.args) != FUNCTIONS[x.func]:
                    self.ctx.error(
                        x.span, "invalid-value", f"`{x.func}` takes {FUNCTIONS[x.func]} argument(s), got {len(x.args)}"
                    )
                    ok = False
                return Call(x.func, tuple(go(a) for a in x.args), x.span)
            return x

        out = go(e)
        if ok and not self._types(out):
            return None
        return out if ok else None

    def _types(self, e: Expr) -> bool:
        ok = True

        def bad(span: Span, msg: str) -> str:
            nonlocal ok
            ok = False
            self.ctx.error(span, "type-mismatch", re.sub(r"\b(num|str)\b", lambda m: _TYPE_NAMES[m[0]], msg))
            return "any"

        def ty(x: Expr) -> str:
            if isinstance(x, Lit):
                v = x.value
                return (
                    "null" if v is None else "bool" if isinstance(v, bool) else "str" if isinstance(v, str) else "num"
                )
            if isinstance(x, DurationLit):
                return "duration"
            if isinstance(x, ListLit):
                for i in x.items:
                    ty(i)
                return "list"
            if isinstance(x, Path):
                return "time" if x.parts == ("time",) else "any"
            if isinstance(x, Unary):
                t = ty(x.operand)
                if x.op == "-":
                    return t if t in ("num", "duration", "any") else bad(x.span, f"cannot negate a {t}")
                return "bool"
            if isinstance(x, Call):
                ts = [ty(a) for a in x.args]
                if x.func == "matches":
                    pat = x.args[1]
                    if not (isinstance(pat, Lit) and isinstance(pat.value, str)):
                        return bad(pat.span, "the pattern of matches() must be a string literal")
                    problem = pattern_problem(pat.value)
                    if problem:
                        self.ctx.error(pat.span, "bad-regex", problem)
                        nonlocal ok
                        ok = False
                if x.func in ("days", "hours", "minutes"):
                    if ts[0] not in ("num", "any"):
                        return bad(x.span, f"{x.func}() takes a number, got a {ts[0]}")
                    return "duration"
                if x.func in ("lower",):
                    return "str" if ts[0] in ("str", "any") else bad(x.span, f"lower() takes a string, got a {ts[0]}")
                if x.func == "len":
                    return "num"
                return "bool"
            assert isinstance(x, Binary)
            lt, rt = ty(x.left), ty(x.right)
            if x.op in ("and", "or"):
                for side, t in ((x.left, lt), (x.right, rt)):
                    if t not in ("bool", "any"):
                        bad(side.span, f"`{x.op}` needs true/false operands, got a {t}")
                return "bool"
            if x.op in ("+", "-"):
                if "any" in (lt, rt):
                    if x.op == "+" and "str" in (lt, rt):
                        return "str"
                    return "time" if "time" in (lt, rt) else "any"
                table = {("num", "num"): "num", ("time", "duration"): "time", ("duration", "duration"): "duration"}
                if x.op == "+":
                    table[("duration", "time")] = "time"
                    table[("str", "str")] = "str"  # strings join: "origin:" + event.data.origin
                else:
                    table[("time", "time")] = "duration"
                if (lt, rt) not in table:
                    return bad(x.span, f"cannot apply `{x.op}` to a {lt} and a {rt}")
                return table[(lt, rt)]
            if x.op in ("in", "not in"):
                if rt not in ("list", "any"):
                    bad(x.right.span, f"the right side of `{x.op}` must be a list, got a {rt}")
                return "bool"
            # comparisons
            if "any" not in (lt, rt) and "null" not in (lt, rt) and lt != rt:
                bad(x.span, f"comparing a {lt} with a {rt} is always false")
            elif x.op in ("<", "<=", ">", ">=") and (lt in ("bool", "list") or rt in ("bool", "list")):
                bad(x.span, f"`{x.op}` does not order a {lt if lt in ('bool', 'list') else rt}")
            return "bool"

        ty(e)
        return ok

    def type_of(self, e: Expr) -> str:
        """The static type of an already-resolved expression (for `within`)."""
        if isinstance(e, DurationLit):
            return "duration"
        if isinstance(e, Call) and e.func in ("days", "hours", "minutes"):
            return "duration"
        if isinstance(e, Binary) and e.op in ("+", "-"):
            lt, rt = self.type_of(e.left), self.type_of(e.right)
            return "duration" if lt == rt == "duration" else "any"
        return "any"
