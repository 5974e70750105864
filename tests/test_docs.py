"""The README and docs/ stay true: their policies check, and the quickstart prints what is shown."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tosengine import check_sources
from tosengine.policy.sources import Source

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _blocks(path: Path, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```$", path.read_text(encoding="utf-8"), flags=re.S | re.M)


POLICIES = [(p.name, i, b) for p in DOCS for i, b in enumerate(_blocks(p, "yaml")) if b.startswith("policy:")]


@pytest.mark.parametrize("name,index,text", POLICIES, ids=[f"{n}-{i}" for n, i, _ in POLICIES])
def test_every_policy_in_the_docs_checks(name: str, index: int, text: str) -> None:
    checked, diags = check_sources([Source(f"{name}-{index}.yaml", text)])
    assert checked is not None, "\n".join(d.render() for d in diags)


def test_readme_quickstart_prints_what_the_readme_shows() -> None:
    (shown,) = _blocks(ROOT / "README.md", "text")
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "tosengine",
            "replay",
            "examples/quickstart/events.jsonl",
            "--policies",
            "examples/quickstart/policies",
            "--dry-run",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout == shown


def test_readme_quickstart_policy_is_the_file_in_examples() -> None:
    shown = next(b for b in _blocks(ROOT / "README.md", "yaml") if "no-password-collection" in b)
    assert shown == (ROOT / "examples/quickstart/policies/no-password-collection.yaml").read_text(encoding="utf-8")


def test_readme_python_example_runs(tmp_path: Path) -> None:
    (code,) = _blocks(ROOT / "README.md", "python")
    code = code.replace('"examples/quickstart/policies"', repr(str(ROOT / "examples/quickstart/policies")))
    code = code.replace("sqlite:///tosengine.db", f"sqlite:///{tmp_path / 'r.db'}")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == [
        "no-password-collection/offsite-login",
        "account:5",
        "account:5",
        "entered",
        "credentials",
        "on",
        "evil.example",
    ]


def test_cli_help_lists_every_command() -> None:
    from tosengine.cli import NAMES, command

    p = subprocess.run([sys.executable, "-m", "tosengine", "--help"], capture_output=True, text=True)
    for name in NAMES:  # each with its help line, though commands load their modules only when they run
        assert re.search(rf"^    {name} +{re.escape(command(name).help[:30])}", p.stdout, re.M), name


def test_commands_load_only_the_layers_they_use(tmp_path: Path) -> None:
    # Start-up is most of a short run: a policy author's check, test or dry replay does not pay for
    # SQLAlchemy and Alembic (docs/performance.md); a replay into a log does, but writes through Core
    # tables, without SQLAlchemy's ORM (about 0.1 s) or the PostgreSQL dialect. None of them builds the
    # public pydantic model Event, so none loads pydantic (about 45 ms), nor the parts of pydantic-core
    # besides its JSON parser and encoder (about 20 ms; tosengine/_json.py).
    stream = tmp_path / "e.jsonl"
    stream.write_text((ROOT / "examples" / "seed-cases.jsonl").read_text(encoding="utf-8")[:20000].rsplit("\n", 1)[0])
    code = (
        "import sys\nfrom tosengine.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "layers = ('sqlalchemy', 'sqlalchemy.orm', 'sqlalchemy.dialects.postgresql', 'alembic', 'rich', 'pydantic',\n"
        "          'pydantic_core.core_schema')\n"
        "print(code, sorted(m for m in layers if m in sys.modules))\n"
    )
    policies = str(ROOT / "policies")
    replay = ["replay", str(stream), "--policies", policies, "--format", "json"]
    log = ["--db", f"sqlite:///{tmp_path / 'a.db'}"]
    runs = {"dry": [*replay, "--dry-run"], "check": ["check", policies], "log": replay + log, "reopen": replay + log}
    seen = {}
    for name, argv in runs.items():
        p = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=tmp_path)
        seen[name] = p.stdout.splitlines()[-1]
    assert seen["dry"] == "0 []"
    assert seen["check"] == "0 []"
    assert seen["log"] == "0 ['sqlalchemy']"  # a new SQLite log is created without Alembic too
    assert seen["reopen"] == "0 ['sqlalchemy']"  # one at the schema's head is opened without Alembic


@pytest.mark.parametrize("first", ["tosengine.events", "pydantic"])
def test_the_json_parser_loaded_alone_is_the_one_pydantic_uses(first: str) -> None:
    # tosengine/_json.py loads pydantic-core's compiled module without the package; pydantic, loaded
    # before or after it, must find and use that one module (a PyO3 module cannot be loaded twice).
    code = (
        f"import {first}\n"
        "import tosengine.events, tosengine._json, pydantic, pydantic_core\n"
        "from tosengine.event_model import Event, validate_event\n"
        "assert tosengine._json.from_json is pydantic_core.from_json\n"
        "assert tosengine._json.to_json is pydantic_core.to_json\n"
        "e = validate_event({'id': '1', 'type': 'a.b', 'time': '2026-01-01T00:00:00Z', 'subject': 'account:1'})\n"
        "print(isinstance(e, Event), tosengine._json.to_json({'id': e.id}).decode())\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == 'True {"id":"1"}'


def test_documented_diagnostic_codes_are_the_real_ones() -> None:
    from tosengine.policy.diagnostics import CODES

    doc = (ROOT / "docs" / "policy-language.md").read_text(encoding="utf-8")
    table = doc.split("## Diagnostics")[1]
    documented = set(re.findall(r"`([a-z-]+)`", table.split("|---|---|")[1]))
    assert documented == set(CODES)


def test_events_doc_shows_the_schemas_check_uses() -> None:
    import json

    import yaml

    schema = yaml.safe_load((ROOT / "policies" / "events.schema.yaml").read_text(encoding="utf-8"))["events"]
    doc = (ROOT / "docs" / "events.md").read_text(encoding="utf-8")
    shown = {t: json.loads(b) for t, b in re.findall(r"^## `([a-z_.]+)`\n\n```json\n(.*?)^```$", doc, re.S | re.M)}
    assert shown == {t: d["data"] for t, d in schema.items()}


def test_check_reports_a_field_no_declared_event_has(tmp_path: Path) -> None:
    import shutil

    d = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", d)
    p = d / "unauthorized-data-collection.yaml"
    p.write_text(
        p.read_text(encoding="utf-8").replace("event.data.sdk not in", "event.data.skd not in"), encoding="utf-8"
    )
    out = subprocess.run([sys.executable, "-m", "tosengine", "check", str(d)], capture_output=True, text=True)
    assert out.returncode == 1
    assert "error[unknown-field]: no developer.data_access event has `event.data.skd`" in out.stdout
    assert "did you mean `sdk`?" in out.stdout


def test_the_policy_test_example_in_the_docs_passes(tmp_path: Path) -> None:
    import shutil

    (block,) = [b for b in _blocks(ROOT / "docs" / "policy-language.md", "yaml") if b.startswith("tests:")]
    d = tmp_path / "policies"
    shutil.copytree(ROOT / "examples" / "quickstart" / "policies", d)
    (d / "no-password-collection_test.yaml").write_text(block, encoding="utf-8")
    p = subprocess.run(
        [sys.executable, "-m", "tosengine", "test", str(d), "--coverage"], capture_output=True, text=True
    )
    assert p.returncode == 0, p.stdout
    assert "2 passed, 0 failed" in p.stdout and "coverage: 2/2" in p.stdout
