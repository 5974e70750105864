"""Stage check (for people): a checked expression -> its text, macros and named lists written out.

`tosengine rules` shows keys and subjects with it, and `tosengine eval` the condition that failed.
The text parses back to the same expression (lists longer than `max_items` are shortened, for reading).
"""

from __future__ import annotations

import json

from tosengine.durations import format_duration
from tosengine.policy.expr import Binary, Call, DurationLit, Expr, ListLit, Lit, Path, Unary

__all__ = ["format_expr"]

# Binding strength, loosest first, as the parser reads them (policy/expr.py).
_OR, _AND, _NOT, _CMP, _ADD, _NEG, _ATOM = range(1, 8)
_PREC = {"or": _OR, "and": _AND, "+": _ADD, "-": _ADD}


def _prec(e: Expr) -> int:
    if isinstance(e, Binary):
        return _PREC.get(e.op, _CMP)
    if isinstance(e, Unary):
        return _NOT if e.op == "not" else _NEG
    return _ATOM


def format_expr(e: Expr, max_items: int = 0) -> str:
    """The expression as text; with `max_items`, a longer list shows its first items and `...`."""

    def at(x: Expr, least: int) -> str:
        text = go(x)
        return f"({text})" if _prec(x) < least else text

    def go(x: Expr) -> str:
        if isinstance(x, Lit):
            if x.value is None:
                return "null"
            if isinstance(x.value, bool):
                return "true" if x.value else "false"
            return json.dumps(x.value, ensure_ascii=False)
        if isinstance(x, DurationLit):
            return format_duration(x.value)
        if isinstance(x, Path):
            return x.dotted
        if isinstance(x, ListLit):
            items = [go(i) for i in x.items]
            if max_items and len(items) > max_items:
                items = [*items[:max_items], f"... {len(items) - max_items} more"]
            return "[" + ", ".join(items) + "]"
        if isinstance(x, Call):
            return f"{x.func}({', '.join(go(a) for a in x.args)})"
        if isinstance(x, Unary):
            return f"not {at(x.operand, _NOT)}" if x.op == "not" else f"-{at(x.operand, _NEG)}"
        p = _prec(x)
        if p == _CMP:  # comparisons do not chain: both sides are additive or tighter
            return f"{at(x.left, _ADD)} {x.op} {at(x.right, _ADD)}"
        # and, or, + and - associate to the left: the right operand binds tighter.
        return f"{at(x.left, p)} {x.op} {at(x.right, p + 1)}"

    return go(e)
