"""Event schemas: `*.schema.yaml` beside the policies declare each event type's `data` (a JSON Schema
subset), so `check` can report a condition that reads a field no such event has."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tosengine.policy.compile import literal_types
from tosengine.policy.diagnostics import Diagnostic, Span
from tosengine.policy.expr import Path, walk
from tosengine.policy.model import CheckedPolicySet
from tosengine.policy.sources import Source
from tosengine.policy.yaml import YamlError, load_yaml

__all__ = ["EventSchemas", "check_event_fields", "load_schemas"]

_KEYWORDS = {"type", "properties", "items", "enum", "required", "description", "additionalProperties"}


@dataclass(frozen=True)
class EventSchemas:
    """Declared event types: type name -> JSON Schema of `data`."""

    data: dict[str, dict[str, Any]]

    def missing(self, etype: str, parts: tuple[str, ...]) -> tuple[str, list[str]] | None:
        """None if `data.<parts>` can exist for `etype`; else (the first unknown name, its siblings)."""
        schema: Any = self.data[etype]
        for part in parts:
            if not isinstance(schema, dict):
                return None
            if schema.get("type") == "array" or "items" in schema:
                if not part.isdigit():
                    return part, []
                schema = schema.get("items", {})
                continue
            props = schema.get("properties")
            if props is None:
                return None  # an open object: anything may be there
            if part not in props:
                return part, sorted(props)
            schema = props[part]
        return None


def load_schemas(sources: Iterable[Source]) -> tuple[EventSchemas | None, list[Diagnostic]]:
    """Parse schema files; None when there are none (then fields are not checked)."""
    data: dict[str, dict[str, Any]] = {}
    diags: list[Diagnostic] = []
    seen = False
    for src in sources:
        seen = True
        if src.problem:
            diags.append(Diagnostic(src.path, Span(1, 1), "unsafe-file", f"not read: {src.problem}"))
            continue
        try:
            doc = load_yaml(src.text)
        except YamlError as exc:
            diags.append(Diagnostic(src.path, exc.span, exc.code, exc.message))
            continue
        events = doc.value.get("events") if isinstance(doc.value, dict) else None
        if not isinstance(events, dict):
            diags.append(
                Diagnostic(
                    src.path,
                    Span(1, 1),
                    "invalid-value",
                    "an event schema file has `events:`, mapping event types to {data: schema}",
                )
            )
            continue
        for etype, decl in events.items():
            schema = decl.get("data", {}) if isinstance(decl, dict) else None
            if not isinstance(schema, dict):
                diags.append(
                    Diagnostic(
                        src.path,
                        doc.span(("events", etype)),
                        "invalid-value",
                        f"`{etype}` needs `data:`, a JSON Schema object",
                    )
                )
                continue
            data[str(etype)] = schema
    return (EventSchemas(data) if seen else None), diags


def check_event_fields(
    policies: CheckedPolicySet, schemas: EventSchemas, lines: dict[str, list[str]]
) -> list[Diagnostic]:
    """A diagnostic for each `event.data.*` (or step/after) path that no event of its types can have."""
    diags: list[Diagnostic] = []
    for pol in policies.policies:
        for rule in (*pol.rules, *pol.disabled):  # a disabled rule is checked for when it is enabled
            for c in rule.body.conditions():
                binds = dict(c.binds)
                for p in walk(c.expr):
                    if not (isinstance(p, Path) and len(p.parts) >= 2 and p.parts[0] == "data"):
                        continue
                    # The types of the item a root names: the condition's own, or the one binding it.
                    source = binds.get(p.root) or (c.expr if p.root == "event" else None)
                    types = literal_types(source, "event") if source is not None else None
                    if not types or not all(t in schemas.data for t in types):
                        continue  # undeclared types are not checked
                    problems = [schemas.missing(t, p.parts[1:]) for t in sorted(types)]
                    if any(x is None for x in problems):
                        continue
                    name, siblings = next(x for x in problems if x is not None)
                    close = difflib.get_close_matches(name, siblings, n=1, cutoff=0.6)
                    hint = (
                        f"did you mean `{close[0]}`?"
                        if close
                        else (f"fields here: {', '.join(siblings)}" if siblings else "")
                    )
                    ls = lines.get(pol.path, [])
                    line = ls[p.span.line - 1] if 0 < p.span.line <= len(ls) else ""
                    diags.append(
                        Diagnostic(
                            pol.path,
                            p.span,
                            "unknown-field",
                            f"no {' or '.join(sorted(types))} event has `{p.dotted}`",
                            hint,
                            source_line=line,
                        )
                    )
    return diags
