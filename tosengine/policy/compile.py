"""Stage compile: CheckedPolicySet -> Plan (durable_rules rulesets as pure JSON-shaped data).

durable_rules is used only as an alpha network: each rule's conditions on a single item ("triggers")
become one-element durable_rules rules. Everything that involves state -- joins between steps,
windows, deadlines, absence -- is done by the runtime in Python, keyed by partition key, because that
is exactly where durable_rules' defects live (1,024 sessions, broken `$not`, 32-bit ids, memory per
session, events consumed by the first rule). See docs/architecture.md.

What reaches durable_rules is a *projection* of the item: for each path a pushed condition reads,
a short code -- `c<n>` for a string literal the policies compare it to, `$T` for true, `$A` for absent,
`$O` for anything else. No event data ever reaches the C engine, so its limits on properties, string
sizes, encodings and loose typing cannot be hit by an event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tosengine.policy.expr import Binary, Call, Expr, ListLit, Lit, Path, Unary, walk
from tosengine.policy.model import CheckedPolicySet, ItemKind

__all__ = ["Plan", "Projection", "RulesetPlan", "TriggerPlan", "compile_policy_set", "literal_types"]

# durable_rules 2.0.28 fails (error 303) once one message passes more than 64 alpha nodes of a
# ruleset, and hangs creating a ruleset with >= 513 rules. A trigger pushes at most ATOM_BUDGET
# conditions, a ruleset holds at most TRIGGERS_PER_RULESET triggers: at most 48 nodes pass.
ATOM_BUDGET = 4
TRIGGERS_PER_RULESET = 12


@dataclass(frozen=True)
class TriggerPlan:
    """A condition on one item that some rule reacts to.

    role: `match`, `threshold`, `step` (with `step` index), `after` or `fulfil`.
    pushed: the durable_rules condition (over projected properties); `local`: the rest of the
    condition that reads only this item; `joined`: the part that reads earlier steps or `after`.
    """

    id: int
    rule: int
    role: str
    step: int
    kind: ItemKind
    types: frozenset[str] | None
    pushed: tuple[dict[str, Any], ...]
    local: Expr | None
    joined: Expr | None


@dataclass(frozen=True)
class Projection:
    """How one path of an item is coded for durable_rules."""

    prop: str
    parts: tuple[str, ...]
    codes: tuple[tuple[str, str], ...]  # (literal, code)


@dataclass(frozen=True)
class RulesetPlan:
    """One durable_rules ruleset: the triggers for items of one kind and (optionally) one type."""

    name: str
    kind: ItemKind
    type: str | None
    triggers: tuple[int, ...]
    definition: dict[str, Any]
    projections: tuple[Projection, ...]


@dataclass(frozen=True)
class Plan:
    """The compiled form of a policy set."""

    triggers: tuple[TriggerPlan, ...]
    rulesets: tuple[RulesetPlan, ...]


def _conjuncts(e: Expr) -> list[Expr]:
    if isinstance(e, Binary) and e.op == "and":
        return _conjuncts(e.left) + _conjuncts(e.right)
    return [e]


def _and(items: list[Expr]) -> Expr | None:
    if not items:
        return None
    out = items[0]
    for x in items[1:]:
        out = Binary("and", out, x, x.span)
    return out


def _str_list(e: Expr) -> list[str] | None:
    if isinstance(e, ListLit) and e.items and all(isinstance(i, Lit) and isinstance(i.value, str) for i in e.items):
        return [str(i.value) for i in e.items if isinstance(i, Lit)]
    return None


def _own_path(e: Expr, root: str) -> Path | None:
    return e if isinstance(e, Path) and e.root == root and e.parts else None


# An atom: (path parts, op, values). op: eq / neq / in / notin with string literals (coded c<n>), or
# true / nottrue / absent / present, which test the projection's own `$T` / `$A` codes. The special
# tests are separate ops, never literals, so a policy's string "$T" is a literal like any other.
Atom = tuple[tuple[str, ...], str, tuple[str, ...]]


def _atom(e: Expr, root: str) -> Atom | None:
    """The pushable form of one conjunct, or None (then it is evaluated in Python)."""
    negate = False
    while isinstance(e, Unary) and e.op == "not":
        negate, e = not negate, e.operand
    if (p := _own_path(e, root)) is not None:
        return (p.parts, "nottrue" if negate else "true", ())
    if isinstance(e, Call) and e.func == "exists" and (p := _own_path(e.args[0], root)) is not None:
        return (p.parts, "absent" if negate else "present", ())
    if not isinstance(e, Binary):
        return None
    if e.op in ("==", "!="):
        p, other = _own_path(e.left, root), e.right
        if p is None:
            p, other = _own_path(e.right, root), e.left
        if p is None or not isinstance(other, Lit):
            return None
        positive = (e.op == "==") != negate
        if isinstance(other.value, str):
            return (p.parts, "eq" if positive else "neq", (other.value,))
        if other.value is True:
            return (p.parts, "true" if positive else "nottrue", ())
        return None
    if e.op in ("in", "not in") and (p := _own_path(e.left, root)) is not None:
        values = _str_list(e.right)
        if values is None:
            return None
        positive = (e.op == "in") != negate
        if positive:
            return (p.parts, "in", tuple(dict.fromkeys(values)))
        if len(set(values)) <= 2:  # each excluded value is one passing node: keep within budget
            return (p.parts, "notin", tuple(dict.fromkeys(values)))
    return None


def _atom_cost(a: Atom) -> int:
    # Each value of `in` is a branch of an $or, and durable_rules counts every branch against its limits
    # (it hangs creating a ruleset with 513 of them): a long list is checked in Python instead.
    return len(a[2]) if a[1] in ("in", "notin") else 1


def _types(conjuncts: list[Expr], root: str) -> frozenset[str] | None:
    for c in conjuncts:
        a = _atom(c, root)
        if a is not None and a[0] == ("type",) and a[1] in ("eq", "in"):
            return frozenset(a[2])
    return None


def literal_types(e: Expr, root: str) -> frozenset[str] | None:
    """The item types a condition is limited to by a top-level `<root>.type == "x"` / `in [...]`, or None."""
    return _types(_conjuncts(e), root)


def _split(e: Expr, kind: ItemKind) -> tuple[list[Atom], Expr | None, Expr | None, frozenset[str] | None]:
    root = kind
    conj = _conjuncts(e)
    pushed: list[Atom] = []
    local: list[Expr] = []
    joined: list[Expr] = []
    budget = ATOM_BUDGET
    for c in conj:
        roots = {n.root for n in walk(c) if isinstance(n, Path)}
        if roots - {root}:
            joined.append(c)
            continue
        a = _atom(c, root)
        if a is not None and _atom_cost(a) <= budget:
            pushed.append(a)
            budget -= _atom_cost(a)
        else:
            local.append(c)
    return pushed, _and(local), _and(joined), _types(conj, root)


def compile_policy_set(policies: CheckedPolicySet) -> Plan:
    """Compile checked policies into triggers and the durable_rules rulesets that pre-select them."""
    triggers: list[TriggerPlan] = []
    atoms_of: dict[int, list[Atom]] = {}
    for ri, rule in enumerate(policies.rules):
        for c in rule.body.conditions():
            if not c.trigger:
                continue
            role, step, kind = c.role, c.step, c.item
            pushed, local, joined, types = _split(c.expr, kind)
            tid = len(triggers)
            atoms_of[tid] = pushed
            triggers.append(TriggerPlan(tid, ri, role, step, kind, types, (), local, joined))
    # Group triggers by (kind, type); a trigger accepting several types sits in each type's group.
    groups: dict[tuple[ItemKind, str | None], list[int]] = {}
    for t in triggers:
        for ty in sorted(t.types) if t.types is not None else [None]:
            groups.setdefault((t.kind, ty), []).append(t.id)
    rulesets: list[RulesetPlan] = []
    final: dict[int, TriggerPlan] = {t.id: t for t in triggers}
    for (kind, ty), ids in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        for start in range(0, len(ids), TRIGGERS_PER_RULESET):
            chunk = ids[start : start + TRIGGERS_PER_RULESET]
            rulesets.append(_ruleset(f"rs{len(rulesets)}", kind, ty, chunk, atoms_of, final))
    return Plan(tuple(final[t.id] for t in triggers), tuple(rulesets))


def _ruleset(
    name: str,
    kind: ItemKind,
    ty: str | None,
    ids: list[int],
    atoms_of: dict[int, list[Atom]],
    final: dict[int, TriggerPlan],
) -> RulesetPlan:
    props: dict[tuple[str, ...], str] = {}
    codes: dict[tuple[str, ...], dict[str, str]] = {}

    def code(parts: tuple[str, ...], lit: str) -> tuple[str, str]:
        prop = props.setdefault(parts, f"p{len(props)}")
        table = codes.setdefault(parts, {})
        return prop, table.setdefault(lit, f"c{len(table)}")

    special = {"true": ("eq", "$T"), "nottrue": ("neq", "$T"), "absent": ("eq", "$A"), "present": ("neq", "$A")}

    definition: dict[str, Any] = {}
    for tid in ids:
        conds: list[dict[str, Any]] = [{"k": "1"}]
        for parts, op, values in atoms_of[tid]:
            if op in special:
                how, mark = special[op]
                prop = props.setdefault(parts, f"p{len(props)}")
                conds.append({prop: mark} if how == "eq" else {"$neq": {prop: mark}})
                continue
            pairs = [code(parts, v) for v in values]
            if op == "eq":
                conds.append({pairs[0][0]: pairs[0][1]})
            elif op == "neq":
                conds.append({"$neq": {pairs[0][0]: pairs[0][1]}})
            elif op == "in":
                conds.append({"$or": [{p: c} for p, c in pairs]} if len(pairs) > 1 else {pairs[0][0]: pairs[0][1]})
            else:
                conds.extend({"$neq": {p: c}} for p, c in pairs)
        cond = conds[0] if len(conds) == 1 else {"$and": conds}
        definition[f"t{tid}"] = {"all": [{"m": cond}]}
        t = final[tid]
        final[tid] = TriggerPlan(t.id, t.rule, t.role, t.step, t.kind, t.types, tuple(conds[1:]), t.local, t.joined)
    for parts in props:
        codes.setdefault(parts, {})
    projections = tuple(Projection(props[p], p, tuple(codes[p].items())) for p in props)
    return RulesetPlan(name, kind, ty, tuple(ids), definition, projections)
