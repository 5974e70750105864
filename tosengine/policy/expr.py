"""Stage parse (expressions): source text -> typed AST with spans. Nothing is ever evaluated as Python."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Union

from tosengine.durations import parse_duration
from tosengine.errors import TosEngineError
from tosengine.policy.diagnostics import Span

__all__ = [
    "FUNCTIONS",
    "Binary",
    "Call",
    "DurationLit",
    "Expr",
    "ExprSyntaxError",
    "ListLit",
    "Lit",
    "Path",
    "Unary",
    "parse_expression",
    "walk",
]

# name -> number of arguments. A closed list: anything else is `unknown-function`.
FUNCTIONS: dict[str, int] = {
    "exists": 1,
    "matches": 2,
    "startswith": 2,
    "lower": 1,
    "len": 1,
    "days": 1,
    "hours": 1,
    "minutes": 1,
}


@dataclass(frozen=True)
class Lit:
    """A string, number, boolean or null literal."""

    value: str | int | float | bool | None
    span: Span


@dataclass(frozen=True)
class DurationLit:
    """A duration literal such as `15m`."""

    value: timedelta
    span: Span


@dataclass(frozen=True)
class ListLit:
    """A list literal, or a named list after name resolution."""

    items: tuple[Expr, ...]
    span: Span


@dataclass(frozen=True)
class Path:
    """`root.part.part`: root is event, fact, after, a step name, or (before resolution) a list/macro name."""

    root: str
    parts: tuple[str, ...]
    span: Span

    @property
    def dotted(self) -> str:
        """The path as written."""
        return ".".join((self.root, *self.parts))


@dataclass(frozen=True)
class Unary:
    """`not x` or `-x`."""

    op: str
    operand: Expr
    span: Span


@dataclass(frozen=True)
class Binary:
    """and, or, comparisons, in / not in, + and -."""

    op: str
    left: Expr
    right: Expr
    span: Span


@dataclass(frozen=True)
class Call:
    """A call of one of FUNCTIONS."""

    func: str
    args: tuple[Expr, ...]
    span: Span


Expr = Union[Lit, DurationLit, ListLit, Path, Unary, Binary, Call]  # noqa: UP007 (a runtime alias)


class ExprSyntaxError(TosEngineError):
    """An expression did not parse; `offset` is the 0-based character offset in the expression."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<duration>\d+(?:\.\d+)?(?:ms|[smhd])(?![A-Za-z0-9_]))
  | (?P<number>\d+\.\d+|\d+)(?![A-Za-z_])
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>==|!=|<=|>=|<|>|\+|-|\(|\)|\[|\]|,|\.)
    """,
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "in", "true", "false", "null"}
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'"}
MAX_LENGTH = 4000
MAX_DEPTH = 64  # nesting, and operands in a row (`a + b + c ...` nests as deep as it is long)
MAX_DIGITS = 18  # a number literal fits in 64 bits


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    offset: int


def _tokenize(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ExprSyntaxError(f"unexpected character {text[pos]!r}", pos)
        kind = m.lastgroup or ""
        if kind != "ws":
            tok = m.group(kind)
            if kind == "name" and tok in _KEYWORDS:
                kind = tok
            out.append(_Tok(kind, tok, pos))
        pos = m.end()
    out.append(_Tok("eof", "", len(text)))
    return out


def _unescape(raw: str, offset: int) -> str:
    body, out, i = raw[1:-1], [], 0
    while i < len(body):
        c = body[i]
        if c == "\\":
            nxt = body[i + 1]
            if nxt not in _ESCAPES:
                raise ExprSyntaxError(f"unknown escape \\{nxt}", offset + i + 1)
            out.append(_ESCAPES[nxt])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


class _Parser:
    """Recursive descent; precedence: or < and < not < comparison/in < + - < unary minus < primary."""

    def __init__(self, text: str, base: Span) -> None:
        self.toks = _tokenize(text)
        self.i = 0
        self.base = base
        self.depth = 0

    def span(self, tok: _Tok) -> Span:
        return self.base.shifted(tok.offset)

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def take(self, kind: str | None = None) -> _Tok:
        tok = self.toks[self.i]
        if kind is not None and tok.kind != kind and tok.text != kind:
            found = "end of expression" if tok.kind == "eof" else repr(tok.text)
            raise ExprSyntaxError(f"expected {kind!r}, found {found}", tok.offset)
        self.i += 1
        return tok

    def at(self, *kinds: str) -> bool:
        tok = self.toks[self.i]
        return tok.kind in kinds or (tok.kind == "op" and tok.text in kinds)

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExprSyntaxError(f"expression nested deeper than {MAX_DEPTH} levels", self.tok.offset)

    def parse(self) -> Expr:
        e = self.or_()
        if self.tok.kind != "eof":
            raise ExprSyntaxError(f"unexpected {self.tok.text!r} after a complete expression", self.tok.offset)
        return e

    def or_(self) -> Expr:
        self.enter()
        left = self.and_()
        n = 0
        while self.at("or"):
            tok = self.take()
            n = self.chained(n, tok)
            left = Binary("or", left, self.and_(), self.span(tok))
        self.depth -= 1
        return left

    def chained(self, n: int, tok: _Tok) -> int:
        """One more operand in a row: a chain nests as deep as it is long, so it is bounded like nesting."""
        if n + 1 >= MAX_DEPTH:
            raise ExprSyntaxError(f"more than {MAX_DEPTH} operands in a row", tok.offset)
        return n + 1

    def and_(self) -> Expr:
        left = self.not_()
        n = 0
        while self.at("and"):
            tok = self.take()
            n = self.chained(n, tok)
            left = Binary("and", left, self.not_(), self.span(tok))
        return left

    def not_(self) -> Expr:
        if self.at("not"):
            tok = self.take()
            self.enter()
            operand = self.not_()
            self.depth -= 1
            return Unary("not", operand, self.span(tok))
        return self.comparison()

    def comparison(self) -> Expr:
        left = self.additive()
        if self.at("==", "!=", "<", "<=", ">", ">=", "in"):
            tok = self.take()
            return Binary(tok.text, left, self.additive(), self.span(tok))
        if self.at("not") and self.toks[self.i + 1].kind == "in":
            tok = self.take()
            self.take("in")
            return Binary("not in", left, self.additive(), self.span(tok))
        return left

    def additive(self) -> Expr:
        left = self.unary()
        n = 0
        while self.at("+", "-"):
            tok = self.take()
            n = self.chained(n, tok)
            left = Binary(tok.text, left, self.unary(), self.span(tok))
        return left

    def unary(self) -> Expr:
        if self.at("-"):
            tok = self.take()
            self.enter()
            operand = self.unary()
            self.depth -= 1
            return Unary("-", operand, self.span(tok))
        return self.primary()

    def primary(self) -> Expr:
        tok = self.tok
        sp = self.span(tok)
        if tok.kind == "number":
            self.take()
            if len(tok.text.replace(".", "")) > MAX_DIGITS:
                raise ExprSyntaxError(f"a number of more than {MAX_DIGITS} digits", tok.offset)
            return Lit(float(tok.text) if "." in tok.text else int(tok.text), sp)
        if tok.kind == "duration":
            self.take()
            d = parse_duration(tok.text)
            if d is None:
                raise ExprSyntaxError("a duration is at most 36500d (100 years)", tok.offset)
            return DurationLit(d, sp)
        if tok.kind == "string":
            self.take()
            return Lit(_unescape(tok.text, tok.offset), sp)
        if tok.kind in ("true", "false"):
            self.take()
            return Lit(tok.kind == "true", sp)
        if tok.kind == "null":
            self.take()
            return Lit(None, sp)
        if self.at("("):
            self.take()
            self.enter()
            e = self.or_()
            self.depth -= 1
            self.take(")")
            return e
        if self.at("["):
            self.take()
            items: list[Expr] = []
            while not self.at("]"):
                items.append(self.or_())
                if not self.at("]"):
                    self.take(",")
            self.take("]")
            return ListLit(tuple(items), sp)
        if tok.kind == "name":
            self.take()
            if self.at("("):
                self.take()
                args: list[Expr] = []
                while not self.at(")"):
                    args.append(self.or_())
                    if not self.at(")"):
                        self.take(",")
                self.take(")")
                return Call(tok.text, tuple(args), sp)
            parts: list[str] = []
            while self.at("."):
                self.take()
                part = self.tok
                if part.kind not in ("name", "number") and part.kind not in _KEYWORDS:
                    raise ExprSyntaxError("expected a field name after '.'", part.offset)
                self.take()
                parts.append(part.text)
            return Path(tok.text, tuple(parts), sp)
        found = "end of expression" if tok.kind == "eof" else repr(tok.text)
        raise ExprSyntaxError(f"expected a value, found {found}", tok.offset)


_START = Span(1, 1)


def parse_expression(text: str, base: Span = _START) -> Expr:
    """Parse one expression; spans are `base` shifted by the offset inside `text`."""
    if len(text) > MAX_LENGTH:
        raise ExprSyntaxError(f"expression longer than {MAX_LENGTH} characters", 0)
    return _Parser(text, base).parse()


def walk(e: Expr) -> list[Expr]:
    """Every node of `e`, pre-order."""
    out: list[Expr] = [e]
    if isinstance(e, ListLit):
        for x in e.items:
            out.extend(walk(x))
    elif isinstance(e, Unary):
        out.extend(walk(e.operand))
    elif isinstance(e, Binary):
        out.extend(walk(e.left))
        out.extend(walk(e.right))
    elif isinstance(e, Call):
        for x in e.args:
            out.extend(walk(x))
    return out
