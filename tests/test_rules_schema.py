"""`tosengine rules`, `tosengine schema`, `check` on files, and the rollout fields (mode, enabled, tags)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import ev, policy_set, tosengine
from tosengine import Engine
from tosengine.policy.check import RULE_FIELDS, check_sources
from tosengine.policy.fields import POLICY_FIELDS, names
from tosengine.policy.fileschema import policy_file_schema
from tosengine.policy.sources import Source

ROOT = Path(__file__).resolve().parents[1]

ROLLOUT = """policy: rollout
title: Rollout
clause: Be nice.
mode: shadow
tags: [credentials, q3-rollout]
rules:
  - id: mobile
    match: event.type == "account.login" and startswith(event.data.origin, "m.")
  - id: legacy
    match: event.type == "account.login" and event.data.origin == "old.example"
    mode: enforce
    tags: [legacy, credentials]
  - id: app
    match: event.type == "account.login"
    key: event.data.app_id
    subject: '"app:" + event.data.app_id'
    enabled: false
"""


# ---------------------------------------------------------------- the rollout fields


def test_modes_tags_and_disabled_rules_are_checked_into_the_model() -> None:
    checked = policy_set(ROLLOUT)
    (pol,) = checked.policies
    assert (pol.mode, pol.tags) == ("shadow", ("credentials", "q3-rollout"))
    assert [(r.name, r.mode, r.tags) for r in checked.rules] == [
        ("mobile", "shadow", ("credentials", "q3-rollout")),
        ("legacy", "enforce", ("credentials", "q3-rollout", "legacy")),
    ]
    assert [r.name for r in checked.disabled] == ["app"] and not checked.disabled[0].enabled


def test_a_disabled_rule_is_kept_out_of_the_engine() -> None:
    with Engine(policy_set(ROLLOUT)) as engine:
        out = engine.process(ev("e1", "account.login", "account:1", origin="old.example", app_id="a1"))
    assert [v.rule for v in out] == ["rollout/legacy"]


def test_wrong_rollout_fields_are_diagnostics(golden: Callable[[str, str], None], tmp_path: Path) -> None:
    bad = (
        ROLLOUT.replace("mode: shadow", "mode: shdow")
        .replace("tags: [legacy, credentials]", "tags: [Legacy, credentials, credentials]")
        .replace("enabled: false", "enabled: no-thanks")
        .replace("    mode: enforce", "    mode: live\n    enabld: true")
    )
    (tmp_path / "rollout.yaml").write_text(bad, encoding="utf-8")
    p = tosengine("check", "rollout.yaml", cwd=tmp_path)
    assert p.returncode == 1
    codes = re.findall(r"^rollout\.yaml:(\d+:\d+): error\[([a-z-]+)\]", p.stdout, re.M)
    assert codes == [
        ("4:7", "invalid-value"),
        ("11:11", "invalid-value"),
        ("12:5", "unknown-field"),
        ("13:12", "invalid-value"),
        ("13:33", "invalid-value"),
        ("18:14", "invalid-value"),
    ]
    assert "did you mean `shadow`?" in p.stdout and "did you mean `enabled`?" in p.stdout
    golden("rollout-broken.txt", p.stdout)


def test_a_disabled_rule_is_still_checked_against_the_event_schema(tmp_path: Path) -> None:
    (tmp_path / "events.schema.yaml").write_text(
        "events:\n  account.login:\n    data: {type: object, properties: {origin: {type: string}}}\n", encoding="utf-8"
    )
    (tmp_path / "p.yaml").write_text(
        'policy: p\nclause: c\nrules:\n  - id: r\n    match: event.type == "account.login" and '
        'event.data.orgin == "x"\n    enabled: false\n',
        encoding="utf-8",
    )
    p = tosengine("check", str(tmp_path))
    assert p.returncode == 1 and "no account.login event has `event.data.orgin`" in p.stdout
    assert "did you mean `origin`?" in p.stdout


# ---------------------------------------------------------------- rules


def test_rules_lists_kind_key_subject_mode_and_tags(tmp_path: Path) -> None:
    (tmp_path / "rollout.yaml").write_text(ROLLOUT, encoding="utf-8")
    p = tosengine("rules", str(tmp_path))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["RULE", "KIND", "MODE", "KEY", "SUBJECT", "TAGS"]
    assert lines[1].split() == [
        "rollout/mobile",
        "match",
        "shadow",
        "event.subject",
        "(the",
        "key)",
        "credentials,q3-rollout",
    ]
    app = ["rollout/app", "match", "disabled", "event.data.app_id", '"app:"', "+", "event.data.app_id"]
    assert lines[3].split() == [*app, "credentials,q3-rollout"]
    assert lines[-1] == "3 rule(s): 1 enforce, 1 shadow, 1 disabled"
    rows = [
        json.loads(x)
        for x in tosengine("rules", str(tmp_path), "--format", "json", "--tag", "legacy").stdout.splitlines()
    ]
    assert [(r["rule"], r["mode"], r["enabled"], r["tags"]) for r in rows] == [
        ("rollout/legacy", "enforce", True, ["credentials", "q3-rollout", "legacy"])
    ]
    shadow = tosengine("rules", str(tmp_path), "--mode", "shadow", "--format", "json").stdout.splitlines()
    assert [json.loads(x)["rule"] for x in shadow] == ["rollout/mobile"]


def test_rules_of_the_default_pack() -> None:
    p = tosengine("rules", str(ROOT / "policies"), "--format", "json")
    rows = {json.loads(x)["rule"]: json.loads(x) for x in p.stdout.splitlines()}
    assert len(rows) == 11
    r = rows["ban-evasion/new-account-on-disabled-device"]
    assert (r["kind"], r["key"], r["subject"]) == ("sequence", "event.data.device_id", "back.subject")
    assert rows["fake-engagement/operator-bot-network"]["key"] == "fact.subject"


# ---------------------------------------------------------------- check on files


def test_check_takes_a_file_and_finds_its_schema(tmp_path: Path) -> None:
    p = tosengine("check", "policies/data-scraping.yaml", cwd=ROOT)
    assert p.returncode == 0, p.stdout
    assert p.stdout == "ok: 1 policies, 1 rules in policies/data-scraping.yaml\n"  # the schema beside it applies
    p = tosengine("check", "policies/escalation.yaml", "policies/fake-engagement.yaml", cwd=ROOT)
    assert p.returncode == 0, p.stdout  # the ladder counts policies not given: not an error for a file alone
    p = tosengine("check", str(tmp_path / "nope.yaml"))
    assert p.returncode == 2 and "no policy file or directory" in p.stderr


def test_check_says_when_field_names_are_not_checked(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        'policy: p\nclause: c\nrules:\n  - id: r\n    match: event.data.orgin == "x"\n', encoding="utf-8"
    )
    p = tosengine("check", str(tmp_path))
    assert p.returncode == 0
    assert "note: no event schema (events.schema.yaml) applies to these policies, so event field names" in p.stdout
    p = tosengine("check", str(ROOT / "policies"))
    assert "note:" not in p.stdout
    p = tosengine("check", str(tmp_path), "--format", "json")
    assert p.stdout == ""  # JSON lines are diagnostics only


# ---------------------------------------------------------------- schema


def _validate(schema: dict[str, Any], value: Any, root: dict[str, Any], path: str = "") -> list[str]:
    """A small JSON Schema validator for the keywords the policy schema uses (draft 2020-12 semantics)."""
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        return _validate(root["$defs"][name], value, root, path)
    errors: list[str] = []
    types = schema.get("type")
    if types is not None:
        kinds: dict[str, type | tuple[type, ...]] = {
            "string": str, "object": dict, "array": list, "boolean": bool, "integer": int, "number": (int, float),
        }  # fmt: skip
        names_ = types if isinstance(types, list) else [types]
        ok = any(
            isinstance(value, kinds[t]) and not (t in ("integer", "number") and isinstance(value, bool)) for t in names_
        )
        if not ok:
            return [f"{path}: not {types}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{path}: {value!r} does not match {schema['pattern']}")
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{path}: too short")
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if number and not schema.get("minimum", value) <= value <= schema.get("maximum", value):
        errors.append(f"{path}: out of range")
    if isinstance(value, list):
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value)):
            errors.append(f"{path}: wrong number of items")
        if schema.get("uniqueItems") and len({json.dumps(v) for v in value}) != len(value):
            errors.append(f"{path}: items repeat")
        for i, v in enumerate(value):
            errors += _validate(schema.get("items", {}), v, root, f"{path}/{i}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for k in schema.get("required", []):
            if k not in value:
                errors.append(f"{path}: missing {k}")
        if not schema.get("minProperties", 0) <= len(value) <= schema.get("maxProperties", len(value)):
            errors.append(f"{path}: wrong number of properties")
        for k, v in value.items():
            if k in props:
                errors += _validate(props[k], v, root, f"{path}/{k}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path}: unknown property {k}")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += _validate(schema["additionalProperties"], v, root, f"{path}/{k}")
    if "oneOf" in schema and sum(not _validate(s, value, root, path) for s in schema["oneOf"]) != 1:
        errors.append(f"{path}: not exactly one of {schema['oneOf']}")
    if "anyOf" in schema and not any(not _validate(s, value, root, path) for s in schema["anyOf"]):
        errors.append(f"{path}: none of {schema['anyOf']}")
    return errors


POLICY_FILES = sorted(
    p
    for base in (ROOT / "policies", ROOT / "examples")
    for p in base.rglob("*.yaml")
    if not p.name.endswith(("_test.yaml", ".schema.yaml"))
)


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    p = tosengine("schema")
    assert p.returncode == 0
    doc: dict[str, Any] = json.loads(p.stdout)
    assert doc == policy_file_schema()
    return doc


@pytest.mark.parametrize("path", POLICY_FILES, ids=[p.name for p in POLICY_FILES])
def test_every_shipped_policy_validates_against_the_schema(schema: dict[str, Any], path: Path) -> None:
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert _validate(schema, yaml.safe_load(path.read_text(encoding="utf-8")), schema) == []


def test_the_rollout_example_validates_and_mistakes_do_not(schema: dict[str, Any]) -> None:
    assert _validate(schema, yaml.safe_load(ROLLOUT), schema) == []
    bad = yaml.safe_load(ROLLOUT.replace("mode: enforce", "mode: live").replace("enabled: false", "enabld: false"))
    errors = _validate(schema, bad, schema)
    assert any("'live' not in ['enforce', 'shadow']" in e for e in errors)
    assert any("unknown property enabld" in e for e in errors)
    two_kinds = {"policy": "p", "clause": "c", "rules": [{"id": "r", "match": "x", "expect": {}}]}
    assert any("not exactly one of" in e for e in _validate(schema, two_kinds, schema))


def test_the_schema_and_the_checker_know_the_same_fields(schema: dict[str, Any]) -> None:
    assert list(schema["properties"]) == list(names(POLICY_FIELDS))
    assert set(schema["$defs"]["rule"]["properties"]) == set(RULE_FIELDS)
    # A field the schema allows is one the checker accepts (it reports no unknown-field for it).
    for field in RULE_FIELDS:
        kind = "sequence: [{a: event.type == 'x'}, {b: event.type == 'y'}]" if field == "within" else "match: x.y"
        text = f"policy: p\nclause: c\nrules:\n  - id: r\n    {kind}\n    {field}: 1\n"
        _, diags = check_sources([Source("p.yaml", text)])
        assert not [d for d in diags if d.code == "unknown-field"], field
