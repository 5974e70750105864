"""durable_rules crashes and hangs are contained: a policy set that would crash or hang it is refused
at load, and a failed reload leaves the running engine on its previous policies."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from tests.support import ev, policy_set
from tests.test_tamper import POLICY as LOGINS
from tosengine import AuditError, Engine, MatcherError, PolicyError
from tosengine.runtime import smoke
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


def _child(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> None:
    """Stand in for durable_rules' smoke test child: a script that behaves as `body` says."""
    script = tmp_path / "child.py"
    script.write_text(body, encoding="utf-8")
    monkeypatch.setattr(smoke, "CHILD", script)


def test_an_engine_opening_a_log_beside_its_smoke_test_still_refuses_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The smoke test runs while the audit log opens; its verdict is still awaited before any ruleset.
    _child(tmp_path, monkeypatch, "import os, signal, sys\nsys.stdin.read()\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    with pytest.raises(MatcherError, match=r"crashed \(SIGSEGV\)"):
        Engine(policy_set(LOGINS), audit=f"sqlite:///{tmp_path / 'a.db'}", smoke_test=30)


def test_a_hanging_smoke_test_beside_the_log_is_stopped_at_its_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _child(tmp_path, monkeypatch, "import time\ntime.sleep(120)\n")  # reads nothing: the spec's feeder waits too
    t0 = time.monotonic()
    with pytest.raises(MatcherError, match="did not finish loading it within 2 s"):
        Engine(policy_set(LOGINS), audit=f"sqlite:///{tmp_path / 'a.db'}", smoke_test=2)
    assert time.monotonic() - t0 < 30


def test_a_log_that_cannot_be_opened_stops_the_smoke_test_under_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "finished"
    _child(tmp_path, monkeypatch, f"import pathlib, time\ntime.sleep(2)\npathlib.Path({str(marker)!r}).touch()\n")
    with pytest.raises(AuditError):
        Engine(policy_set(LOGINS), audit=f"sqlite:///{tmp_path / 'missing' / 'a.db'}", smoke_test=30)
    time.sleep(3)
    assert not marker.exists()  # killed, not left running


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
