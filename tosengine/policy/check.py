"""Stage check: Sources -> CheckedPolicySet, collecting every diagnostic (sorted) instead of stopping.

The checks run as an ordered table per file (`_CHECKS`), then across files (duplicates, fact cycles).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from tosengine.errors import PolicyError
from tosengine.policy.diagnostics import Diagnostic, Span
from tosengine.policy.expr import (
    FUNCTIONS,
    DurationLit,
    Expr,
    ExprSyntaxError,
    ListLit,
    Lit,
    Path,
    parse_duration,
    parse_expression,
    walk,
)
from tosengine.policy.graph import check_fact_cycles
from tosengine.policy.model import (
    ACTIONS,
    SEVERITIES,
    CheckedPolicySet,
    Emit,
    Expect,
    Ladder,
    Policy,
    Rule,
    Sequence,
    Step,
    Template,
    Threshold,
)
from tosengine.policy.resolve import FileContext, Resolver, item_kind, parse_template, suggest
from tosengine.policy.schemas import check_event_fields, load_schemas
from tosengine.policy.sources import Source
from tosengine.policy.yaml import Key, YamlError, load_yaml

__all__ = ["check_policy_set", "check_sources"]

_ID = re.compile(r"[a-z0-9]+(?:[-.][a-z0-9]+)*")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FACT = re.compile(r"[a-z0-9_]+(?:\.[a-z0-9_]+)*")
RESERVED = {"event", "fact", "after", "true", "false", "null", "and", "or", "not", "in", *FUNCTIONS}
POLICY_FIELDS = ("policy", "title", "clause", "clause_ref", "severity", "action", "key", "params", "lists", "macros",
                 "rules", "sensitive", "ladder")
RULE_FIELDS = ("id", "match", "threshold", "sequence", "expect", "within", "severity", "action", "key",
               "message", "emit", "violation", "title")
MAX_STEPS = 16  # durable_rules' MAX_MESSAGE_FRAMES; kept as a language limit
MAX_COUNT = 100_000
MAX_RULES = 1000


# ---------------------------------------------------------------- fields


def _expr(ctx: FileContext, path: Key, roots: set[str], *, boolean: bool = True) -> Expr | None:
    raw = _get(ctx, path)
    if isinstance(raw, bool | int | float) and not boolean:
        return Lit(raw, ctx.at(path))
    if not isinstance(raw, str) or not raw.strip():
        ctx.error(ctx.at(path), "invalid-value", f"`{path[-1]}` must be an expression (a string)")
        return None
    try:
        e = parse_expression(raw, ctx.at(path))
    except ExprSyntaxError as exc:
        ctx.error(ctx.at(path).shifted(exc.offset), "expr-syntax", exc.message)
        return None
    return Resolver(ctx, roots).resolve(e)


def _get(ctx: FileContext, path: Key) -> Any:
    return ctx.raw(path)


def _check_fields(ctx: FileContext, path: Key, allowed: tuple[str, ...], what: str) -> None:
    for k in _get(ctx, path):
        if k not in allowed:
            ctx.error(ctx.doc.key_span((*path, k)), "unknown-field", f"unknown field `{k}` in {what}",
                      suggest(k, allowed) or f"{what} fields: {', '.join(allowed)}")


def _duration(ctx: FileContext, path: Key) -> timedelta | None:
    raw = ctx.value(path)
    d = parse_duration(raw) if isinstance(raw, str) else None
    if d is None:
        ctx.error(ctx.at(path), "invalid-value", "a duration is a whole number with s, m, h or d: 30s 10m 2h 14d")
        return None
    if d <= timedelta(0):
        ctx.error(ctx.at(path), "invalid-value", "a duration must be longer than zero")
        return None
    return d


def _choice(ctx: FileContext, path: Key, choices: tuple[str, ...], default: str) -> str:
    obj = _get(ctx, path[:-1])
    if path[-1] not in obj:
        return default
    v = obj[path[-1]]
    if v not in choices:
        ctx.error(ctx.at(path), "invalid-value", f"`{path[-1]}` must be one of {', '.join(choices)}",
                  suggest(str(v), choices))
        return default
    return str(v)


# ---------------------------------------------------------------- policy file


def _check_header(ctx: FileContext) -> dict[str, Any] | None:
    doc = ctx.doc.value
    if not isinstance(doc, dict):
        ctx.error(Span(1, 1), "not-a-mapping", "a policy file must be a mapping with `policy`, `clause`, `rules`")
        return None
    _check_fields(ctx, (), POLICY_FIELDS, "a policy")
    for name in ("policy", "clause", *(() if "ladder" in doc else ("rules",))):
        if name not in doc:
            ctx.error(Span(1, 1), "missing-field", f"missing required field `{name}`")
    pid = doc.get("policy")
    if pid is not None and (not isinstance(pid, str) or not _ID.fullmatch(pid)):
        ctx.error(ctx.at(("policy",)), "invalid-value",
                  "a policy id is lowercase words joined by - or . (e.g. fake-engagement)")
    for name in ("title", "clause", "clause_ref"):
        if name in doc and not isinstance(doc[name], str):
            ctx.error(ctx.at((name,)), "invalid-value", f"`{name}` must be text")
    return doc


def _check_params(ctx: FileContext) -> None:
    """`params`: named numbers and durations an author tunes, usable as count/within and in expressions."""
    params = ctx.doc.value.get("params") or {}
    if not isinstance(params, dict):
        ctx.error(ctx.at(("params",)), "invalid-value", "`params` maps names to numbers or durations")
        return
    for name, v in params.items():
        if not _NAME.fullmatch(name) or name in RESERVED:
            ctx.error(ctx.doc.key_span(("params", name)), "invalid-value", f"`{name}` cannot be a param name")
        elif isinstance(v, bool) or not (isinstance(v, int | float) or (isinstance(v, str) and parse_duration(v))):
            ctx.error(ctx.at(("params", name)), "invalid-value", "a param is a number or a duration such as 10m")
        else:
            ctx.params[name] = v


def _check_lists(ctx: FileContext) -> None:
    lists = ctx.doc.value.get("lists") or {}
    if not isinstance(lists, dict):
        ctx.error(ctx.at(("lists",)), "invalid-value", "`lists` maps names to lists of values")
        return
    for name, items in lists.items():
        span = ctx.doc.key_span(("lists", name))
        if not _NAME.fullmatch(name) or name in RESERVED or name in ctx.params:
            ctx.error(span, "invalid-value", f"`{name}` cannot be a list name (reserved, or a param's name)")
            continue
        if not isinstance(items, list) or not all(isinstance(i, str | int | float | bool) for i in items):
            ctx.error(ctx.at(("lists", name)), "invalid-value", "a list holds strings, numbers or booleans")
            continue
        ctx.lists[name] = ListLit(tuple(Lit(i, ctx.at(("lists", name, n))) for n, i in enumerate(items)), span)


def _check_macros(ctx: FileContext) -> None:
    macros = ctx.doc.value.get("macros") or {}
    if not isinstance(macros, dict):
        ctx.error(ctx.at(("macros",)), "invalid-value", "`macros` maps names to expressions")
        return
    parsed: dict[str, Expr] = {}
    for name, text in macros.items():
        span = ctx.doc.key_span(("macros", name))
        if not _NAME.fullmatch(name) or name in RESERVED or name in ctx.lists or name in ctx.params:
            ctx.error(span, "invalid-value", f"`{name}` cannot be a macro name (reserved, or a list's or param's name)")
            continue
        if not isinstance(text, str):
            ctx.error(ctx.at(("macros", name)), "invalid-value", "a macro is an expression (a string)")
            continue
        try:
            parsed[name] = parse_expression(text, ctx.at(("macros", name)))
        except ExprSyntaxError as exc:
            ctx.error(ctx.at(("macros", name)).shifted(exc.offset), "expr-syntax", exc.message)
    # Inline in dependency order; a cycle is reported once per macro on it.
    deps = {n: {p.root for p in walk(e) if isinstance(p, Path) and not p.parts and p.root in parsed}
            for n, e in parsed.items()}
    done: set[str] = set()

    def visit(name: str, stack: list[str]) -> None:
        if name in done:
            return
        if name in stack:
            cycle = " -> ".join([*stack[stack.index(name):], name])
            ctx.error(ctx.doc.key_span(("macros", name)), "macro-cycle", f"macros refer to each other: {cycle}")
            done.add(name)
            return
        for d in sorted(deps[name]):
            visit(d, [*stack, name])
        if name in done:
            return
        done.add(name)
        # Macros may use any root; the rule that uses a macro decides whether that root is allowed.
        resolved = Resolver(ctx, {"event", "fact", "after"} | _step_like(parsed[name])).resolve(parsed[name])
        if resolved is not None:
            ctx.macros[name] = resolved

    for n in parsed:
        visit(n, [])


def _step_like(e: Expr) -> set[str]:
    """Roots a macro uses with a field access; they may be step names, checked where the macro is used."""
    return {p.root for p in walk(e) if isinstance(p, Path) and p.parts and p.root not in ("event", "fact", "after")}


def _recheck_roots(ctx: FileContext, e: Expr, roots: set[str]) -> bool:
    """After macro inlining, every path root must be allowed where the expression is used."""
    ok = True
    for p in walk(e):
        if isinstance(p, Path) and p.root not in roots:
            ctx.error(p.span, "unknown-name", f"`{p.root}` is not available here",
                      suggest(p.root, roots) or f"names available here: {', '.join(sorted(roots))}")
            ok = False
    return ok


def _cond(ctx: FileContext, path: Key, roots: set[str]) -> Expr | None:
    e = _expr(ctx, path, roots)
    if e is not None and not _recheck_roots(ctx, e, roots):
        return None
    return e


def _check_rule(ctx: FileContext, i: int, policy_id: str, defaults: tuple[str, str, Expr | None]) -> Rule | None:
    base: Key = ("rules", i)
    raw = _get(ctx, base)
    span = ctx.at(base)
    if not isinstance(raw, dict):
        ctx.error(span, "not-a-mapping", "a rule must be a mapping with `id` and one of match/threshold/"
                  "sequence/expect")
        return None
    _check_fields(ctx, base, RULE_FIELDS, "a rule")
    name = raw.get("id")
    if not isinstance(name, str) or not _ID.fullmatch(name):
        ctx.error(ctx.at((*base, "id")) if "id" in raw else span, "missing-field" if "id" not in raw
                  else "invalid-value", "a rule needs an `id`: lowercase words joined by - or .")
        name = f"#{i}"
    kinds = [k for k in ("match", "threshold", "sequence", "expect") if k in raw]
    if len(kinds) != 1:
        ctx.error(span, "missing-field" if not kinds else "invalid-value",
                  "a rule has exactly one of `match`, `threshold`, `sequence`, `expect`"
                  + (f" (found {', '.join(kinds)})" if kinds else ""))
        return None
    kind = kinds[0]
    if "within" in raw and kind != "sequence":
        ctx.error(ctx.doc.key_span((*base, "within")), "unknown-field",
                  "`within` at rule level belongs to a sequence; put it inside threshold/expect")
    severity = _choice(ctx, (*base, "severity"), SEVERITIES, defaults[0])
    action = _choice(ctx, (*base, "action"), ACTIONS, defaults[1])
    ok = True
    fields: dict[str, Any] = {}
    env_roots = {"event", "fact"}
    if kind == "match":
        e = _cond(ctx, (*base, "match"), {"event", "fact"})
        ok = e is not None
        if e is not None:
            fields["match"] = e
            fields["match_kind"] = item_kind(ctx, e, ctx.at((*base, "match")))
    elif kind == "threshold":
        t = raw["threshold"]
        tb: Key = (*base, "threshold")
        if not isinstance(t, dict):
            ctx.error(ctx.at(tb), "not-a-mapping", "`threshold` has match, count, within and optional distinct")
            return None
        _check_fields(ctx, tb, ("match", "count", "within", "distinct"), "a threshold")
        for f in ("match", "count", "within"):
            if f not in t:
                ctx.error(ctx.at(tb), "missing-field", f"a threshold needs `{f}`")
                ok = False
        if not ok:
            return None
        e = _cond(ctx, (*tb, "match"), {"event", "fact"})
        count = ctx.value((*tb, "count"))
        if not isinstance(count, int) or isinstance(count, bool) or not 2 <= count <= MAX_COUNT:
            ctx.error(ctx.at((*tb, "count")), "invalid-value",
                      f"`count` is a whole number from 2 to {MAX_COUNT} (for 1, use a match rule)")
            ok = False
        within = _duration(ctx, (*tb, "within"))
        distinct = _cond(ctx, (*tb, "distinct"), {"event", "fact"}) if "distinct" in t else None
        if e is None or within is None or ("distinct" in t and distinct is None):
            ok = False
        if ok and e is not None and within is not None:
            k = item_kind(ctx, e, ctx.at((*tb, "match")))
            fields["threshold"] = Threshold(e, k, int(count), within, distinct)
    elif kind == "sequence":
        steps_raw = raw["sequence"]
        sb: Key = (*base, "sequence")
        if not isinstance(steps_raw, list) or not 2 <= len(steps_raw) <= MAX_STEPS:
            ctx.error(ctx.at(sb), "invalid-value",
                      f"`sequence` is a list of 2 to {MAX_STEPS} steps `- name: condition`")
            return None
        steps: list[Step] = []
        names: list[str] = []
        for j, st in enumerate(steps_raw):
            if not isinstance(st, dict) or len(st) != 1:
                ctx.error(ctx.at((*sb, j)), "invalid-value", "a step is one `name: condition` pair")
                ok = False
                continue
            (sname,) = st.keys()
            if not _NAME.fullmatch(sname) or sname in RESERVED or sname in names or sname in ctx.lists \
                    or sname in ctx.macros:
                ctx.error(ctx.doc.key_span((*sb, j, sname)), "invalid-value",
                          f"`{sname}` cannot name a step (reserved, repeated, or a list/macro name)")
                ok = False
                continue
            e = _cond(ctx, (*sb, j, sname), {"event", "fact", *names})
            if e is None:
                ok = False
            else:
                steps.append(Step(sname, e, item_kind(ctx, e, ctx.at((*sb, j, sname))), ctx.at((*sb, j))))
            names.append(sname)
        within_s = None
        if "within" in raw:
            within_s = _duration(ctx, (*base, "within"))
            ok = ok and within_s is not None
        if ok:
            fields["sequence"] = Sequence(tuple(steps), within_s)
        env_roots |= set(names)
    else:
        x = raw["expect"]
        xb: Key = (*base, "expect")
        if not isinstance(x, dict):
            ctx.error(ctx.at(xb), "not-a-mapping", "`expect` has after, fulfilled_by and within")
            return None
        _check_fields(ctx, xb, ("after", "fulfilled_by", "within"), "an expect")
        for f in ("after", "fulfilled_by", "within"):
            if f not in x:
                ctx.error(ctx.at(xb), "missing-field", f"an expect needs `{f}`")
                ok = False
        if not ok:
            return None
        after = _cond(ctx, (*xb, "after"), {"event", "fact"})
        fb = _cond(ctx, (*xb, "fulfilled_by"), {"event", "fact", "after"})
        within_e: Expr | None
        wraw = ctx.value((*xb, "within"))
        if isinstance(wraw, str) and parse_duration(wraw) is not None:
            d = _duration(ctx, (*xb, "within"))
            within_e = DurationLit(d, ctx.at((*xb, "within"))) if d is not None else None
        else:
            within_e = _cond(ctx, (*xb, "within"), {"after"})
            if within_e is not None and Resolver(ctx, set()).type_of(within_e) != "duration":
                ctx.error(ctx.at((*xb, "within")), "type-mismatch",
                          "`within` must be a duration: a literal like 14d, or days()/hours()/minutes() of a number")
                within_e = None
        if after is None or fb is None or within_e is None:
            ok = False
        else:
            fields["expect"] = Expect(after, item_kind(ctx, after, ctx.at((*xb, "after"))), fb,
                                      item_kind(ctx, fb, ctx.at((*xb, "fulfilled_by"))), within_e)
        env_roots |= {"after"}
    key = defaults[2]
    if "key" in raw:
        key = _cond(ctx, (*base, "key"), {"event", "fact"})
        ok = ok and key is not None
    if ok and key is not None:
        ok = _check_key_kind(ctx, key, fields, span if "key" not in raw else ctx.at((*base, "key")))
    message = None
    if "message" in raw:
        m = raw["message"]
        if not isinstance(m, str):
            ctx.error(ctx.at((*base, "message")), "invalid-value", "`message` is text with {expression} placeholders")
            ok = False
        else:
            parts, errs = parse_template(m, ctx.at((*base, "message")))
            for msg, sp in errs:
                ctx.error(sp, "expr-syntax", msg)
            resolved: list[str | Expr] = []
            for p in parts:
                if isinstance(p, str):
                    resolved.append(p)
                    continue
                r = Resolver(ctx, env_roots).resolve(p)
                if r is None or not _recheck_roots(ctx, r, env_roots):
                    ok = False
                else:
                    resolved.append(r)
            ok = ok and not errs
            message = Template(tuple(resolved))
    emit = None
    if "emit" in raw:
        emit = _check_emit(ctx, (*base, "emit"), env_roots)
        ok = ok and emit is not None
    violation = raw.get("violation", True)
    if not isinstance(violation, bool):
        ctx.error(ctx.at((*base, "violation")), "invalid-value", "`violation` is true or false")
        ok = False
    if violation is False and emit is None:
        ctx.error(ctx.at((*base, "violation")), "invalid-value",
                  "`violation: false` without `emit` makes the rule do nothing")
        ok = False
    if not ok:
        return None
    return Rule(policy=policy_id, name=str(name), kind=kind,  # type: ignore[arg-type]
                severity=severity, action=action, key=key,
                message=message, emit=emit, violation=bool(violation), span=span, **fields)


def _check_key_kind(ctx: FileContext, key: Expr, fields: dict[str, Any], span: Span) -> bool:
    """A key reads the matched item, so it must read the kind of item every trigger of the rule matches."""
    kinds: set[str] = set()
    if "match_kind" in fields:
        kinds.add(fields["match_kind"])
    if "threshold" in fields:
        kinds.add(fields["threshold"].kind)
    if "sequence" in fields:
        kinds |= {s.kind for s in fields["sequence"].steps}
    if "expect" in fields:
        kinds |= {fields["expect"].after_kind, fields["expect"].fulfil_kind}
    roots = {p.root for p in walk(key) if isinstance(p, Path)} & {"event", "fact"}
    wrong = sorted(k for k in kinds if k not in roots) if roots else []
    if wrong:
        ctx.error(span, "mixed-item", f"the key reads {', '.join(sorted(roots))}.* but this rule matches "
                  f"{'facts' if 'fact' in wrong else 'events'}, whose key would always be absent",
                  "give the rule its own `key`, or leave it out to use the subject of what the rule matched")
        return False
    return True


def _check_ladder(ctx: FileContext, policy_id: str) -> Ladder | None:
    """`ladder: {within, steps, counts}`: the escalation ladder of the policy set."""
    lb: Key = ("ladder",)
    raw = _get(ctx, lb)
    if not isinstance(raw, dict):
        ctx.error(ctx.at(lb), "not-a-mapping", "`ladder` has within, steps and optional counts")
        return None
    _check_fields(ctx, lb, ("within", "steps", "counts"), "a ladder")
    if "within" not in raw or "steps" not in raw:
        ctx.error(ctx.at(lb), "missing-field", "a ladder needs `within` and `steps`")
        return None
    within = _duration(ctx, (*lb, "within"))
    steps = raw["steps"]
    if not isinstance(steps, list) or not steps or any(s not in ACTIONS for s in steps):
        ctx.error(ctx.at((*lb, "steps")), "invalid-value", f"`steps` is a list of actions: {', '.join(ACTIONS)}")
        return None
    counts: frozenset[str] | None = None
    if "counts" in raw:
        c = raw["counts"]
        if isinstance(c, str) and c in ctx.lists:
            c = [i.value for i in ctx.lists[c].items if isinstance(i, Lit)]
        if not isinstance(c, list) or not all(isinstance(x, str) for x in c):
            ctx.error(ctx.at((*lb, "counts")), "invalid-value", "`counts` is a list of policy ids (or a list's name)")
            return None
        counts = frozenset(c)
    if within is None:
        return None
    return Ladder(policy_id, within, tuple(steps), counts, ctx.at(lb))


def _check_ladders(policies: list[Policy], diags: list[Diagnostic], lines: dict[str, list[str]]) -> None:
    """At most one ladder, counting only policies that exist."""
    ids = {p.id for p in policies}
    ladders = [p for p in policies if p.ladder is not None]
    for p in ladders[1:]:
        assert p.ladder is not None
        diags.append(Diagnostic(p.path, p.ladder.span, "duplicate-policy",
                                f"only one policy may declare a ladder; {ladders[0].path} already does"))
    for p in ladders[:1]:
        assert p.ladder is not None
        for missing in sorted((p.ladder.counts or frozenset()) - ids):
            diags.append(Diagnostic(p.path, p.ladder.span, "unknown-name",
                                    f"the ladder counts `{missing}`, which is not a policy here",
                                    suggest(missing, ids)))


def _check_emit(ctx: FileContext, path: Key, roots: set[str]) -> Emit | None:
    raw = _get(ctx, path)
    if not isinstance(raw, dict) or "fact" not in raw:
        ctx.error(ctx.at(path), "invalid-value", "`emit` is {fact: name, data: {field: expression, ...}}")
        return None
    _check_fields(ctx, path, ("fact", "data"), "an emit")
    fact = raw["fact"]
    if not isinstance(fact, str) or not _FACT.fullmatch(fact) or fact == "violation":
        ctx.error(ctx.at((*path, "fact")), "invalid-value",
                  "a fact name is lowercase dotted words (and `violation` is reserved)")
        return None
    data = raw.get("data") or {}
    if not isinstance(data, dict):
        ctx.error(ctx.at((*path, "data")), "invalid-value", "`data` maps field names to expressions")
        return None
    out: list[tuple[str, Expr]] = []
    ok = True
    for k in data:
        e = _expr(ctx, (*path, "data", k), roots, boolean=False)
        if e is None or not _recheck_roots(ctx, e, roots):
            ok = False
        else:
            out.append((str(k), e))
    return Emit(fact, tuple(out)) if ok else None


def _check_policy(source: Source, diags: list[Diagnostic]) -> Policy | None:
    lines = source.text.splitlines()
    try:
        doc = load_yaml(source.text)
    except YamlError as exc:
        line = lines[exc.span.line - 1] if 0 < exc.span.line <= len(lines) else ""
        diags.append(Diagnostic(source.path, exc.span, exc.code, exc.message, source_line=line))
        return None
    ctx = FileContext(source, doc, diags, lines)
    before = len(diags)
    raw = _check_header(ctx)
    if raw is None:
        return None
    _check_params(ctx)
    _check_lists(ctx)
    _check_macros(ctx)
    severity = _choice(ctx, ("severity",), SEVERITIES, "medium")
    action = _choice(ctx, ("action",), ACTIONS, "warn")
    key = _cond(ctx, ("key",), {"event", "fact"}) if "key" in raw else None
    pid = raw.get("policy") if isinstance(raw.get("policy"), str) else "?"
    rules_raw = raw.get("rules")
    rules: list[Rule] = []
    if "rules" in raw and (not isinstance(rules_raw, list) or not rules_raw or len(rules_raw) > MAX_RULES):
        ctx.error(ctx.at(("rules",)), "invalid-value", f"`rules` is a list of 1 to {MAX_RULES} rules")
    elif isinstance(rules_raw, list):
        seen: dict[str, int] = {}
        for i in range(len(rules_raw)):
            r = _check_rule(ctx, i, str(pid), (severity, action, key))
            if r is None:
                continue
            if r.name in seen:
                ctx.error(ctx.at(("rules", i, "id")), "duplicate-rule",
                          f"rule id `{r.name}` is already used by rule #{seen[r.name] + 1} of this policy")
                continue
            seen[r.name] = i
            rules.append(r)
    ladder = _check_ladder(ctx, str(pid)) if "ladder" in raw else None
    sensitive: list[tuple[str, ...]] = []
    raw_sensitive = raw.get("sensitive", [])
    if not isinstance(raw_sensitive, list) or not all(
            isinstance(x, str) and re.fullmatch(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*", x) for x in raw_sensitive):
        ctx.error(ctx.at(("sensitive",)), "invalid-value",
                  "`sensitive` lists event paths such as data.password (no `event.` prefix)")
    else:
        sensitive = [tuple(x.split(".")) for x in raw_sensitive]
    if len(diags) > before:
        return None
    return Policy(ladder=ladder, sensitive=tuple(sensitive), text=source.text, id=str(pid),
                  title=str(raw.get("title") or pid),
                  clause=" ".join(str(raw["clause"]).split()),
                  clause_ref=str(raw.get("clause_ref") or ""), severity=severity, action=action,
                  path=source.path, version=source.version, rules=tuple(rules))


_CHECKS: tuple[tuple[str, Callable[..., None]], ...] = (
    ("fact-cycles", check_fact_cycles),
    ("ladders", _check_ladders),
)


def check_sources(sources: list[Source], schemas: list[Source] | None = None
                  ) -> tuple[CheckedPolicySet | None, list[Diagnostic]]:
    """Check every file; return the policy set (None if any error) and all diagnostics, sorted.

    `schemas` are event schema files (`*.schema.yaml`); with them, fields no event has are errors.
    """
    diags: list[Diagnostic] = []
    policies: list[Policy] = []
    seen: dict[str, str] = {}
    # Rule order is part of the semantics (the order derived facts are queued): always by path.
    for src in sorted(sources, key=lambda s: s.path):
        p = _check_policy(src, diags)
        if p is None:
            continue
        if p.id in seen:
            diags.append(Diagnostic(src.path, Span(1, 1), "duplicate-policy",
                                    f"policy id `{p.id}` is already declared in {seen[p.id]}"))
            continue
        seen[p.id] = src.path
        policies.append(p)
    # Checks across files run on the policies that passed on their own, so one broken file does not
    # hide a cycle elsewhere.
    lines = {s.path: s.text.splitlines() for s in sources}
    for _name, check in _CHECKS:
        check(policies, diags, lines)
    if schemas:
        declared, schema_diags = load_schemas(schemas)
        diags += schema_diags
        if declared is not None:
            diags += check_event_fields(CheckedPolicySet(tuple(policies)), declared, lines)
    diags.sort(key=lambda d: d.sort_key)
    if any(d.severity == "error" for d in diags):
        return None, diags
    return CheckedPolicySet(tuple(policies)), diags


def check_policy_set(sources: list[Source], schemas: list[Source] | None = None) -> CheckedPolicySet:
    """Check, raising PolicyError with every diagnostic if anything is wrong."""
    checked, diags = check_sources(sources, schemas)
    if checked is None:
        raise PolicyError(diags)
    return checked
