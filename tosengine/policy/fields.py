"""Stage check (the fields): every field of a policy file, with its JSON Schema and what it means.

The one place that knows the fields of the policy language outside the rule kinds (each kind declares
its own in policy/kinds.py): the checker takes its lists of known fields from here, and
`tosengine schema` (policy/fileschema.py) builds the JSON Schema editors read from these tables and
the kinds table, so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tosengine.policy.model import ACTIONS, MODES, SEVERITIES

__all__ = [
    "DURATION",
    "EMIT_FIELDS",
    "EXPR",
    "ID_PATTERN",
    "LADDER_FIELDS",
    "POLICY_FIELDS",
    "RULE_OPTION_FIELDS",
    "TAG_PATTERN",
    "Field",
    "enum",
    "names",
    "obj",
]

ID_PATTERN = r"[a-z0-9]+(?:[-.][a-z0-9]+)*"
TAG_PATTERN = r"[a-z0-9]+(?:[-._:][a-z0-9]+)*"
_PARAM = r"[A-Za-z_][A-Za-z0-9_]*"
_DURATION = r"\d+(?:\.\d+)?(?:ms|[smhd])"

# JSON Schema fragments the tables below (and the kinds) are written with.
EXPR: dict[str, Any] = {"type": "string", "minLength": 1, "description": "an expression (docs/policy-language.md)"}
DURATION: dict[str, Any] = {
    "type": "string",
    "pattern": f"^\\s*(?:{_DURATION}|{_PARAM})\\s*$",
    "description": "a duration such as 500ms, 30s, 10m, 2h or 14d, or the name of a param holding one",
}


def enum(values: tuple[str, ...]) -> dict[str, Any]:
    """A string that is one of `values`."""
    return {"enum": list(values)}


def obj(fields: tuple[Field, ...], description: str = "") -> dict[str, Any]:
    """A closed object (no other keys) with these fields."""
    out: dict[str, Any] = {
        "type": "object",
        "properties": {f.name: {**f.schema, "description": f.doc} for f in fields},
        "additionalProperties": False,
    }
    required = [f.name for f in fields if f.required]
    if required:
        out["required"] = required
    if description:
        out["description"] = description
    return out


@dataclass(frozen=True)
class Field:
    """One field: its name, the JSON Schema of its value, what it means, and whether it is required."""

    name: str
    schema: dict[str, Any]
    doc: str
    required: bool = False


def names(fields: tuple[Field, ...]) -> tuple[str, ...]:
    """The names of `fields`, in order."""
    return tuple(f.name for f in fields)


_TAGS: dict[str, Any] = {
    "type": "array",
    "items": {"type": "string", "pattern": f"^{TAG_PATTERN}$"},
    "uniqueItems": True,
}

EMIT_FIELDS: tuple[Field, ...] = (
    Field("fact", {"type": "string", "pattern": r"^[a-z0-9_]+(?:\.[a-z0-9_]+)*$"}, "the fact's type", True),
    Field(
        "data",
        {"type": "object", "additionalProperties": {"oneOf": [EXPR, {"type": ["number", "boolean"]}]}},
        "field name -> expression over what the rule matched",
    ),
)

LADDER_FIELDS: tuple[Field, ...] = (
    Field("within", DURATION, "how long a counted violation counts", True),
    Field(
        "steps",
        {"type": "array", "items": {"enum": list(ACTIONS)}, "minItems": 1},
        "the action of the 1st, 2nd, ... counted violation (the last repeats)",
        True,
    ),
    Field(
        "counts",
        {"oneOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}]},
        "the policy ids whose violations climb the ladder (or a list's name); default: every policy",
    ),
)

# The options every rule kind shares (the kinds add their own fields: policy/kinds.py).
RULE_OPTION_FIELDS: tuple[Field, ...] = (
    Field("severity", enum(SEVERITIES), "the rule's severity (default: the policy's)"),
    Field("action", enum(ACTIONS), "the rule's action (default: the policy's)"),
    Field("key", EXPR, "the partition key of the rule's state (default: the policy's, else the subject matched)"),
    Field("subject", EXPR, "who the violation is against (default: the key's value)"),
    Field("once_per", DURATION, "one violation per (key, subject) per this long; the rest go to a repeat record"),
    Field("message", {"type": "string"}, "text with {expression} placeholders"),
    Field("emit", obj(EMIT_FIELDS), "a derived fact other rules can match"),
    Field("violation", {"type": "boolean"}, "false: the rule only emits its fact"),
    Field("title", {"type": "string"}, "a short name of the rule"),
    Field("mode", enum(MODES), "shadow: recorded as shadow, acted on by no one (default: the policy's)"),
    Field("enabled", {"type": "boolean"}, "false: the rule stays in the file, checked, but no engine runs it"),
    Field("tags", _TAGS, "labels that --tag selects (added to the policy's)"),
)

_RULES_DOC = "the rules (schema below)"
POLICY_FIELDS: tuple[Field, ...] = (
    Field("policy", {"type": "string", "pattern": f"^{ID_PATTERN}$"}, "the policy id", True),
    Field("subject", EXPR, "who the policy's violations are against (default: the key's value)"),
    Field("title", {"type": "string"}, "a short name (default: the id)"),
    Field("clause", {"type": "string"}, "the terms text this policy enforces, quoted in violations", True),
    Field("clause_ref", {"type": "string"}, "where the clause comes from"),
    Field("severity", enum(SEVERITIES), "the default severity of the rules (default: medium)"),
    Field("action", enum(ACTIONS), "the default action of the rules (default: warn)"),
    Field("key", EXPR, "the partition key of the policy's rules (default: the subject matched)"),
    Field(
        "params",
        {"type": "object", "additionalProperties": {"oneOf": [{"type": "number"}, DURATION]}},
        "named numbers and durations an author tunes",
    ),
    Field(
        "lists",
        {
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": ["string", "number", "boolean"]}},
        },
        "named lists of literals",
    ),
    Field("macros", {"type": "object", "additionalProperties": EXPR}, "named expressions"),
    Field("rules", {"type": "array", "minItems": 1}, _RULES_DOC),
    Field(
        "sensitive",
        {"type": "array", "items": {"type": "string", "pattern": r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$"}},
        "event paths (data.password) the audit log stores only as salted hashes",
    ),
    Field("ladder", obj(LADDER_FIELDS), "the escalation ladder of the policy set"),
    Field("mode", enum(MODES), "enforce (default) or shadow: the default of the rules"),
    Field("tags", _TAGS, "labels of the policy, which its rules carry too"),
)
