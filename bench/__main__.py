"""python -m bench [--events N] [--seed S]: throughput of tosengine vs raw durable_rules, one run.

Measures, on the default policy pack and the seeded generator's stream:
  raw post()     durable_rules Host.post() of each event's projection to the rulesets its type routes
                 to (projections computed before timing): the C matcher with its Python wrapper, and
                 nothing else -- no validation, no windows, no deadlines, no chaining;
  engine         Engine.process() on JSON lines: parse, validate, match, decide (no audit);
  engine+sqlite  the same, writing the audit log to a fresh SQLite file;
  replay         `tosengine replay --dry-run --format json` as a subprocess (start-up included);
  reference      the plain-Python reference evaluator.
Ratios are events/s divided by raw post() events/s, measured in the same run.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from durable import engine as dr_engine

from tosengine import Engine, read_sources
from tosengine.events import parse_event_line
from tosengine.policy.check import check_policy_set
from tosengine.runtime.engine import event_fields
from tosengine.runtime.matcher import Matcher
from tosengine.runtime.reference import evaluate_reference

ROOT = Path(__file__).resolve().parents[1]


class _QuietHost(dr_engine.Host):  # type: ignore[misc]
    """durable_rules' Host without its two wall-clock timer threads."""

    def _run(self) -> None:
        pass

    def get_action(self, name: str) -> object:
        return lambda c: None


def _generate(n: int, seed: int, path: Path) -> None:
    with path.open("w", encoding="utf-8") as fh:
        subprocess.run([sys.executable, str(ROOT / "examples" / "generate.py"), "--events", str(n),
                        "--accounts", str(max(100, n // 10)), "--days", "30", "--seed", str(seed),
                        "--abuse-rate", "0.01"], stdout=fh, check=True)


def _raw_post(engine: Engine, lines: list[str]) -> float:
    plan = engine.plan
    matcher = Matcher(plan)
    posts: list[tuple[str, dict[str, object]]] = []
    for line in lines:
        ev = parse_event_line(line)
        fields = event_fields(ev)
        for rs in matcher.rulesets_for("event", ev.type):
            posts.append((rs.plan.name, json.loads(rs.project(fields))))
    matcher.close()
    defs = {}
    for rs in plan.rulesets:
        d = copy.deepcopy(rs.definition)
        for rule in d.values():
            rule["run"] = "noop"
        defs[rs.name] = d
    host = _QuietHost()
    host.set_rulesets(defs)
    t0 = time.perf_counter()
    for i, (name, msg) in enumerate(posts):
        msg["id"] = str(i)
        try:
            host.post(name, msg)
        except dr_engine.MessageNotHandledException:
            pass
    return time.perf_counter() - t0


def _engine(lines: list[str], audit: str | None) -> float:
    engine = Engine.from_directory(ROOT / "policies", audit=audit)
    t0 = time.perf_counter()
    for line in lines:
        engine.process(parse_event_line(line))
    engine.close()
    return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--skip-reference", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stream = Path(tmp) / "events.jsonl"
        _generate(args.events, args.seed, stream)
        lines = stream.read_text(encoding="utf-8").splitlines()
        n = len(lines)
        probe = Engine(check_policy_set(read_sources(ROOT / "policies")))
        results: list[tuple[str, float]] = [("raw durable_rules post()", _raw_post(probe, lines))]
        probe.close()
        results.append(("engine (validate+match+decide)", _engine(lines, None)))
        results.append(("engine + SQLite audit", _engine(lines, f"sqlite:///{Path(tmp) / 'bench.db'}")))
        t0 = time.perf_counter()
        with open(os.devnull, "w") as devnull:
            subprocess.run([sys.executable, "-m", "tosengine", "replay", str(stream), "--policies",
                            str(ROOT / "policies"), "--dry-run", "--format", "json"], stdout=devnull,
                           stderr=devnull, check=False)
        results.append(("tosengine replay --dry-run (process)", time.perf_counter() - t0))
        if not args.skip_reference:
            policies = check_policy_set(read_sources(ROOT / "policies"))
            events = [parse_event_line(x) for x in lines]
            t0 = time.perf_counter()
            evaluate_reference(policies, events)
            results.append(("reference evaluator", time.perf_counter() - t0))
    base = n / results[0][1]
    print(f"{n} events, default policy pack, seed {args.seed}, python {sys.version.split()[0]}")
    print(f"{'what':40} {'seconds':>9} {'events/s':>10} {'ratio':>7}")
    for name, secs in results:
        rate = n / secs
        print(f"{name:40} {secs:9.2f} {rate:10.0f} {rate / base:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
