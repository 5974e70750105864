"""Stage check (for editors): the field tables and the kinds table -> the JSON Schema of a policy file.

Built from policy/fields.py and policy/kinds.py, which the checker reads its known fields from too, so
an editor validating with this schema and `tosengine check` agree on which fields exist. The schema
says what is shaped right; `check` still does what a schema cannot (expressions, names, types, cycles).
"""

from __future__ import annotations

from typing import Any

from tosengine._version import __version__
from tosengine.policy.fields import ID_PATTERN, POLICY_FIELDS, RULE_OPTION_FIELDS, Field, obj
from tosengine.policy.kinds import KINDS

__all__ = ["SCHEMA_ID", "policy_file_schema"]

SCHEMA_ID = "urn:tosengine:schema:policy-file"


def _rule_schema() -> dict[str, Any]:
    """A rule: an id, exactly one kind (with the kind's own fields), and the options every kind shares."""
    kind_fields = tuple(f for k in KINDS.values() for f in k.fields)
    rule_id = Field("id", {"type": "string", "pattern": f"^{ID_PATTERN}$"}, "the rule id", True)
    rule = obj(
        (rule_id, *kind_fields, *RULE_OPTION_FIELDS),
        "one rule: an id, exactly one of " + ", ".join(KINDS) + ", and options",
    )
    rule["oneOf"] = [{"required": [k.name]} for k in KINDS.values()]
    return rule


def policy_file_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one policy file."""
    schema = obj(POLICY_FIELDS)
    schema["properties"]["rules"]["items"] = {"$ref": "#/$defs/rule"}
    # A policy needs rules, unless it only declares the ladder.
    schema["anyOf"] = [{"required": ["rules"]}, {"required": ["ladder"]}]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": f"tosengine policy file (tosengine {__version__})",
        "description": "One policy per YAML file; see docs/policy-language.md. `tosengine check` checks "
        "what a schema cannot: expressions, names, types, fact cycles.",
        **schema,
        "$defs": {"rule": _rule_schema()},
    }
