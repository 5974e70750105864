"""Stage check: Sources -> CheckedPolicySet, collecting every diagnostic (sorted) instead of stopping.

The checker is two ordered tables of named passes, as OPA's compiler stages are: FILE_PASSES run on
each file in turn, each reading the document and filling in a draft of the policy; SET_PASSES then
run across the files that passed on their own (duplicate ids, fact cycles, the ladder, event
schemas). A rule is checked by its kind (policy/kinds.py) and by the option checks in RULE_OPTIONS,
which every kind shares. The known fields come from policy/fields.py (which `tosengine schema` turns
into a JSON Schema), the drafts the passes fill in are in policy/drafts.py, and the rollout fields
(`mode`, `enabled`, `tags`) are checked in policy/lifecycle.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tosengine.durations import parse_duration
from tosengine.errors import PolicyError
from tosengine.masking import expr_reads_sensitive
from tosengine.policy.context import FileContext, suggest
from tosengine.policy.diagnostics import Diagnostic, Span
from tosengine.policy.drafts import PolicyDraft, RuleDraft
from tosengine.policy.expr import FUNCTIONS, Expr, ExprSyntaxError, ListLit, Lit, Path, parse_expression, walk
from tosengine.policy.fields import EMIT_FIELDS, LADDER_FIELDS, POLICY_FIELDS, RULE_OPTION_FIELDS, names
from tosengine.policy.graph import check_fact_cycles
from tosengine.policy.kinds import KINDS, RESERVED_NAMES, RuleKind
from tosengine.policy.lifecycle import check_policy_lifecycle, option_enabled, option_mode, option_tags
from tosengine.policy.model import (
    ACTIONS,
    SEVERITIES,
    CheckedPolicySet,
    Emit,
    Ladder,
    Policy,
    Rule,
    Template,
)
from tosengine.policy.resolve import Resolver, parse_template
from tosengine.policy.schemas import check_event_fields, load_schemas
from tosengine.policy.sources import Source
from tosengine.policy.yaml import Key, YamlError, load_yaml

__all__ = ["FILE_PASSES", "RULE_OPTIONS", "SET_PASSES", "check_policy_set", "check_sources"]

_ID = re.compile(r"[a-z0-9]+(?:[-.][a-z0-9]+)*")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FACT = re.compile(r"[a-z0-9_]+(?:\.[a-z0-9_]+)*")
_SENSITIVE = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")
RESERVED = RESERVED_NAMES | set(FUNCTIONS)
# The names of the fields (policy/fields.py holds them with their schemas); a kind adds its own.
OPTION_FIELDS = names(RULE_OPTION_FIELDS)
RULE_FIELDS = ("id", *(f for k in KINDS.values() for f in k.field_names), *OPTION_FIELDS)
MAX_RULES = 1000


# ---------------------------------------------------------------- file passes


def _check_header(ctx: FileContext, draft: PolicyDraft) -> None:
    """`policy`, `title`, `clause`, `clause_ref`; unknown and missing top-level fields."""
    doc = ctx.doc.value
    ctx.known_fields((), names(POLICY_FIELDS), "a policy")
    for name in ("policy", "clause", *(() if "ladder" in doc else ("rules",))):
        if name not in doc:
            ctx.error(Span(1, 1), "missing-field", f"missing required field `{name}`")
    pid = doc.get("policy")
    if pid is not None and (not isinstance(pid, str) or not _ID.fullmatch(pid)):
        ctx.error(
            ctx.at(("policy",)),
            "invalid-value",
            "a policy id is lowercase words joined by - or . (e.g. fake-engagement)",
        )
    for name in ("title", "clause", "clause_ref"):
        if name in doc and not isinstance(doc[name], str):
            ctx.error(ctx.at((name,)), "invalid-value", f"`{name}` must be text")
    draft.id = pid if isinstance(pid, str) else "?"
    draft.title = str(doc.get("title") or draft.id)
    draft.clause = " ".join(str(doc.get("clause", "")).split())
    draft.clause_ref = str(doc.get("clause_ref") or "")


def _check_params(ctx: FileContext, draft: PolicyDraft) -> None:
    """`params`: named numbers and durations an author tunes, usable as count/within and in expressions."""
    params = ctx.doc.value.get("params") or {}
    if not isinstance(params, dict):
        ctx.error(ctx.at(("params",)), "invalid-value", "`params` maps names to numbers or durations")
        return
    for name, v in params.items():
        if not _NAME.fullmatch(name) or name in RESERVED:
            ctx.error(ctx.key_at(("params", name)), "invalid-value", f"`{name}` cannot be a param name")
        elif isinstance(v, bool) or not (isinstance(v, int | float) or (isinstance(v, str) and parse_duration(v))):
            ctx.error(ctx.at(("params", name)), "invalid-value", "a param is a number or a duration such as 10m")
        else:
            ctx.params[name] = v


def _check_lists(ctx: FileContext, draft: PolicyDraft) -> None:
    """`lists`: named lists of literals, usable wherever a list literal is."""
    lists = ctx.doc.value.get("lists") or {}
    if not isinstance(lists, dict):
        ctx.error(ctx.at(("lists",)), "invalid-value", "`lists` maps names to lists of values")
        return
    for name, items in lists.items():
        span = ctx.key_at(("lists", name))
        if not _NAME.fullmatch(name) or name in RESERVED or name in ctx.params:
            ctx.error(span, "invalid-value", f"`{name}` cannot be a list name (reserved, or a param's name)")
            continue
        if not isinstance(items, list) or not all(isinstance(i, str | int | float | bool) for i in items):
            ctx.error(ctx.at(("lists", name)), "invalid-value", "a list holds strings, numbers or booleans")
            continue
        ctx.lists[name] = ListLit(tuple(Lit(i, ctx.at(("lists", name, n))) for n, i in enumerate(items)), span)


def _check_macros(ctx: FileContext, draft: PolicyDraft) -> None:
    """`macros`: named expressions, inlined where used, in dependency order (cycles are reported)."""
    macros = ctx.doc.value.get("macros") or {}
    if not isinstance(macros, dict):
        ctx.error(ctx.at(("macros",)), "invalid-value", "`macros` maps names to expressions")
        return
    parsed: dict[str, Expr] = {}
    for name, text in macros.items():
        span = ctx.key_at(("macros", name))
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
    deps = {
        n: {p.root for p in walk(e) if isinstance(p, Path) and not p.parts and p.root in parsed}
        for n, e in parsed.items()
    }
    done: set[str] = set()

    def visit(name: str, stack: list[str]) -> None:
        if name in done:
            return
        if name in stack:
            cycle = " -> ".join([*stack[stack.index(name) :], name])
            ctx.error(ctx.key_at(("macros", name)), "macro-cycle", f"macros refer to each other: {cycle}")
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


def _check_defaults(ctx: FileContext, draft: PolicyDraft) -> None:
    """The policy's `severity`, `action` and `key`, which its rules inherit."""
    draft.severity = ctx.choice(("severity",), SEVERITIES, "medium")
    draft.action = ctx.choice(("action",), ACTIONS, "warn")
    if "key" in ctx.doc.value:
        draft.key = ctx.condition(("key",), {"event", "fact"})
    if "subject" in ctx.doc.value:
        raw = ctx.doc.value["subject"]
        if isinstance(raw, str) and raw.strip():
            draft.subject = raw  # checked in each rule, against the names that rule has
        else:
            ctx.error(ctx.at(("subject",)), "invalid-value", "`subject` must be an expression (a string)")


def _check_rules(ctx: FileContext, draft: PolicyDraft) -> None:
    """`rules`: each rule by its kind and the shared options; ids unique within the policy."""
    doc = ctx.doc.value
    rules_raw = doc.get("rules")
    if "rules" in doc and (not isinstance(rules_raw, list) or not rules_raw or len(rules_raw) > MAX_RULES):
        ctx.error(ctx.at(("rules",)), "invalid-value", f"`rules` is a list of 1 to {MAX_RULES} rules")
        return
    if not isinstance(rules_raw, list):
        return
    seen: dict[str, int] = {}
    for i in range(len(rules_raw)):
        rule = _check_rule(ctx, ("rules", i), draft)
        if rule is None:
            continue
        if rule.name in seen:
            ctx.error(
                ctx.at(("rules", i, "id")),
                "duplicate-rule",
                f"rule id `{rule.name}` is already used by rule #{seen[rule.name] + 1} of this policy",
            )
            continue
        seen[rule.name] = i
        # A disabled rule is checked like the others (enabling it later cannot break the set) but kept out of
        # `rules`, which is all that compile, the runtime and the fact-cycle check read.
        (draft.rules if rule.enabled else draft.disabled).append(rule)


def _check_ladder(ctx: FileContext, draft: PolicyDraft) -> None:
    """`ladder: {within, steps, counts}`: the escalation ladder of the policy set."""
    if "ladder" not in ctx.doc.value:
        return
    lb: Key = ("ladder",)
    raw = ctx.raw(lb)
    if not isinstance(raw, dict):
        ctx.error(ctx.at(lb), "not-a-mapping", "`ladder` has within, steps and optional counts")
        return
    ctx.known_fields(lb, names(LADDER_FIELDS), "a ladder")
    if "within" not in raw or "steps" not in raw:
        ctx.error(ctx.at(lb), "missing-field", "a ladder needs `within` and `steps`")
        return
    within = ctx.duration((*lb, "within"))
    steps = raw["steps"]
    if not isinstance(steps, list) or not steps or any(s not in ACTIONS for s in steps):
        ctx.error(ctx.at((*lb, "steps")), "invalid-value", f"`steps` is a list of actions: {', '.join(ACTIONS)}")
        return
    counts: frozenset[str] | None = None
    if "counts" in raw:
        c = raw["counts"]
        if isinstance(c, str) and c in ctx.lists:
            c = [i.value for i in ctx.lists[c].items if isinstance(i, Lit)]
        if not isinstance(c, list) or not all(isinstance(x, str) for x in c):
            ctx.error(ctx.at((*lb, "counts")), "invalid-value", "`counts` is a list of policy ids (or a list's name)")
            return
        counts = frozenset(c)
    if within is not None:
        draft.ladder = Ladder(draft.id, within, tuple(steps), counts, ctx.at(lb))


# Attributes the engine needs as they are (identity, routing, time): a policy cannot have them masked.
_UNMASKABLE = ("id", "type", "time", "subject", "source", "specversion")


def _check_sensitive(ctx: FileContext, draft: PolicyDraft) -> None:
    """`sensitive`: event paths the audit log stores only as salted hashes; and a warning for each rule
    that renders one into a key, subject, message or emitted fact (stored masked there too)."""
    raw = ctx.doc.value.get("sensitive", [])
    if not isinstance(raw, list) or not all(isinstance(x, str) and _SENSITIVE.fullmatch(x) for x in raw):
        ctx.error(
            ctx.at(("sensitive",)),
            "invalid-value",
            "`sensitive` lists event paths such as data.password (no `event.` prefix)",
        )
        return
    paths = []
    for n, x in enumerate(raw):
        path = tuple(x.split("."))
        if path[0] in _UNMASKABLE:
            ctx.error(
                ctx.at(("sensitive", n)),
                "invalid-value",
                f"`{x}` cannot be masked: the engine needs `{path[0]}` as it is",
                "mark a field under `data` (or an extension attribute) as sensitive",
            )
            continue
        paths.append(path)
    draft.sensitive = tuple(paths)
    for rule in (*draft.rules, *draft.disabled):
        for c in rule.conditions():
            if c.role in ("key", "subject", "message", "emit") and expr_reads_sensitive(c.expr, draft.sensitive):
                ctx.diags.append(
                    Diagnostic(
                        ctx.source.path,
                        rule.span,
                        "sensitive-read",
                        f"rule `{rule.name}` renders a sensitive field into its {c.role}: the value is masked there, "
                        "so two events compare by their masks",
                        severity="warning",
                        source_line=ctx.lines[rule.span.line - 1] if rule.span.line <= len(ctx.lines) else "",
                    )
                )
                break


FilePass = Callable[[FileContext, PolicyDraft], None]
# In order: later passes read what earlier ones declared (params before lists before macros before rules).
FILE_PASSES: tuple[tuple[str, FilePass], ...] = (
    ("header", _check_header),
    ("params", _check_params),
    ("lists", _check_lists),
    ("macros", _check_macros),
    ("defaults", _check_defaults),
    ("lifecycle", check_policy_lifecycle),
    ("rules", _check_rules),
    ("ladder", _check_ladder),
    ("sensitive", _check_sensitive),
)


# ---------------------------------------------------------------- one rule


def _rule_kind(ctx: FileContext, base: Key, raw: dict[str, Any]) -> RuleKind | None:
    """The one kind the rule declares (exactly one of the kinds' own fields)."""
    kinds = [k for k in KINDS.values() if k.name in raw]
    if len(kinds) != 1:
        names = ", ".join(f"`{k}`" for k in KINDS)
        found = f" (found {', '.join(k.name for k in kinds)})" if kinds else ""
        ctx.error(
            ctx.at(base), "missing-field" if not kinds else "invalid-value", f"a rule has exactly one of {names}{found}"
        )
        return None
    kind = kinds[0]
    for f in raw:
        owner = next((k for k in KINDS.values() if f in k.field_names[1:]), None)
        if owner is not None and owner is not kind:
            ctx.error(
                ctx.key_at((*base, f)),
                "unknown-field",
                f"`{f}` at rule level belongs to a {owner.name}; put it inside the rule's {kind.name}",
            )
    return kind


def _check_rule(ctx: FileContext, base: Key, policy: PolicyDraft) -> Rule | None:
    raw = ctx.raw(base)
    span = ctx.at(base)
    if not isinstance(raw, dict):
        ctx.error(span, "not-a-mapping", "a rule must be a mapping with `id` and one of " + "/".join(KINDS))
        return None
    ctx.known_fields(base, RULE_FIELDS, "a rule")
    name = raw.get("id")
    if not isinstance(name, str) or not _ID.fullmatch(name):
        ctx.error(
            ctx.at((*base, "id")) if "id" in raw else span,
            "missing-field" if "id" not in raw else "invalid-value",
            "a rule needs an `id`: lowercase words joined by - or .",
        )
        name = f"#{base[-1]}"
    kind = _rule_kind(ctx, base, raw)
    if kind is None:
        return None
    severity = ctx.choice((*base, "severity"), SEVERITIES, policy.severity)
    action = ctx.choice((*base, "action"), ACTIONS, policy.action)
    body = kind.check(ctx, base, raw)
    rule = RuleDraft(policy.id, name, kind, body, kind.roots(raw), span, severity, action, policy.key)
    ok = True
    for _name, option in RULE_OPTIONS:
        ok = option(ctx, base, raw, rule, policy) and ok
    return rule.finish() if ok else None


def _option_key(ctx: FileContext, base: Key, raw: dict[str, Any], rule: RuleDraft, policy: PolicyDraft) -> bool:
    """`key`: the rule's own partition key (else the policy's), reading the kind of item it matches."""
    span = ctx.at(base)
    if "key" in raw:
        rule.key = ctx.condition((*base, "key"), {"event", "fact"})
        if rule.key is None:
            return False
        span = ctx.at((*base, "key"))
    if rule.key is None or rule.body is None:
        return True
    kinds = {c.item for c in rule.body.conditions() if c.trigger}
    roots = {p.root for p in walk(rule.key) if isinstance(p, Path)} & {"event", "fact"}
    wrong = sorted(k for k in kinds if k not in roots) if roots else []
    if wrong:
        ctx.error(
            span,
            "mixed-item",
            f"the key reads {', '.join(sorted(roots))}.* but this rule matches "
            f"{'facts' if 'fact' in wrong else 'events'}, whose key would always be absent",
            "give the rule its own `key`, or leave it out to use the subject of what the rule matched",
        )
        return False
    return True


def _option_message(ctx: FileContext, base: Key, raw: dict[str, Any], rule: RuleDraft, policy: PolicyDraft) -> bool:
    """`message`: text with {expression} placeholders over what the rule matched."""
    if "message" not in raw:
        return True
    m = raw["message"]
    if not isinstance(m, str):
        ctx.error(ctx.at((*base, "message")), "invalid-value", "`message` is text with {expression} placeholders")
        return False
    parts, errs = parse_template(m, ctx.at((*base, "message")))
    for msg, sp in errs:
        ctx.error(sp, "expr-syntax", msg)
    roots = set(rule.roots)
    resolved: list[str | Expr] = []
    ok = not errs
    for p in parts:
        if isinstance(p, str):
            resolved.append(p)
            continue
        r = Resolver(ctx, roots).resolve(p)
        if r is None or not ctx.roots_allowed(r, roots):
            ok = False
        else:
            resolved.append(r)
    rule.message = Template(tuple(resolved))
    return ok


def _option_emit(ctx: FileContext, base: Key, raw: dict[str, Any], rule: RuleDraft, policy: PolicyDraft) -> bool:
    """`emit: {fact: name, data: {...}}`: a derived fact other rules can match."""
    if "emit" not in raw:
        return True
    path: Key = (*base, "emit")
    emit = raw["emit"]
    if not isinstance(emit, dict) or "fact" not in emit:
        ctx.error(ctx.at(path), "invalid-value", "`emit` is {fact: name, data: {field: expression, ...}}")
        return False
    ctx.known_fields(path, names(EMIT_FIELDS), "an emit")
    fact = emit["fact"]
    if not isinstance(fact, str) or not _FACT.fullmatch(fact) or fact == "violation":
        ctx.error(
            ctx.at((*path, "fact")),
            "invalid-value",
            "a fact name is lowercase dotted words (and `violation` is reserved)",
        )
        return False
    data = emit.get("data") or {}
    if not isinstance(data, dict):
        ctx.error(ctx.at((*path, "data")), "invalid-value", "`data` maps field names to expressions")
        return False
    roots = set(rule.roots)
    values = [(str(k), ctx.condition((*path, "data", k), roots, boolean=False)) for k in data]
    checked = [(k, e) for k, e in values if e is not None]
    if len(checked) != len(values):
        return False
    rule.emit = Emit(fact, tuple(checked))
    return True


def _option_violation(ctx: FileContext, base: Key, raw: dict[str, Any], rule: RuleDraft, policy: PolicyDraft) -> bool:
    """`violation: false`: the rule only emits its fact (so it must have `emit`)."""
    violation = raw.get("violation", True)
    if not isinstance(violation, bool):
        ctx.error(ctx.at((*base, "violation")), "invalid-value", "`violation` is true or false")
        return False
    if violation is False and "emit" not in raw:
        ctx.error(
            ctx.at((*base, "violation")), "invalid-value", "`violation: false` without `emit` makes the rule do nothing"
        )
        return False
    rule.violation = violation
    return True


def _option_subject(ctx: FileContext, base: Key, raw: dict[str, Any], rule: RuleDraft, policy: PolicyDraft) -> bool:
    """`subject`: who the violation is against, an expression over what the rule matched (the rule's, or
    the policy's, which must then be valid in every rule)."""
    roots = set(rule.roots)
    if "subject" in raw:
        rule.subject = ctx.condition((*base, "subject"), roots, boolean=False)
        return rule.subject is not None
    if policy.subject is None:
        return True
    before = len(ctx.diags)
    rule.subject = ctx.condition(("subject",), roots, boolean=False)
    if rule.subject is None and all(d.code == "unknown-name" for d in ctx.diags[before:]):
        # Say which rule cannot use the policy's subject: it may be fine in the others.
        del ctx.diags[before:]
        ctx.error(
            ctx.at(("subject",)),
            "unknown-name",
            f"the policy's `subject` cannot be evaluated in rule `{rule.name}`: it reads a name that rule "
            f"does not have (names there: {', '.join(sorted(roots))})",
            "give that rule its own `subject`, or put a subject that names a step on the rules that have it",
        )
    return rule.subject is not None


def _option_once_per(ctx: FileContext, base: Key, raw: dict[str, Any], rule: RuleDraft, policy: PolicyDraft) -> bool:
    """`once_per: DURATION`: one violation per (key, subject) per window; further matches are counted into a
    repeat record when the window closes."""
    if "once_per" not in raw:
        return True
    rule.once_per = ctx.duration((*base, "once_per"))
    if rule.once_per is None:
        return False
    if raw.get("violation", True) is False:
        ctx.error(
            ctx.key_at((*base, "once_per")),
            "invalid-value",
            "`once_per` limits violations, and this rule records none (`violation: false`)",
            "remove `once_per`, or let the rule record its violation",
        )
        return False
    return True


RuleOption = Callable[[FileContext, Key, dict[str, Any], RuleDraft, PolicyDraft], bool]
# The options every kind shares, checked after the kind's own fields; each returns whether it held.
RULE_OPTIONS: tuple[tuple[str, RuleOption], ...] = (
    ("key", _option_key),
    ("subject", _option_subject),
    ("once_per", _option_once_per),
    ("message", _option_message),
    ("emit", _option_emit),
    ("violation", _option_violation),
    ("mode", option_mode),
    ("enabled", option_enabled),
    ("tags", option_tags),
)


# ---------------------------------------------------------------- passes across files


@dataclass
class SetContext:
    """What the passes across files share: the policies that passed alone, and every file's lines."""

    sources: list[Source]
    policies: list[Policy]
    diags: list[Diagnostic]
    schemas: list[Source] | None
    partial: bool = False  # some files of the set were checked alone: other policies may exist

    @property
    def lines(self) -> dict[str, list[str]]:
        return {s.path: s.text.splitlines() for s in self.sources}


def _check_duplicate_policies(sc: SetContext) -> None:
    """A policy id names one file."""
    seen: dict[str, str] = {}
    kept: list[Policy] = []
    for p in sc.policies:
        if p.id in seen:
            sc.diags.append(
                Diagnostic(
                    p.path, Span(1, 1), "duplicate-policy", f"policy id `{p.id}` is already declared in {seen[p.id]}"
                )
            )
            continue
        seen[p.id] = p.path
        kept.append(p)
    sc.policies[:] = kept


def _check_cycles(sc: SetContext) -> None:
    """Derived facts must not feed back into the rules that derive them."""
    check_fact_cycles(sc.policies, sc.diags, sc.lines)


def _check_ladders(sc: SetContext) -> None:
    """At most one ladder, counting only policies that exist."""
    ids = {p.id for p in sc.policies}
    ladders = [(p, p.ladder) for p in sc.policies if p.ladder is not None]
    for p, ladder in ladders[1:]:
        sc.diags.append(
            Diagnostic(
                p.path,
                ladder.span,
                "duplicate-policy",
                f"only one policy may declare a ladder; {ladders[0][0].path} already does",
            )
        )
    for p, ladder in ladders[:1]:
        if sc.partial:
            break  # checked without the rest of its directory: the counted policies may be there
        for missing in sorted((ladder.counts or frozenset()) - ids):
            sc.diags.append(
                Diagnostic(
                    p.path,
                    ladder.span,
                    "unknown-name",
                    f"the ladder counts `{missing}`, which is not a policy here",
                    suggest(missing, ids),
                )
            )


def _check_schemas(sc: SetContext) -> None:
    """With event schema files, a condition reading a field no event of its types has is an error."""
    if not sc.schemas:
        return
    declared, schema_diags = load_schemas(sc.schemas)
    sc.diags.extend(schema_diags)
    if declared is not None:
        sc.diags.extend(check_event_fields(CheckedPolicySet(tuple(sc.policies)), declared, sc.lines))


SET_PASSES: tuple[tuple[str, Callable[[SetContext], None]], ...] = (
    ("duplicate-policies", _check_duplicate_policies),
    ("fact-cycles", _check_cycles),
    ("ladders", _check_ladders),
    ("event-schemas", _check_schemas),
)


# ---------------------------------------------------------------- entry points


def _check_file(source: Source, diags: list[Diagnostic]) -> Policy | None:
    if source.problem:
        diags.append(Diagnostic(source.path, Span(1, 1), "unsafe-file", f"not read: {source.problem}"))
        return None
    lines = source.text.splitlines()
    try:
        doc = load_yaml(source.text)
    except YamlError as exc:
        line = lines[exc.span.line - 1] if 0 < exc.span.line <= len(lines) else ""
        diags.append(Diagnostic(source.path, exc.span, exc.code, exc.message, source_line=line))
        return None
    ctx = FileContext(source, doc, diags, lines)
    if not isinstance(doc.value, dict):
        ctx.error(Span(1, 1), "not-a-mapping", "a policy file must be a mapping with `policy`, `clause`, `rules`")
        return None
    before = len(diags)
    draft = PolicyDraft()
    for _name, check in FILE_PASSES:
        check(ctx, draft)
    failed = any(d.severity == "error" for d in diags[before:])
    return draft.finish(source) if not failed else None


def _check_file_safely(source: Source, diags: list[Diagnostic]) -> Policy | None:
    """_check_file, with a file too deeply nested for the checker's recursion reported, not raised."""
    try:
        return _check_file(source, diags)
    except RecursionError:
        diags.append(Diagnostic(source.path, Span(1, 1), "limit", "the file nests expressions too deeply to check"))
        return None


def check_sources(
    sources: list[Source], schemas: list[Source] | None = None, *, partial: bool = False
) -> tuple[CheckedPolicySet | None, list[Diagnostic]]:
    """Check every file; return the policy set (None if any error) and all diagnostics, sorted.

    `schemas` are event schema files (`*.schema.yaml`); with them, fields no event has are errors.
    `partial`: the files are some of a directory's (`tosengine check FILE`), so a ladder may count
    policies that are not among them.
    """
    diags: list[Diagnostic] = []
    # Rule order is part of the semantics (the order derived facts are queued): always by path.
    ordered = sorted(sources, key=lambda s: s.path)
    policies = [p for p in (_check_file_safely(s, diags) for s in ordered) if p is not None]
    # Passes across files run on the policies that passed on their own, so one broken file does not
    # hide a cycle elsewhere.
    sc = SetContext(ordered, policies, diags, schemas, partial)
    for _name, check in SET_PASSES:
        check(sc)
    diags.sort(key=lambda d: d.sort_key)
    if any(d.severity == "error" for d in diags):
        return None, diags
    return CheckedPolicySet(tuple(sc.policies)), diags


def check_policy_set(sources: list[Source], schemas: list[Source] | None = None) -> CheckedPolicySet:
    """Check, raising PolicyError with every diagnostic if anything is wrong."""
    checked, diags = check_sources(sources, schemas)
    if checked is None:
        raise PolicyError(diags)
    return checked
