"""Differential tests: the durable_rules-backed Engine must report exactly what the reference reports.

`tosengine.Engine` compiles policies onto durable_rules (a C engine with many defects, see
../shared/durable_rules/FINDINGS.md); `tosengine.runtime.reference.evaluate_reference` is a naive
plain-Python reading of docs/semantics.md. Hypothesis generates random policy files (as YAML text) and
random event streams over deliberately tiny alphabets, so keys collide, conditions match, windows
overlap and deadlines lapse often, and the two must agree on the multiset of
(id, policy, rule, subject, time, evidence, causes). The order in which violations are reported is not
compared.

Run bigger searches with TOSENGINE_FUZZ_EXAMPLES=20000 (the default is CI-sized). Runs are derandomized:
the same code explores the same examples every time.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import yaml
from hypothesis import HealthCheck, Phase, assume, example, given, settings
from hypothesis import strategies as st

from tosengine import Engine, check_sources
from tosengine.event_model import validate_event
from tosengine.events import parse_time
from tosengine.policy.model import CheckedPolicySet
from tosengine.policy.sources import Source
from tosengine.runtime.reference import Calls, evaluate_calls, evaluate_records, flatten
from tosengine.violation import Repeat, Violation, format_time

FUZZ_EXAMPLES = int(os.environ.get("TOSENGINE_FUZZ_EXAMPLES", "500"))

DIFFERENTIAL = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=True,  # CI explores the same examples on every run
    database=None,  # nothing written into the work tree
    print_blob=False,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],  # no slow "explain"
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

# ---------------------------------------------------------------- alphabets (small on purpose)

EVENT_TYPES = ("t.a", "t.b", "t.c")
# Two FNV-1a 32-bit colliding pairs (durable_rules identifies sessions by that hash), plus two more.
SUBJECTS = ("account:2315246", "account:3054780", "account:1957745", "account:3093010", "account:7", "user:é")
# Two FNV-1a 32-bit colliding pairs of event ids (durable_rules identifies messages by that hash).
COLLIDING_IDS = ("evt-49399", "evt-1155910", "evt-39479", "evt-2720746")
SOURCES = ("", "src-1")
T0 = datetime(2026, 3, 1, tzinfo=UTC)
OFFSETS = (None, timedelta(0), timedelta(hours=2), timedelta(hours=-5, minutes=-30), timedelta(hours=14))

SCALARS: tuple[Any, ...] = ("a", "A", "1", 1, 1.0, 2, "2", True, False, None, "é", "É", "$T", "$A", "", "c1")
DATA_POOLS: dict[str, tuple[Any, ...]] = {
    "x": SCALARS,
    "y": SCALARS,
    "n": (0, 1, 2, 3, 1.5, -1, "1", True, None, 0.5),
    "flag": (True, False, "true", 1, None),
    "owner": (*SUBJECTS[:4], "", 7, None),
    "case": ("c1", "c2", 1, "1"),
    "name": ("Alpha", "alpha-1", "BETA", "béta", "ÉCOLE", "", "x.y", "al", "Ab1", "ǅungla"),
    "tags": ([], ["a"], ["a", "b"], ["1", 1], "a", [True], [["a"]], ["é", "$T"]),
}

LITERALS = (
    '"a"',
    '"A"',
    '"1"',
    "1",
    "1.0",
    "2",
    "true",
    "false",
    "null",
    '"é"',
    '"É"',
    '"$T"',
    '"$A"',
    '""',
    '"c1"',
    '"account:2315246"',
    '"account:3054780"',
)
ORDER_LITERALS = ('"a"', '"1"', "1", "1.5", "2", "0", '"é"', '"B"', '""')
LOWER_LITERALS = ('"alpha-1"', '"béta"', '"école"', '"beta"', '"a"', '"é"', '"ǆungla"', '""')
PREFIXES = ('"al"', '"A"', '"b"', '"é"', '""', '"account:"')
REGEXES = ('"^a"', '"[0-9]"', '"^(al|BE)"', '"é$"', '"^$"', '"x[.]y"', '"A|b"', '"^[a-z]+:[0-9]*5$"', '"(?i)^b"')
LIST_ITEMS: tuple[Any, ...] = ("a", "A", "1", 1, 2.0, True, False, "é", "t.a", "$T", "c1")
DURATIONS = ("30s", "1m", "10m", "1h", "6h", "1d", "3d")

# The values each field takes in generated events and facts, to pick literals that match often.
FIELD_VALUES: dict[str, tuple[Any, ...]] = {
    **{f"data.{k}": tuple(v for v in pool if not isinstance(v, list)) for k, pool in DATA_POOLS.items()},
    "data.tags.0": ("a", "1", 1, True, "é"),
    "data.tags.1": ("b", 1, "$T"),
    "subject": SUBJECTS,
    "type": EVENT_TYPES,
    "source": SOURCES,
    "region": ("eu", "us"),
    "data.a": SCALARS,
    "data.o": DATA_POOLS["owner"],
    "severity": ("low", "medium", "high", "critical"),
    "policy": ("p0", "p1"),
    "rule": ("p0/r0", "p0/r1", "p1/r0", "p1/r2"),
    "action": ("warn", "none"),
}

# Per item kind: the paths (after the root) of each sort of value a condition reads.
SUFFIXES: dict[str, dict[str, tuple[str, ...]]] = {
    "event": {
        "scalar": (
            "data.x",
            "data.y",
            "data.n",
            "data.case",
            "data.owner",
            "data.missing",
            "subject",
            "type",
            "source",
            "region",
            "data.tags.0",
            "data.tags.1",
        ),
        "str": ("data.name", "data.x", "subject", "data.tags.0"),
        "list": ("data.tags",),
        "num": ("data.n", "data.x"),
        "bool": ("data.flag", "data.x"),
        "owner": ("data.owner", "subject"),
    },
    "fact": {
        "scalar": ("data.a", "data.b", "data.o", "subject", "severity", "rule", "policy", "data.missing", "action"),
        "str": ("data.a", "rule", "subject", "data.o"),
        "list": ("data.t",),
        "num": ("data.n", "data.a"),
        "bool": ("data.f", "data.a"),
        "owner": ("data.o", "subject"),
    },
}


# Fields a later item is correlated on with an earlier one: (own field, earlier item's field).
CORRELATIONS: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {
    ("event", "event"): (
        ("data.case", "data.case"),
        ("data.x", "data.x"),
        ("data.owner", "data.owner"),
        ("subject", "subject"),
        ("data.y", "data.x"),
        ("data.n", "data.n"),
    ),
    ("event", "fact"): (("subject", "subject"), ("data.x", "data.a"), ("data.owner", "data.o")),
    ("fact", "event"): (("subject", "subject"), ("data.a", "data.x"), ("data.o", "data.owner")),
    ("fact", "fact"): (("subject", "subject"), ("data.a", "data.a"), ("rule", "rule")),
}

# ---------------------------------------------------------------- policy generator


@dataclass(frozen=True)
class Scope:
    """What a condition may read: its own item (`event` or `fact`), earlier items by name, lists, macros."""

    own: str
    bound: tuple[tuple[str, str], ...] = ()  # (name, item kind): earlier steps, or `after`
    lists: tuple[str, ...] = ()
    macros: tuple[str, ...] = ()


@dataclass(frozen=True)
class FactSource:
    """A fact a lower-numbered policy produces, and the top-level conjuncts that select it."""

    select: str


Draw = Callable[[st.SearchStrategy[Any]], Any]


def _pick(draw: Draw, options: Sequence[Any]) -> Any:
    return draw(st.sampled_from(options))


def _chance(draw: Draw, percent: int) -> bool:
    """True with about `percent`% probability (shrinks towards False)."""
    return bool(draw(st.integers(0, 99)) >= 100 - percent)


def _path(draw: Draw, scope: Scope, sort: str) -> str:
    roots = [(scope.own, scope.own), *scope.bound]
    root, kind = draw(st.sampled_from(roots)) if len(roots) > 1 and _chance(draw, 35) else roots[0]
    return f"{root}.{_pick(draw, SUFFIXES[kind][sort])}"


def _literal(value: Any) -> str:
    """A JSON value as an expression literal."""
    return "null" if value is None else json.dumps(value, ensure_ascii=False)


def _literal_for(draw: Draw, path: str) -> str:
    """Mostly a value the path's field really takes in generated items (so conditions match), else any."""
    pool = FIELD_VALUES.get(path.split(".", 1)[1])
    if pool is None or _chance(draw, 25):
        return str(_pick(draw, LITERALS))
    return _literal(_pick(draw, pool))


def _list_expr(draw: Draw, scope: Scope) -> str:
    choice = draw(st.integers(0, 3))
    if choice == 0 and scope.lists:
        return str(_pick(draw, scope.lists))
    if choice == 1:
        return _path(draw, scope, "list")
    items = draw(st.lists(st.sampled_from(LIST_ITEMS), min_size=0, max_size=4))
    return json.dumps(items, ensure_ascii=False).replace(", ", ",")


def _atom(draw: Draw, scope: Scope) -> str:
    """One boolean condition that `check` accepts (no literal-vs-literal comparisons, typed functions)."""
    kinds = [
        "eq",
        "eq",
        "cmp",
        "pathpath",
        "in",
        "in",
        "exists",
        "len",
        "lower",
        "startswith",
        "matches",
        "arith",
        "bool",
    ]
    if scope.macros:
        kinds.append("macro")
    if scope.bound:
        kinds.append("time")
    k = _pick(draw, kinds)
    if k == "eq":
        p = _path(draw, scope, "scalar")
        return f"{p} {_pick(draw, ('==', '==', '!='))} {_literal_for(draw, p)}"
    if k == "cmp":
        return f"{_path(draw, scope, 'scalar')} {_pick(draw, ('<', '>=', '<=', '>'))} {_pick(draw, ORDER_LITERALS)}"
    if k == "pathpath":
        return f"{_path(draw, scope, 'scalar')} {_pick(draw, ('==', '!='))} {_path(draw, scope, 'scalar')}"
    if k == "in":
        op = _pick(draw, ("in", "not in"))
        if _chance(draw, 20):
            return f"{_pick(draw, LITERALS)} {op} {_path(draw, scope, 'list')}"
        return f"{_path(draw, scope, 'scalar')} {op} {_list_expr(draw, scope)}"
    if k == "exists":
        return f"{_pick(draw, ('', 'not '))}exists({_path(draw, scope, 'scalar')})"
    if k == "len":
        p = _path(draw, scope, _pick(draw, ("str", "list")))
        return f"len({p}) {_pick(draw, ('==', '>=', '<'))} {draw(st.integers(0, 3))}"
    if k == "lower":
        return f"lower({_path(draw, scope, 'str')}) == {_pick(draw, LOWER_LITERALS)}"
    if k == "startswith":
        p = _path(draw, scope, "str")
        if _chance(draw, 30):
            p = f"lower({p})"
        return f"startswith({p}, {_pick(draw, PREFIXES)})"
    if k == "matches":
        return f"matches({_path(draw, scope, 'str')}, {_pick(draw, REGEXES)})"
    if k == "arith":
        a = _path(draw, scope, "num")
        shape = draw(st.integers(0, 3))
        if shape == 0:
            return f"{a} + 1 == 2"
        if shape == 1:
            return f"{a} - 1 >= 0"
        if shape == 2:
            return f"{a} + {_path(draw, scope, 'num')} {_pick(draw, ('==', '>'))} 2"
        return f"-{a} < -0.5"
    if k == "bool":
        return f"{_pick(draw, ('', 'not '))}{_path(draw, scope, 'bool')}"
    if k == "macro":
        return f"{_pick(draw, ('', 'not '))}{_pick(draw, scope.macros)}"
    # time arithmetic against an earlier item
    other = _pick(draw, [name for name, _ in scope.bound])
    own = scope.own
    if _chance(draw, 50):
        return f"{own}.time - {other}.time {_pick(draw, ('<=', '>', '=='))} {_pick(draw, DURATIONS)}"
    return f"{own}.time >= {other}.time + {_pick(draw, DURATIONS)}"


def _bool_expr(draw: Draw, scope: Scope, depth: int = 2) -> str:
    """A random condition: atoms joined by and/or/not, always parenthesized."""
    if depth <= 0 or _chance(draw, 45):
        return _atom(draw, scope)
    shape = _pick(draw, ("and", "or", "not"))
    if shape == "not":
        return f"not ({_bool_expr(draw, scope, depth - 1)})"
    return f"({_bool_expr(draw, scope, depth - 1)}) {shape} ({_bool_expr(draw, scope, depth - 1)})"


def _condition(
    draw: Draw, scope: Scope, upstream: Sequence[FactSource], *, correlate: bool = False, extra: int = 50
) -> str:
    """A rule condition over events or facts; over facts it always selects a fact of a lower policy."""
    parts: list[str] = []
    if scope.own == "fact":
        parts.append(_pick(draw, [f.select for f in upstream]))
    else:
        form = draw(st.integers(0, 4))
        if form <= 1:
            parts.append(f'event.type == "{_pick(draw, EVENT_TYPES)}"')
        elif form == 2:
            a, b = _pick(draw, EVENT_TYPES), _pick(draw, EVENT_TYPES)
            parts.append(f'event.type in ["{a}", "{b}"]')
        elif form == 3 and scope.lists and _chance(draw, 30):
            parts.append(f"event.type in {_pick(draw, scope.lists)}")
    if correlate and scope.bound and _chance(draw, 60):
        name, kind = _pick(draw, scope.bound)
        field, other = _pick(draw, CORRELATIONS[(scope.own, kind)])
        parts.append(f"{scope.own}.{field} {_pick(draw, ('==', '==', '==', '!='))} {name}.{other}")
    if not parts or _chance(draw, extra):
        parts.append(_bool_expr(draw, scope, depth=_pick(draw, (0, 0, 1, 2))))
    return " and ".join(p if len(parts) == 1 else f"({p})" for p in parts)


def _key_root(key: str | None) -> str | None:
    """The item kind a key expression reads (None for none, or for a constant key)."""
    return None if key is None or key.startswith('"') else key.split(".")[0]


def _key_expr(draw: Draw, kinds: set[str], inherited: str | None) -> str | None:
    """A rule's own key, or None to use the policy's; always one `check` accepts for the kinds matched."""
    root = _key_root(inherited)
    must = root is not None and kinds != {root}  # the policy key cannot read what this rule matches
    if not must and not _chance(draw, 35):
        return None
    options = ['"all"'] if _chance(draw, 15) or len(kinds) > 1 else []
    if kinds == {"event"}:
        options += ["event.data.owner", "event.subject"]
    elif kinds == {"fact"}:
        options += ["fact.data.o", "fact.subject"]
    return str(_pick(draw, options))


def _emit_data(draw: Draw, roots: Sequence[tuple[str, str]]) -> dict[str, str]:
    data: dict[str, str] = {}
    for name, sort in (("a", "scalar"), ("b", "str"), ("o", "owner"), ("n", "num"), ("t", "list"), ("f", "bool")):
        if _chance(draw, 55):
            root, kind = _pick(draw, roots)
            expr = f"{root}.{_pick(draw, SUFFIXES[kind][sort])}"
            if sort == "num" and _chance(draw, 30):
                expr = f"{expr} + 1"
            if sort == "str" and _chance(draw, 30):
                expr = f"lower({expr})"
            data[name] = expr
    return data


def _kind_for(draw: Draw, upstream: Sequence[FactSource]) -> str:
    return "fact" if upstream and _chance(draw, 40) else "event"


@st.composite
def _rule(
    draw: Draw,
    pi: int,
    ri: int,
    upstream: tuple[FactSource, ...],
    lists: tuple[str, ...],
    macros: tuple[str, ...],
    policy_key: str | None,
    extra: int,
) -> dict[str, Any]:
    """One rule of policy `pi`; `extra` is how often (%) a condition gets a random conjunct."""
    rule: dict[str, Any] = {"id": f"r{ri}"}
    kind = _pick(draw, ("match", "match", "threshold", "threshold", "sequence", "sequence", "expect"))

    def scope(own: str, bound: tuple[tuple[str, str], ...] = ()) -> Scope:
        return Scope(own, bound, lists, macros if own == "event" else ())

    kinds_read: set[str] = set()
    env: list[tuple[str, str]] = []
    if kind == "match":
        own = _kind_for(draw, upstream)
        rule["match"] = _condition(draw, scope(own), upstream, extra=extra + 20)
        kinds_read.add(own)
        env = [(own, own)]
    elif kind == "threshold":
        own = _kind_for(draw, upstream)
        th: dict[str, Any] = {
            "match": _condition(draw, scope(own), upstream, extra=extra),
            "count": draw(st.integers(2, 4)),
            "within": _pick(draw, DURATIONS),
        }
        if _chance(draw, 40):
            root = own if _chance(draw, 90) else ("fact" if own == "event" else "event")
            th["distinct"] = f"{root}.{_pick(draw, SUFFIXES[root]['scalar'][:6])}"
            if _chance(draw, 15) and root == "event":
                th["distinct"] = "lower(event.data.name)"
        rule["threshold"] = th
        kinds_read.add(own)
        env = [(own, own)]
    elif kind == "sequence":
        steps: list[dict[str, str]] = []
        bound: tuple[tuple[str, str], ...] = ()
        for si in range(_pick(draw, (2, 2, 3))):
            own = _kind_for(draw, upstream)
            steps.append({f"s{si}": _condition(draw, scope(own, bound), upstream, correlate=si > 0, extra=extra)})
            bound = (*bound, (f"s{si}", own))
            kinds_read.add(own)
        rule["sequence"] = steps
        if _chance(draw, 60):
            rule["within"] = _pick(draw, DURATIONS)
        env = [*bound, (bound[-1][1], bound[-1][1])]
    else:
        after_kind = _kind_for(draw, upstream)
        fulfil_kind = _kind_for(draw, upstream)
        after_scope = scope(fulfil_kind, (("after", after_kind),))
        expect = {
            "after": _condition(draw, scope(after_kind), upstream, extra=extra),
            "fulfilled_by": _condition(draw, after_scope, upstream, correlate=True, extra=extra),
        }
        if _chance(draw, 50):
            expect["within"] = _pick(draw, DURATIONS)
        else:
            unit = _pick(draw, ("days", "hours", "minutes"))
            field = "data.n" if after_kind == "event" else _pick(draw, ("data.n", "data.a"))
            within = f"{unit}(after.{field})"
            if _chance(draw, 20):
                within += f" + {_pick(draw, DURATIONS)}"
            expect["within"] = within
        rule["expect"] = expect
        kinds_read |= {after_kind, fulfil_kind}
        env = [("after", after_kind)]
        if _chance(draw, 15):  # reads the item that would be the rule's own at a lapse (there is none)
            env.append((after_kind, after_kind))
    key = _key_expr(draw, kinds_read, policy_key)
    if key is not None:
        rule["key"] = key
    if _chance(draw, 25):
        rule["severity"] = _pick(draw, ("low", "critical"))
    if _chance(draw, 25):
        rule["action"] = _pick(draw, ("none", "restrict", "disable"))
    if _chance(draw, 35):
        rule["emit"] = {"fact": f"f.p{pi}.r{ri}", "data": _emit_data(draw, env)}
        if _chance(draw, 40):
            rule["violation"] = False
    if _chance(draw, 30):
        root = env[0][0]
        rule["message"] = _pick(draw, MESSAGES).replace("ROOT", root)
    if _chance(draw, 25):  # who the violation is against, apart from the key
        root = env[-1][0]
        rule["subject"] = _pick(draw, SUBJECT_EXPRS).replace("ROOT", root)
    if _chance(draw, 30) and rule.get("violation", True):
        rule["once_per"] = _pick(draw, DURATIONS)
    if _chance(draw, 15):  # shadow: recorded as such, climbs no ladder, a fact only for shadow rules
        rule["mode"] = "shadow"
    return rule


# A subject: a field (maybe absent or not a string: then the key), a built kind:id, a constant.
SUBJECT_EXPRS = (
    "ROOT.data.o",
    '"who:" + ROOT.data.a',
    "ROOT.subject",
    '"x:" + ROOT.subject',
    "'fixed:1'",
    "ROOT.data.n",
)


# Messages render every kind of value: strings, absent fields, numbers, booleans, lists, objects,
# times and durations (some computed), and literal braces.
MESSAGES = (
    "{ROOT.subject} did {ROOT.data.x} ({ROOT.time})",
    "{ROOT.data.n} / {ROOT.data.missing} / {ROOT.data.b} / {ROOT.data.o}",
    "{{literal}} {ROOT.data} at {ROOT.time + 90m} after {days(2) + 30s}",
    '{len(ROOT.subject) + 1} {ROOT.data.a == "a"} {[1, "x", true]} {lower(ROOT.data.name)}',
)


def _produced(pi: int, rule: dict[str, Any]) -> list[FactSource]:
    """How later policies can select the facts this rule produces (match rules, which fire most, weigh more)."""
    out: list[FactSource] = []
    if rule.get("violation", True):
        out.append(FactSource(f'fact.type == "violation" and fact.policy == "p{pi}"'))
        out += [FactSource(f'fact.type == "violation" and fact.rule == "p{pi}/{rule["id"]}"')] * (
            3 if "match" in rule else 1
        )
        if "severity" in rule:
            out.append(
                FactSource(
                    f'fact.type == "violation" and fact.severity == "{rule["severity"]}" and fact.policy == "p{pi}"'
                )
            )
    if "emit" in rule:
        out += [FactSource(f'fact.type == "{rule["emit"]["fact"]}"')] * (3 if "match" in rule else 1)
    return out


@st.composite
def policy_files(draw: Draw) -> list[tuple[str, str]]:
    """1-3 policy files p0.yaml.. as YAML text; facts only flow from lower to higher policies (no cycles)."""
    upstream: list[FactSource] = []
    files: list[tuple[str, str]] = []
    # Sometimes conditions are mostly just event/fact types, so rules fire often and chains go deep.
    extra = _pick(draw, (0, 0, 20, 40))
    for pi in range(draw(st.integers(1, 3))):
        doc: dict[str, Any] = {
            "policy": f"p{pi}",
            "title": f"Policy {pi}",
            "clause": "You will not do x.",
            "severity": _pick(draw, ("medium", "high")),
            "action": "warn",
        }
        if _chance(draw, 35):
            doc["key"] = _pick(
                draw,
                ("event.data.owner", "event.subject", '"all"')
                if pi == 0 or _chance(draw, 60)
                else ("fact.subject", "fact.data.o"),
            )
        lists: tuple[str, ...] = ()
        macros: tuple[str, ...] = ()
        if _chance(draw, 40):
            doc["lists"] = {
                f"l{i}": draw(st.lists(st.sampled_from(LIST_ITEMS), min_size=1, max_size=4))
                for i in range(draw(st.integers(1, 2)))
            }
            lists = tuple(doc["lists"])
        if _chance(draw, 35):
            doc["macros"] = {"m0": _bool_expr(draw, Scope("event", (), lists), 1)}
            if _chance(draw, 40):
                doc["macros"]["m1"] = f"m0 {_pick(draw, ('and', 'or'))} ({_atom(draw, Scope('event', (), lists))})"
            macros = tuple(doc["macros"])
        rules = [
            draw(_rule(pi, ri, tuple(upstream), lists, macros, doc.get("key"), extra))
            for ri in range(draw(st.integers(1, 3)))
        ]
        doc["rules"] = rules
        for r in rules:
            upstream += _produced(pi, r)
        files.append((f"p{pi}.yaml", yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=10_000)))
    if _chance(draw, 30):  # an escalation ladder, in a policy file of its own, counting some policies
        ids = [f"p{i}" for i in range(len(files))]
        ladder: dict[str, Any] = {
            "within": _pick(draw, DURATIONS),
            "steps": draw(st.lists(st.sampled_from(("warn", "restrict", "disable")), min_size=1, max_size=3)),
        }
        if _chance(draw, 50):
            ladder["counts"] = draw(st.lists(st.sampled_from(ids), min_size=1, max_size=len(ids), unique=True))
        doc = {"policy": "zz-ladder", "clause": "Repeat violations escalate.", "ladder": ladder}
        files.append(("zz-ladder.yaml", yaml.safe_dump(doc, sort_keys=False)))
    return files


# ---------------------------------------------------------------- event stream generator


def format_rfc3339(t: datetime, offset: timedelta | None, digits: int) -> str:
    """`t` as RFC 3339 at a UTC offset (None: `Z`), with `digits` fraction digits (beyond 6 are noise)."""
    local = t.astimezone(UTC if offset is None else timezone(offset))
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    if digits:
        frac = f"{local.microsecond:06d}"
        text += "." + (frac[:digits] if digits <= 6 else frac + "7" * (digits - 6))
    if offset is None:
        return text + "Z"
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return f"{text}{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def _gap(draw: Draw) -> timedelta:
    unit = _pick(draw, ("equal", "s", "s", "s", "m", "m", "m", "h", "h", "d", "late"))
    if unit == "equal":
        return timedelta(0)
    if unit == "s":
        return timedelta(seconds=draw(st.integers(1, 59)))
    if unit == "m":
        return timedelta(minutes=draw(st.integers(1, 59)))
    if unit == "h":
        return timedelta(hours=draw(st.integers(1, 23)))
    if unit == "d":
        return timedelta(days=draw(st.integers(1, 4)), hours=draw(st.integers(0, 23)))
    return -timedelta(seconds=draw(st.sampled_from((1, 30, 60, 600, 3600, 86_400, 200_000))))


@st.composite
def event_streams(draw: Draw) -> tuple[list[dict[str, Any]], str | None]:
    """0-60 events (times mostly increasing, some equal, some late, redeliveries) and an optional `until`."""
    events: list[dict[str, Any]] = []
    latest = T0
    # A few subjects and types per stream, so that keys meet and windows fill; the colliding pairs often
    # appear together.
    subjects = _pick(draw, (SUBJECTS, SUBJECTS[:2], SUBJECTS[2:4], SUBJECTS[:4], SUBJECTS[4:], SUBJECTS[:1]))
    types = _pick(draw, (EVENT_TYPES, EVENT_TYPES[:2], EVENT_TYPES[1:], EVENT_TYPES[:1]))
    for i in range(draw(st.integers(0, 60))):
        if events and _chance(draw, 5):  # a redelivery: same source and id, possibly at another time
            dup = dict(_pick(draw, events))
            if _chance(draw, 50):
                dup["time"] = format_rfc3339(latest, None, 0)
            events.append(dup)
            continue
        step = _gap(draw)
        t = latest + step  # a negative step is a late event, behind the clock
        t = t.replace(microsecond=_pick(draw, (0, 0, 0, 500_000, 123_456, 1)))
        latest = max(latest, t)
        ev: dict[str, Any] = {
            "id": _pick(draw, COLLIDING_IDS) if _chance(draw, 20) else f"e{i}",
            "type": _pick(draw, types),
            "time": format_rfc3339(t, _pick(draw, OFFSETS), _pick(draw, (0, 0, 3, 6, 9))),
            "subject": _pick(draw, subjects),
        }
        source = _pick(draw, SOURCES)
        if source:
            ev["source"] = source
        data = {f: _pick(draw, pool) for f, pool in DATA_POOLS.items() if _chance(draw, 60)}
        if data or _chance(draw, 50):
            ev["data"] = data
        if _chance(draw, 15):
            ev["region"] = _pick(draw, ("eu", "us"))
        events.append(ev)
    until = None
    if _chance(draw, 50):
        extra = _pick(
            draw,
            (
                timedelta(0),
                timedelta(seconds=1),
                timedelta(hours=1),
                timedelta(days=1),
                timedelta(days=30),
                timedelta(days=400),
            ),
        )
        until = format_rfc3339(latest + extra, _pick(draw, OFFSETS), 0)
    return events, until


# ---------------------------------------------------------------- running both sides

Signature = tuple[
    str, str, str, str, datetime, tuple[str, ...], tuple[str, ...], str, str, int, str, str, tuple[str, ...], str
]


def check_files(files: Iterable[tuple[str, str]]) -> CheckedPolicySet | None:
    """The checked policy set for (path, YAML text) pairs, or None if `check` rejects them."""
    checked, _ = check_sources([Source(path, text) for path, text in sorted(files)])
    return checked


def signature(v: Violation) -> Signature:
    """What the engine and the reference must agree on for each violation: everything it records."""
    return (
        v.id,
        v.policy,
        v.rule,
        v.subject,
        v.time,
        v.evidence,
        v.causes,
        v.severity,
        v.action,
        v.ladder_step,
        v.message,
        v.key,
        v.evidence_sources,
        v.mode,
    )


def repeat_signature(r: Repeat) -> Signature:
    """A repeat record in the same shape: its id, whose repeat it is, how many and when."""
    return (
        r.id,
        r.policy,
        r.rule,
        r.subject,
        r.time,
        r.evidence,
        (r.repeat_of,),
        "repeat",
        f"count={r.count}",
        0,
        f"{format_time(r.first)}..{format_time(r.last)}",
        r.key,
        r.evidence_sources,
        "",  # a repeat's mode is its violation's
    )


def run_engine_calls(policies: CheckedPolicySet, events: Iterable[dict[str, Any]], until: datetime | None) -> Calls:
    """What each call returns: `process()` of each event, then `advance_to(until)` if given; with the
    repeat records each call hands to `on_repeat`."""
    repeats: list[Repeat] = []
    engine = Engine(policies, on_repeat=repeats.append)
    out: Calls = []
    try:
        inputs: list[dict[str, Any] | datetime] = [*events, *([until] if until is not None else [])]
        for ev in inputs:
            before = len(repeats)
            got = engine.advance_to(ev) if isinstance(ev, datetime) else engine.process(ev)
            out.append((got, repeats[before:]))
        return out
    finally:
        engine.close()


def run_engine(
    policies: CheckedPolicySet, events: Iterable[dict[str, Any]], until: datetime | None, *, batched: bool = False
) -> tuple[list[Violation], list[Repeat]]:
    """Every violation the Engine reports, event by event (or through process_many, which matches in
    batches, given each event's JSON text), then for the final clock advance; and its repeat records."""
    if not batched:
        return flatten(run_engine_calls(policies, events, until))
    repeats: list[Repeat] = []
    engine = Engine(policies, on_repeat=repeats.append)
    try:
        out = engine.process_many(json.dumps(e) for e in events)
        if until is not None:
            out += engine.advance_to(until)
        return out, repeats
    finally:
        engine.close()


def run_reference(
    policies: CheckedPolicySet,
    events: Iterable[dict[str, Any]],
    until: datetime | None,
) -> tuple[list[Violation], list[Repeat]]:
    """Every violation and repeat record the reference evaluator reports for the same input."""
    return evaluate_records(policies, [validate_event(e) for e in events], until)


def signatures(records: tuple[list[Violation], list[Repeat]]) -> Counter[Signature]:
    """Violations and repeat records, as what the two must agree on."""
    return Counter([*map(signature, records[0]), *map(repeat_signature, records[1])])


def _show(vs: Iterable[Signature]) -> str:
    rows = sorted(vs, key=lambda s: (format_time(s[4]), s[1], s[2], s[3], s[5]))
    return (
        "\n".join(
            f"  {format_time(t)} {rule} {subject} key={key} evidence={list(ev)} sources={list(src)} "
            f"causes={list(c)} id={vid} {severity}/{action} step={step} mode={mode} message={message!r}"
            for vid, _, rule, subject, t, ev, c, severity, action, step, message, key, src, mode in rows
        )
        or "  (none)"
    )


def describe(
    files: Sequence[tuple[str, str]],
    events: Sequence[dict[str, Any]],
    until: str | None,
    engine: Counter[Signature] | str,
    reference: Counter[Signature],
) -> str:
    """Everything needed to reproduce a disagreement: policies, events as JSON lines, both results."""
    out = ["engine and reference disagree", ""]
    for path, text in files:
        out += [f"--- {path}", text.rstrip()]
    out += ["", "--- events (JSON lines)", *(json.dumps(e, ensure_ascii=False) for e in events)]
    out += [f"--- until: {until}", ""]
    if isinstance(engine, str):
        out += ["--- engine raised", engine]
    else:
        out += [
            "--- only in the engine",
            _show((engine - reference).elements()),
            "--- only in the reference",
            _show((reference - engine).elements()),
            "--- engine (all)",
            _show(engine.elements()),
        ]
    out += ["--- reference (all)", _show(reference.elements())]
    return "\n".join(out)


def assert_same(files: Sequence[tuple[str, str]], events: Sequence[dict[str, Any]], until: str | None) -> None:
    """Check the files and assert the engine and the reference report the same violations."""
    policies = check_files(files)
    assert policies is not None
    until_t = parse_time(until) if until is not None else None
    want_calls = evaluate_calls(policies, [validate_event(e) for e in events], until_t)
    want = signatures(flatten(want_calls))
    try:  # process() one by one, and process_many()
        got_calls = run_engine_calls(policies, events, until_t)
        many = run_engine(policies, events, until_t, batched=True)
    except Exception as exc:  # an engine crash is a disagreement too: show the input that caused it
        raise AssertionError(describe(files, events, until, f"{type(exc).__name__}: {exc}", want)) from exc
    for batched, records in ((False, flatten(got_calls)), (True, many)):
        got = signatures(records)
        assert got == want, f"(batched={batched})\n" + describe(files, events, until, got, want)
    # And which call reports each: a deadline lapses with the first event past it, not a call later.
    for n, (got_call, want_call) in enumerate(zip(got_calls, want_calls, strict=True)):
        got, want = signatures(got_call), signatures(want_call)
        assert got == want, f"(what call {n} returned)\n" + describe(files, events, until, got, want)


# ---------------------------------------------------------------- the properties


def _ev(eid: str, time: str, etype: str = "t.a", **data: Any) -> dict[str, Any]:
    return {"id": eid, "type": etype, "time": time, "subject": "account:1", "data": data}


# Disagreements this test found, minimized; they run first on every run (Phase.explicit).
REGRESSIONS: list[tuple[list[tuple[str, str]], list[dict[str, Any]], str | None]] = [
    # A copy redelivered more than the dedupe window after the original (engine and reference differed).
    (
        [("p0.yaml", 'policy: p0\nclause: x\nrules:\n  - id: r0\n    match: event.type == "t.a"\n')],
        [_ev("e0", "2026-03-01T00:00:00Z"), _ev("e1", "2026-03-08T00:00:01Z"), _ev("e0", "2026-03-01T00:00:00Z")],
        None,
    ),
    # A late event inside a threshold window: evidence is in stream order, not time order.
    (
        [
            (
                "p0.yaml",
                "policy: p0\nclause: x\nrules:\n  - id: r0\n"
                '    threshold: {match: event.type == "t.a", count: 3, within: 1h}\n',
            )
        ],
        [_ev("e1", "2026-03-01T10:00:10Z"), _ev("e2", "2026-03-01T10:00:05Z"), _ev("e3", "2026-03-01T10:00:20Z")],
        None,
    ),
    # String literals that look like the matcher's projection codes for true ("$T") and absent ("$A").
    (
        [
            (
                "p0.yaml",
                'policy: p0\nclause: x\nrules:\n  - id: not-a\n    match: event.data.x != "$A"\n'
                '  - id: is-t\n    match: event.data.x == "$T"\n',
            )
        ],
        [
            _ev("e1", "2026-03-01T10:00:00Z"),
            _ev("e2", "2026-03-01T10:00:01Z", x=True),
            _ev("e3", "2026-03-01T10:00:02Z", x="$T"),
        ],
        None,
    ),
]


def _with_regressions(test: Callable[..., None]) -> Callable[..., None]:
    for files, events, until in reversed(REGRESSIONS):
        test = example(files=files, stream=(events, until))(test)
    return test


@DIFFERENTIAL
@_with_regressions
@given(files=policy_files(), stream=event_streams())
def test_engine_matches_reference(
    files: list[tuple[str, str]], stream: tuple[list[dict[str, Any]], str | None]
) -> None:
    """For random policies and event streams the engine and the reference give the same violations.

    Proves that compiling onto durable_rules (alpha network, projections, key partitioning, the
    event-time clock, forward chaining) changes nothing the semantics can observe, including with
    colliding subjects and event ids, late and equal times, UTC offsets, redeliveries and `until`.
    """
    events, until = stream
    assume(check_files(files) is not None)
    assert_same(files, events, until)


def test_generated_policies_are_mostly_valid() -> None:
    """The policy generator produces files `check` accepts at least 90% of the time.

    Proves the differential property is not vacuous: its `assume` discards only a few examples.
    """
    accepted: list[bool] = []
    rejected: list[str] = []

    @settings(
        max_examples=300,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example],
    )
    @given(files=policy_files())
    def sample(files: list[tuple[str, str]]) -> None:
        checked, diags = check_sources([Source(p, t) for p, t in files])
        accepted.append(checked is not None)
        if checked is None and not rejected:
            rejected.extend([*(t for _, t in files), *(d.render() for d in diags)])

    sample()
    assert len(accepted) >= 200 and sum(accepted) >= 0.9 * len(accepted), (
        f"{accepted.count(False)}/{len(accepted)} generated policy sets were rejected; the first:\n"
        + "\n".join(rejected)
    )


# ---------------------------------------------------------------- scale and memory

SCALE_POLICY = """\
policy: scale
title: Scale
clause: You will answer and you will not leak.
severity: high
action: restrict
rules:
  - id: key-then-paste
    sequence:
      - created: event.type == "key.created"
      - leaked: event.type == "key.pasted" and event.data.k == created.data.k
    within: 1h
  - id: unanswered
    expect:
      after: event.type == "info.request"
      fulfilled_by: event.type == "info.response" and event.data.case == after.data.case
      within: 1d
"""


def _scale_events(n_subjects: int, seed: int) -> list[dict[str, Any]]:
    """Per subject: a key created, then pasted (same key or not, in time or not), a request, maybe an answer."""
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    # The FNV-1a colliding pairs are among them: durable_rules would merge their sessions.
    subjects = [*SUBJECTS[:4], *(f"account:{i}" for i in range(n_subjects - 4))]
    for s, subject in enumerate(subjects):
        base = T0 + timedelta(seconds=rng.randrange(0, 3600))
        k = rng.choice(("k1", "k2"))
        plan = [
            ("key.created", 0, {"k": k}),
            ("key.pasted", rng.choice((60, 1800, 4000)), {"k": rng.choice((k, k, "k3"))}),
            ("info.request", 10, {"case": "c"}),
        ]
        if rng.random() < 0.5:
            plan.append(("info.response", rng.choice((600, 90_000)), {"case": rng.choice(("c", "c", "d"))}))
        for j, (etype, dt, data) in enumerate(plan):
            events.append(
                {
                    "id": f"s{s}-{j}",
                    "type": etype,
                    "subject": subject,
                    "data": data,
                    "time": format_rfc3339(base + timedelta(seconds=dt), None, 0),
                }
            )
    events.sort(key=lambda e: e["time"])
    return events


def test_many_subjects_match_reference() -> None:
    """5,000 subjects, each with a 2-step sequence and an expect: engine == reference.

    Proves the engine is not limited by durable_rules' 1,024 sessions per ruleset, and that state
    partitioned by subject keeps subjects apart at scale.
    """
    files = [("scale.yaml", SCALE_POLICY)]
    events = _scale_events(5000, seed=7)
    until = format_rfc3339(T0 + timedelta(days=30), None, 0)
    policies = check_files(files)
    assert policies is not None
    want = run_reference(policies, events, parse_time(until))
    assert len(want[0]) > 5000  # the scenario produces plenty of both kinds
    for batched in (False, True):  # process_many matches in batches: many batches here
        got = run_engine(policies, events, parse_time(until), batched=batched)
        assert signatures(got) == signatures(want), describe(
            files, events[:50], until, signatures(got), signatures(want)
        )


MEMORY_POLICY = """\
policy: memory
title: Memory
clause: You will not flood.
severity: low
action: warn
rules:
  - id: burst
    threshold: {match: event.type == "t.a", count: 3, within: 10m}
  - id: burst-distinct
    threshold: {match: event.type == "t.a", count: 2, within: 1h, distinct: event.data.x}
  - id: pair
    sequence:
      - first: event.type == "t.a"
      - second: event.type == "t.b" and event.data.x == first.data.x
    within: 30m
  - id: answered
    expect:
      after: event.type == "t.c"
      fulfilled_by: event.type == "t.b" and event.data.x == after.data.x
      within: 2h
  - id: answered-dynamic
    expect:
      after: event.type == "t.a"
      fulfilled_by: event.type == "t.c"
      within: minutes(after.data.n)
"""


def test_state_is_bounded_and_released() -> None:
    """Windows, partial matches with `within` and obligations are forgotten once the clock passes them.

    Proves memory is bounded: while 20,000 events over 1,000 keys flow through ten days, the state
    stays proportional to the recent windows (hours), and after advance_to() far in the future every
    counter of state_size() is zero.
    """
    policies = check_files([("memory.yaml", MEMORY_POLICY)])
    assert policies is not None
    rng = random.Random(3)
    t = T0
    peak: dict[str, int] = {}
    with Engine(policies) as engine:
        for i in range(20_000):
            t += timedelta(seconds=rng.randrange(0, 90))  # about 10 days in all, 160 events per 2 hours
            ev = {
                "id": f"m{i}",
                "type": rng.choice(EVENT_TYPES),
                "subject": f"account:{rng.randrange(1000)}",
                "time": format_rfc3339(t, None, 0),
                "data": {"x": rng.choice("abc"), "n": rng.choice((1, 30))},
            }
            engine.process(ev)
            if i % 1000 == 999:
                size = engine.state_size()
                for k, v in size.items():
                    peak[k] = max(peak.get(k, 0), v)
        held = engine.state_size()
        # Something was held while events flowed (the test is not vacuous)...
        assert held["threshold_items"] > 0 and held["partials"] > 0 and held["obligations"] > 0, held
        # ...bounded by what the recent windows hold, not by the 20,000 events seen. The redelivery memory
        # (`dedupe`) is a separate policy of the engine, not rule state.
        assert all(v < 1_000 for k, v in peak.items() if k != "dedupe"), peak
        engine.advance_to(t + timedelta(days=365))
        after = engine.state_size()
    assert all(v == 0 for v in after.values()), after  # the dedupe window has passed too
