"""Stage check (across files): derived facts must not feed back into the rules that derive them."""

from __future__ import annotations

from tosengine.policy.diagnostics import Diagnostic
from tosengine.policy.expr import Binary, Expr, ListLit, Lit, Path
from tosengine.policy.model import Policy, Rule

__all__ = ["check_fact_cycles"]


def _fact_constraints(e: Expr) -> dict[str, tuple[set[str] | None, set[str]]]:
    """Top-level `fact.<f>` conjuncts with string literals: (allowed values or None, excluded values)."""
    out: dict[str, tuple[set[str] | None, set[str]]] = {}
    stack = [e]
    while stack:
        x = stack.pop()
        if isinstance(x, Binary) and x.op == "and":
            stack += [x.left, x.right]
            continue
        if not (isinstance(x, Binary) and x.op in ("==", "in", "!=", "not in")):
            continue
        path, other = (x.left, x.right) if isinstance(x.left, Path) else (x.right, x.left)
        if not (isinstance(path, Path) and path.root == "fact" and len(path.parts) == 1):
            continue
        if isinstance(other, Lit) and isinstance(other.value, str):
            vals = {other.value}
        elif isinstance(other, ListLit) and all(isinstance(i, Lit) for i in other.items):
            vals = {str(i.value) for i in other.items if isinstance(i, Lit)}
        else:
            continue
        allowed, excluded = out.get(path.parts[0], (None, set()))
        if x.op in ("==", "in"):
            allowed = vals if allowed is None else allowed & vals
        else:
            excluded = excluded | vals
        out[path.parts[0]] = (allowed, excluded)
    return out


def _fact_triggers(rule: Rule) -> list[Expr]:
    """The rule's conditions that match facts (every kind says which through its conditions)."""
    return [c.expr for c in rule.body.conditions() if c.trigger and c.item == "fact"]


def _produces(rule: Rule) -> list[dict[str, str]]:
    out = []
    if rule.violation:
        out.append({"type": "violation", "policy": rule.policy, "rule": rule.id, "severity": rule.severity})
    if rule.emit is not None:
        out.append({"type": rule.emit.fact})
    return out


def _accepts(constraints: dict[str, tuple[set[str] | None, set[str]]], fact: dict[str, str]) -> bool:
    """Whether a fact with these known fields can satisfy the constraints (unknown fields: it can)."""
    for f, (allowed, excluded) in constraints.items():
        if f not in fact:
            continue
        if (allowed is not None and fact[f] not in allowed) or fact[f] in excluded:
            return False
    return True


def check_fact_cycles(policies: list[Policy], diags: list[Diagnostic], lines: dict[str, list[str]]) -> None:
    """A rule whose facts can (transitively) reach itself would loop forever: reject the cycle."""
    rules = [r for p in policies for r in p.rules]
    path_of = {p.id: p.path for p in policies}
    edges: dict[str, set[str]] = {r.id: set() for r in rules}
    for src in rules:
        for fact in _produces(src):
            for dst in rules:
                if any(_accepts(_fact_constraints(c), fact) for c in _fact_triggers(dst)):
                    edges[src.id].add(dst.id)
    by_id = {r.id: r for r in rules}
    color: dict[str, int] = {}
    reported: set[str] = set()

    def dfs(n: str, stack: list[str]) -> None:
        color[n] = 1
        for m in sorted(edges[n]):
            if color.get(m) == 1:
                cyc = [*stack[stack.index(m) :], m] if m in stack else [n, m]
                first = by_id[m]
                if m not in reported:
                    reported.add(m)
                    path = path_of[first.policy]
                    ls = lines.get(path, [])
                    line = ls[first.span.line - 1] if 0 < first.span.line <= len(ls) else ""
                    diags.append(
                        Diagnostic(
                            path,
                            first.span,
                            "fact-cycle",
                            "derived facts form a cycle: " + " -> ".join(cyc),
                            "break the cycle with a narrower fact.type/fact.policy condition",
                            source_line=line,
                        )
                    )
            elif color.get(m) is None:
                dfs(m, [*stack, m])
        color[n] = 2

    for r in rules:
        if r.id not in color:
            dfs(r.id, [r.id])
