"""durable_rules crashes and hangs are contained: a policy set that would crash or hang it is refused
at load, and a failed reload leaves the running engine on its previous policies."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from tests.support import ev
from tosengine import Engine, MatcherError, PolicyError
from tosengine.runtime.smoke import smoke_test

ROOT = Path(__file__).resolve().parents[1]


def test_the_default_pack_passes_the_load_time_smoke_test() -> None:
    with Engine.from_directory(ROOT / "policies", smoke_test=60) as engine:
        assert len(engine.plan.rulesets) > 0


def test_a_ruleset_that_hangs_durable_rules_is_refused_within_the_timeout() -> None:
    # durable_rules 2.0.28 never returns from creating a ruleset of >= 513 rules (FINDINGS.md section 6).
    definition = {f"r{i}": {"all": [{"m": {"k": f"v{i}"}}]} for i in range(600)}
    t0 = time.monotonic()
    with pytest.raises(MatcherError, match="did not finish"):
        smoke_test({"rulesets": [{"name": "huge", "definition": definition, "probes": []}]}, timeout=5)
    assert time.monotonic() - t0 < 30


def test_a_crash_of_durable_rules_is_refused_not_fatal() -> None:
    # The 1,025th session raises MemoryError and retrying it segfaults (FINDINGS.md section 0, item 1).
    probes = [[{"id": "m", "sid": str(i), "k": "0"}, None] for i in range(1025)]
    probes.append([{"id": "m", "sid": "1024", "k": "0"}, None])
    spec = {"rulesets": [{"name": "cap", "definition": {"r": {"all": [{"m": {"k": "1"}}]}}, "probes": probes}]}
    with pytest.raises(MatcherError, match=r"crashed \(SIGSEGV\)"):
        smoke_test(spec, timeout=60)


def test_a_failed_reload_keeps_the_previous_policies(tmp_path: Path) -> None:
    d = tmp_path / "policies"
    shutil.copytree(ROOT / "examples" / "quickstart" / "policies", d)
    login = ev("x1", "account.login", "account:1", origin="evil.example")
    with Engine.from_directory(d, smoke_test=60) as engine:
        assert [v.rule for v in engine.process(login)] == ["no-password-collection/offsite-login"]
        broken = tmp_path / "broken"
        broken.mkdir()
        (broken / "p.yaml").write_text("policy: p\nclause: c\nrules:\n  - id: r\n    match: nope(\n", encoding="utf-8")
        with pytest.raises(PolicyError):
            engine.reload(broken)
        again = {**login, "id": "x2"}
        assert [v.rule for v in engine.process(again)] == ["no-password-collection/offsite-login"]
        (d / "no-password-collection.yaml").write_text(
            (d / "no-password-collection.yaml").read_text(encoding="utf-8").replace("offsite-login", "offsite"),
            encoding="utf-8",
        )
        engine.reload(d)
        assert [v.rule for v in engine.process({**login, "id": "x3"})] == ["no-password-collection/offsite"]
