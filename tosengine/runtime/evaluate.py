"""Stage match (conditions): expression AST -> Python closures over an environment of items.

The closures implement docs/semantics.md; the reference evaluator has its own, independent interpreter.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Final

from tosengine.durations import format_duration
from tosengine.policy.expr import Binary, Call, DurationLit, Expr, ListLit, Lit, Path, Unary
from tosengine.policy.model import Template
from tosengine.policy.regex import compile_search
from tosengine.violation import format_time

__all__ = ["MISSING", "Env", "Fn", "Render", "compile_expr", "compile_template", "lookup", "truthy"]


class _Missing:
    """The value of anything absent: a missing field, JSON null, or an operation on the wrong types."""

    _instance: _Missing | None = None

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()
Env = dict[str, dict[str, Any]]
Fn = Callable[[Env], Any]


def lookup(fields: dict[str, Any] | None, parts: tuple[str, ...]) -> Any:
    """Walk `parts` from an item's fields; absent (and null) gives MISSING."""
    cur: Any = fields
    if cur is None:
        return MISSING
    for p in parts:
        if type(cur) is dict:
            cur = cur.get(p, MISSING)
        elif type(cur) is list and p.isdigit() and int(p) < len(cur):
            cur = cur[int(p)]
        else:
            return MISSING
        if cur is None:
            return MISSING
    return cur


def truthy(v: Any) -> bool:
    """Only the boolean true is true."""
    return v is True


def _kind(v: Any) -> str:
    t = type(v)
    if t is bool:
        return "bool"
    if t is int or t is float:
        return "num"
    if t is str:
        return "str"
    if t is datetime:
        return "time"
    if t is timedelta:
        return "duration"
    if t is list:
        return "list"
    if t is dict:
        return "dict"
    return "other"


def _eq(a: Any, b: Any) -> bool:
    if a is MISSING or b is MISSING:
        return False
    ka, kb = _kind(a), _kind(b)
    if ka != kb or ka == "other":
        return False
    if ka == "list":
        return len(a) == len(b) and all(_eq(x, y) for x, y in zip(a, b, strict=True))
    if ka == "dict":
        return a.keys() == b.keys() and all(_eq(a[k], b[k]) for k in a)
    return bool(a == b)


_ORDERED = {"num", "str", "time", "duration"}


def _cmp(op: str) -> Callable[[Any, Any], bool]:
    import operator

    f = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}[op]

    def cmp(a: Any, b: Any) -> bool:
        if a is MISSING or b is MISSING:
            return False
        ka = _kind(a)
        if ka != _kind(b) or ka not in _ORDERED:
            return False
        return bool(f(a, b))

    return cmp


def _in(a: Any, b: Any) -> bool:
    if a is MISSING or type(b) is not list:
        return False
    return any(_eq(a, x) for x in b)


def _add(a: Any, b: Any) -> Any:
    ka, kb = _kind(a), _kind(b)
    try:
        if (ka, kb) in (
            ("num", "num"),
            ("time", "duration"),
            ("duration", "duration"),
            ("duration", "time"),
            ("str", "str"),
        ):
            return a + b
    except OverflowError:
        pass
    return MISSING


def _sub(a: Any, b: Any) -> Any:
    ka, kb = _kind(a), _kind(b)
    try:
        if (ka, kb) in (("num", "num"), ("time", "duration"), ("duration", "duration"), ("time", "time")):
            return a - b
    except OverflowError:
        pass
    return MISSING


def _duration(unit: str) -> Callable[[Any], Any]:
    def make(n: Any) -> Any:
        if _kind(n) != "num":
            return MISSING
        try:
            return timedelta(**{unit: n}) if math.isfinite(n) else MISSING
        except (OverflowError, ValueError):  # beyond what a duration can hold
            return MISSING

    return make


def _len(x: Any) -> Any:
    return len(x) if _kind(x) in ("str", "list", "dict") else MISSING


def _lower(x: Any) -> Any:
    return x.lower() if type(x) is str else MISSING


def _startswith(s: Any, p: Any) -> bool:
    return type(s) is str and type(p) is str and s.startswith(p)


_UNARY_FUNCS: dict[str, Callable[[Any], Any]] = {
    "exists": lambda x: x is not MISSING,
    "lower": _lower,
    "len": _len,
    "days": _duration("days"),
    "hours": _duration("hours"),
    "minutes": _duration("minutes"),
}


def _string_set(e: Expr) -> frozenset[str] | None:
    """The values of a list literal of strings only (a named list included), else None."""
    if isinstance(e, ListLit) and e.items and all(isinstance(i, Lit) and isinstance(i.value, str) for i in e.items):
        return frozenset(str(i.value) for i in e.items if isinstance(i, Lit))
    return None


def compile_expr(e: Expr) -> Fn:
    """Compile an expression to a closure `env -> value`."""
    if isinstance(e, Lit):
        v = MISSING if e.value is None else e.value
        return lambda env: v
    if isinstance(e, DurationLit):
        d = e.value
        return lambda env: d
    if isinstance(e, ListLit):
        items = [compile_expr(i) for i in e.items]
        if all(isinstance(i, Lit) for i in e.items):
            const = [MISSING if i.value is None else i.value for i in e.items if isinstance(i, Lit)]
            return lambda env: const
        return lambda env: [f(env) for f in items]
    if isinstance(e, Path):
        root, parts = e.root, e.parts

        def path(env: Env) -> Any:
            return lookup(env.get(root), parts)

        return path
    if isinstance(e, Unary):
        f = compile_expr(e.operand)
        if e.op == "not":
            return lambda env: f(env) is not True

        def neg(env: Env) -> Any:
            v = f(env)
            if _kind(v) not in ("num", "duration"):
                return MISSING
            try:
                return -v
            except OverflowError:  # -timedelta.min
                return MISSING

        return neg
    if isinstance(e, Call):
        args = [compile_expr(a) for a in e.args]
        if e.func == "matches":
            pat = e.args[1]
            assert isinstance(pat, Lit) and isinstance(pat.value, str)
            search = compile_search(pat.value)
            s = args[0]
            return lambda env: type(v := s(env)) is str and search(v)
        if e.func == "startswith":
            a0, a1 = args
            return lambda env: _startswith(a0(env), a1(env))
        fn = _UNARY_FUNCS[e.func]
        a = args[0]
        return lambda env: fn(a(env))
    assert isinstance(e, Binary)
    left, right = compile_expr(e.left), compile_expr(e.right)
    op = e.op
    if op == "and":
        return lambda env: left(env) is True and right(env) is True
    if op == "or":
        return lambda env: left(env) is True or right(env) is True
    if op == "==":
        return lambda env: _eq(left(env), right(env))
    if op == "!=":
        return lambda env: not _eq(left(env), right(env))
    strings = _string_set(e.right)
    if op == "in" and strings is not None:  # `x in [...strings]`: a set lookup (only a string equals a string)
        return lambda env: type(v := left(env)) is str and v in strings
    if op == "not in" and strings is not None:
        return lambda env: not (type(v := left(env)) is str and v in strings)
    if op == "in":
        return lambda env: _in(left(env), right(env))
    if op == "not in":
        return lambda env: not _in(left(env), right(env))
    if op == "+":
        return lambda env: _add(left(env), right(env))
    if op == "-":
        return lambda env: _sub(left(env), right(env))
    cmp = _cmp(op)
    return lambda env: cmp(left(env), right(env))


def render_value(v: Any) -> str:
    """How a value appears in a message."""
    if v is MISSING:
        return "?"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, datetime):
        return format_time(v)
    if isinstance(v, str):
        return v
    if isinstance(v, timedelta):
        return format_duration(v)
    return json.dumps(v, ensure_ascii=False, default=str)


Render = Callable[[Env, Callable[[Any], str]], str]


def compile_template(t: Template, sensitive: Callable[[Expr], bool] = lambda e: False) -> Render:
    """Compile a message template to `(env, mask) -> text`: a placeholder that reads a sensitive field
    (as `sensitive` says) shows `mask(value)`, never the value."""
    parts: list[str | tuple[Fn, bool]] = [p if isinstance(p, str) else (compile_expr(p), sensitive(p)) for p in t.parts]

    def render(env: Env, mask: Callable[[Any], str]) -> str:
        out = []
        for p in parts:
            if isinstance(p, str):
                out.append(p)
            else:
                fn, masked = p
                v = fn(env)
                out.append(mask(v) if masked and v is not MISSING else render_value(v))
        return "".join(out)

    return render
