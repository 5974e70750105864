"""Stage check (rule kinds): the table of rule kinds, each with its fields, its check and its names.

A rule has exactly one kind: `match`, `threshold`, `sequence` or `expect`. Each is one RuleKind
here, registered in KINDS; its body type (policy/model.py) gives the conditions it holds, which every
later pass walks; its runtime half (per-key state, offer, sweep, lapse, save and load) is registered
under the same name in tosengine/runtime/kinds.py, and the reference evaluator handles each name too
(tests/test_kinds.py holds all three tables to the same names). The options every kind shares (`key`,
`emit`, `message`, `violation`, ...) are checked in policy/check.py, outside the kinds.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tosengine.errors import PolicyError
from tosengine.policy.context import FileContext
from tosengine.policy.expr import DurationLit, Expr
from tosengine.policy.fields import DURATION, EXPR, Field, names, obj
from tosengine.policy.model import Expect, Match, RuleBody, Sequence, Step, Threshold
from tosengine.policy.resolve import Resolver
from tosengine.policy.yaml import Key

__all__ = [
    "EXPECT_FIELDS",
    "KINDS",
    "MAX_COUNT",
    "MAX_STEPS",
    "RESERVED_NAMES",
    "THRESHOLD_FIELDS",
    "RuleKind",
    "kind_of",
]

MAX_STEPS = 16  # durable_rules' MAX_MESSAGE_FRAMES; kept as a language limit
MAX_COUNT = 100_000
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Names no list, macro, param or step may take.
RESERVED_NAMES = frozenset({"event", "fact", "after", "true", "false", "null", "and", "or", "not", "in"})
ITEM_ROOTS = frozenset({"event", "fact"})


@dataclass(frozen=True)
class RuleKind:
    """One rule kind: the rule-level fields it owns, how to check them into its body, and the names
    the rule's other expressions (message, emit data) may read once it fired (from the rule as written,
    so they are checked even when the kind's own fields are broken)."""

    name: str
    fields: tuple[Field, ...]  # rule-level fields that belong to this kind, its own name first
    check: Callable[[FileContext, Key, dict[str, Any]], RuleBody | None]
    roots: Callable[[dict[str, Any]], frozenset[str]]

    @property
    def field_names(self) -> tuple[str, ...]:
        """The names of the rule-level fields this kind owns, its own name first."""
        return names(self.fields)


def _item_roots(_raw: dict[str, Any]) -> frozenset[str]:
    return ITEM_ROOTS


# ---------------------------------------------------------------- match


def _check_match(ctx: FileContext, base: Key, raw: dict[str, Any]) -> Match | None:
    e = ctx.condition((*base, "match"), set(ITEM_ROOTS))
    return Match(e, ctx.item_kind(e, ctx.at((*base, "match")))) if e is not None else None


# ---------------------------------------------------------------- threshold

THRESHOLD_FIELDS: tuple[Field, ...] = (
    Field("match", EXPR, "the condition each counted item holds", True),
    Field(
        "count",
        {"oneOf": [{"type": "integer", "minimum": 2, "maximum": MAX_COUNT}, {"type": "string"}]},
        "how many items in the window fire the rule (or a param's name)",
        True,
    ),
    Field("within", DURATION, "the window [t - within, t]", True),
    Field("distinct", EXPR, "count different values of this expression instead of items"),
)


def _check_threshold(ctx: FileContext, base: Key, raw: dict[str, Any]) -> Threshold | None:
    t = raw["threshold"]
    tb: Key = (*base, "threshold")
    if not isinstance(t, dict):
        ctx.error(ctx.at(tb), "not-a-mapping", "`threshold` has match, count, within and optional distinct")
        return None
    ctx.known_fields(tb, names(THRESHOLD_FIELDS), "a threshold")
    missing = [f.name for f in THRESHOLD_FIELDS if f.required and f.name not in t]
    for f in missing:
        ctx.error(ctx.at(tb), "missing-field", f"a threshold needs `{f}`")
    if missing:
        return None
    e = ctx.condition((*tb, "match"), set(ITEM_ROOTS))
    count = ctx.value((*tb, "count"))
    count_ok = isinstance(count, int) and not isinstance(count, bool) and 2 <= count <= MAX_COUNT
    if not count_ok:
        ctx.error(
            ctx.at((*tb, "count")),
            "invalid-value",
            f"`count` is a whole number from 2 to {MAX_COUNT} (for 1, use a match rule)",
        )
    within = ctx.duration((*tb, "within"))
    distinct = ctx.condition((*tb, "distinct"), set(ITEM_ROOTS)) if "distinct" in t else None
    if e is None or within is None or not count_ok or ("distinct" in t and distinct is None):
        return None
    return Threshold(e, ctx.item_kind(e, ctx.at((*tb, "match"))), int(count), within, distinct)


# ---------------------------------------------------------------- sequence


def _step(ctx: FileContext, sb: Key, j: int, st: Any, names: list[str]) -> Step | None:
    """One `- name: condition` step; its condition may read the steps before it."""
    if not isinstance(st, dict) or len(st) != 1:
        ctx.error(ctx.at((*sb, j)), "invalid-value", "a step is one `name: condition` pair")
        return None
    (name,) = st.keys()
    if not _NAME.fullmatch(name) or name in RESERVED_NAMES or name in names or name in ctx.lists or name in ctx.macros:
        ctx.error(
            ctx.key_at((*sb, j, name)),
            "invalid-value",
            f"`{name}` cannot name a step (reserved, repeated, or a list/macro name)",
        )
        return None
    e = ctx.condition((*sb, j, name), {*ITEM_ROOTS, *names})
    names.append(name)
    return Step(name, e, ctx.item_kind(e, ctx.at((*sb, j, name))), ctx.at((*sb, j))) if e is not None else None


def _check_sequence(ctx: FileContext, base: Key, raw: dict[str, Any]) -> Sequence | None:
    steps_raw = raw["sequence"]
    sb: Key = (*base, "sequence")
    if not isinstance(steps_raw, list) or not 2 <= len(steps_raw) <= MAX_STEPS:
        ctx.error(ctx.at(sb), "invalid-value", f"`sequence` is a list of 2 to {MAX_STEPS} steps `- name: condition`")
        return None
    names: list[str] = []
    steps = [_step(ctx, sb, j, st, names) for j, st in enumerate(steps_raw)]
    within = ctx.duration((*base, "within")) if "within" in raw else None
    checked = [s for s in steps if s is not None]
    if len(checked) != len(steps) or ("within" in raw and within is None):
        return None
    return Sequence(tuple(checked), within)


def _sequence_roots(raw: dict[str, Any]) -> frozenset[str]:
    steps = raw["sequence"] if isinstance(raw["sequence"], list) else []
    return ITEM_ROOTS | {name for st in steps if isinstance(st, dict) and len(st) == 1 for name in st}


# ---------------------------------------------------------------- expect

EXPECT_FIELDS: tuple[Field, ...] = (
    Field("after", EXPR, "what opens the obligation", True),
    Field("fulfilled_by", EXPR, "what fulfils it (may read `after`)", True),
    Field(
        "within",
        {"anyOf": [DURATION, EXPR]},
        "the deadline after `after`: a duration such as 14d, or an expression like days(after.data.due_days)",
        True,
    ),
)


def _within(ctx: FileContext, path: Key) -> Expr | None:
    """A deadline offset: a duration literal, or an expression over `after` that is a duration."""
    raw = ctx.value(path)
    if isinstance(raw, str) and re.fullmatch(r"\s*\d+(\.\d+)?(ms|[smhd])\s*", raw):
        d = ctx.duration(path)
        return DurationLit(d, ctx.at(path)) if d is not None else None
    e = ctx.condition(path, {"after"})
    if e is not None and Resolver(ctx, set()).type_of(e) != "duration":
        ctx.error(
            ctx.at(path),
            "type-mismatch",
            "`within` must be a duration: a literal like 14d, or days()/hours()/minutes() of a number",
        )
        return None
    return e


def _check_expect(ctx: FileContext, base: Key, raw: dict[str, Any]) -> Expect | None:
    x = raw["expect"]
    xb: Key = (*base, "expect")
    if not isinstance(x, dict):
        ctx.error(ctx.at(xb), "not-a-mapping", "`expect` has after, fulfilled_by and within")
        return None
    ctx.known_fields(xb, names(EXPECT_FIELDS), "an expect")
    missing = [f.name for f in EXPECT_FIELDS if f.required and f.name not in x]
    for f in missing:
        ctx.error(ctx.at(xb), "missing-field", f"an expect needs `{f}`")
    if missing:
        return None
    after = ctx.condition((*xb, "after"), set(ITEM_ROOTS))
    fulfilled_by = ctx.condition((*xb, "fulfilled_by"), {*ITEM_ROOTS, "after"})
    within = _within(ctx, (*xb, "within"))
    if after is None or fulfilled_by is None or within is None:
        return None
    return Expect(
        after,
        ctx.item_kind(after, ctx.at((*xb, "after"))),
        fulfilled_by,
        ctx.item_kind(fulfilled_by, ctx.at((*xb, "fulfilled_by"))),
        within,
    )


def _expect_roots(_raw: dict[str, Any]) -> frozenset[str]:
    return ITEM_ROOTS | {"after"}


# ---------------------------------------------------------------- the table


KINDS: Mapping[str, RuleKind] = {
    k.name: k
    for k in (
        RuleKind("match", (Field("match", EXPR, "each item it holds for is a violation"),), _check_match, _item_roots),
        RuleKind(
            "threshold",
            (Field("threshold", obj(THRESHOLD_FIELDS), "a count in a sliding event-time window"),),
            _check_threshold,
            _item_roots,
        ),
        RuleKind(
            "sequence",
            (
                Field(
                    "sequence",
                    {
                        "type": "array",
                        "minItems": 2,
                        "maxItems": MAX_STEPS,
                        "items": {
                            "type": "object",
                            "minProperties": 1,
                            "maxProperties": 1,
                            "additionalProperties": EXPR,
                        },
                    },
                    "ordered, correlated items: a list of `- step_name: condition`",
                ),
                Field("within", DURATION, "a sequence's bound: the last item's time minus the first's"),
            ),
            _check_sequence,
            _sequence_roots,
        ),
        RuleKind(
            "expect",
            (Field("expect", obj(EXPECT_FIELDS), "an obligation with a deadline"),),
            _check_expect,
            _expect_roots,
        ),
    )
}


def kind_of(body: RuleBody) -> RuleKind:
    """The kind a rule body belongs to; an unregistered body type is an error, never a fallthrough."""
    kind = KINDS.get(body.KIND)
    if kind is None:
        raise PolicyError([], f"rule kind `{body.KIND}` is not registered in tosengine.policy.kinds.KINDS")
    return kind
