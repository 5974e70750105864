"""python -m bench [pack|latency|rules|memory|all] [--events N]: tosengine against raw durable_rules.

Every figure is a ratio to raw durable_rules measured in the same run, on the same compiled rulesets:
  raw post()       durable_rules Host.post() of each event's projection to the rulesets its type routes
                   to (projections and JSON decoding done before timing): the C matcher and its Python
                   wrapper, and nothing else -- no validation, no windows, deadlines or chaining;
  raw post_batch() the same messages, batched per ruleset (1000 at a time);
  engine           parse each JSON line, validate, match, decide (Engine.process), no audit;
  engine+sqlite    the same, writing the audit log to a fresh SQLite file;
  engine+pg        the same on PostgreSQL (TOSENGINE_BENCH_PG or TOSENGINE_TEST_DATABASE_URL);
  replay           `tosengine replay --dry-run --format json` as a subprocess (start-up included);
  reference        the plain-Python reference evaluator.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from durable import engine as dr_engine
from sqlalchemy import create_engine, text

from bench.synthetic import rules_events, rules_pack
from tosengine import Engine, check_sources, read_sources
from tosengine.events import parse_event_line
from tosengine.policy.check import check_policy_set
from tosengine.policy.model import CheckedPolicySet
from tosengine.policy.sources import Source
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


def _pack() -> CheckedPolicySet:
    return check_policy_set(read_sources(ROOT / "policies"))


def _raw(policies: CheckedPolicySet, lines: list[str]) -> tuple[float, float]:
    """Seconds for raw post() and for post_batch() of the same projected messages."""
    probe = Engine(policies)
    plan = probe.plan
    matcher = Matcher(plan)
    posts: list[tuple[str, dict[str, Any]]] = []
    for line in lines:
        ev = parse_event_line(line)
        fields = event_fields(ev)
        for rs in matcher.rulesets_for("event", ev.type):
            posts.append((rs.plan.name, json.loads(rs.project(fields))))
    matcher.close()
    probe.close()
    defs = {}
    for rs in plan.rulesets:
        d = copy.deepcopy(rs.definition)
        for rule in d.values():
            rule["run"] = "noop"
        defs[rs.name] = d
    out = []
    for batched in (False, True):
        host = _QuietHost()
        host.set_rulesets(copy.deepcopy(defs))
        msgs = [(name, {**m, "id": str(i)}) for i, (name, m) in enumerate(posts)]
        t0 = time.perf_counter()
        if not batched:
            for name, msg in msgs:
                with contextlib.suppress(dr_engine.MessageNotHandledException):  # an event no rule matches
                    host.post(name, msg)
        else:
            by_rs: dict[str, list[dict[str, Any]]] = {}
            for name, msg in msgs:
                by_rs.setdefault(name, []).append(msg)
            for name, batch in by_rs.items():
                for i in range(0, len(batch), 1000):
                    with contextlib.suppress(dr_engine.MessageNotHandledException):
                        host.post_batch(name, batch[i:i + 1000])
        out.append(time.perf_counter() - t0)
    return out[0], out[1]


def _engine(policies: CheckedPolicySet, lines: list[str], audit: str | None) -> float:
    engine = Engine(policies, audit=audit)
    t0 = time.perf_counter()
    for line in lines:
        engine.process(parse_event_line(line))
    engine.close()
    return time.perf_counter() - t0


def _pg_url() -> str | None:
    return os.environ.get("TOSENGINE_BENCH_PG") or os.environ.get("TOSENGINE_TEST_DATABASE_URL")


def _with_pg_schema(policies: CheckedPolicySet, lines: list[str]) -> float | None:
    url = _pg_url()
    if not url:
        return None
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url)
    with admin.begin() as c:
        c.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        sep = "&" if "?" in url else "?"
        return _engine(policies, lines, f"{url}{sep}options=-csearch_path%3D{schema}")
    finally:
        with admin.begin() as c:
            c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def _table(title: str, n: int, rows: list[tuple[str, float]]) -> None:
    base = n / rows[0][1]
    print(f"\n{title}")
    print(f"{'what':42} {'seconds':>9} {'events/s':>10} {'ratio':>7}")
    for name, secs in rows:
        rate = n / secs
        print(f"{name:42} {secs:9.2f} {rate:10.0f} {rate / base:7.2f}")


def bench_pack(n: int, seed: int) -> None:
    """The default pack on the seeded generator's stream at about 1% abuse."""
    with tempfile.TemporaryDirectory() as tmp:
        stream = Path(tmp) / "events.jsonl"
        with stream.open("w", encoding="utf-8") as fh:
            subprocess.run([sys.executable, str(ROOT / "examples" / "generate.py"), "--events", str(n),
                            "--accounts", str(max(100, n // 10)), "--days", "30", "--seed", str(seed),
                            "--abuse-rate", "0.01"], stdout=fh, check=True)
        lines = stream.read_text(encoding="utf-8").splitlines()
        policies = _pack()
        post, batch = _raw(policies, lines)
        rows = [("raw durable_rules post()", post), ("raw durable_rules post_batch()", batch),
                ("engine (parse+validate+match+decide)", _engine(policies, lines, None)),
                ("engine + SQLite audit", _engine(policies, lines, f"sqlite:///{Path(tmp) / 'b.db'}"))]
        pg = _with_pg_schema(policies, lines)
        if pg is not None:
            rows.append(("engine + PostgreSQL audit", pg))
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "tosengine", "replay", str(stream), "--policies", str(ROOT / "policies"),
                        "--dry-run", "--format", "json"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=False)
        rows.append(("tosengine replay --dry-run (process)", time.perf_counter() - t0))
        events = [parse_event_line(x) for x in lines]
        t0 = time.perf_counter()
        evaluate_reference(policies, events)
        rows.append(("reference evaluator", time.perf_counter() - t0))
    _table(f"default pack, {len(lines)} events (generator seed {seed}, 1% abuse)", len(lines), rows)


def bench_latency(n: int) -> None:
    """p50/p99 of one Engine.process() call on the default pack's stream."""
    lines = subprocess.run([sys.executable, str(ROOT / "examples" / "generate.py"), "--events", str(n)],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    engine = Engine(_pack())
    events = [parse_event_line(x) for x in lines]
    times = []
    for ev in events:
        t0 = time.perf_counter_ns()
        engine.process(ev)
        times.append(time.perf_counter_ns() - t0)
    engine.close()
    q = statistics.quantiles(times, n=100)
    print(f"\nEngine.process() latency over {len(times)} events: p50 {q[49] / 1000:.1f} us, "
          f"p99 {q[98] / 1000:.1f} us, max {max(times) / 1000:.1f} us")


def bench_rules(n: int) -> None:
    """Throughput against the number of rules and the violation rate; load time of each pack."""
    print("\nsynthetic pack: rules x violation rate (ratio = engine / raw post(), same run)")
    print(f"{'rules':>6} {'viol.':>6} {'load s':>7} {'raw ev/s':>9} {'engine ev/s':>11} {'ratio':>6}")
    for rules in (10, 100, 500):
        for rate in (0.001, 0.01, 0.1):
            t0 = time.perf_counter()
            checked, diags = check_sources([Source("bench.yaml", rules_pack(rules))])
            assert checked is not None, diags
            Engine(checked).close()
            load = time.perf_counter() - t0
            lines = rules_events(rules, n, rate)
            post, _ = _raw(checked, lines)
            eng = _engine(checked, lines, None)
            print(f"{rules:6} {rate:6.1%} {load:7.2f} {n / post:9.0f} {n / eng:11.0f} {post / eng:6.2f}")


def bench_memory(n: int, spacing_ms: int = 50, dedupe_days: float = 7) -> None:
    """RSS over `n` events with `n` distinct subjects, sampled at each quarter (in a fresh process)."""
    code = (
        "import resource, sys; from datetime import timedelta; "
        "from bench.synthetic import distinct_subject_events as d; "
        "from bench.__main__ import _pack, _rss; from tosengine import Engine; "
        "from tosengine.events import parse_event_line as p; "
        f"lines = d({n}, {spacing_ms}); e = Engine(_pack(), dedupe_window=timedelta(days={dedupe_days})); "
        "base = _rss(); marks = []\n"
        "for i, l in enumerate(lines):\n"
        "    e.process(p(l))\n"
        "    if (i + 1) % (len(lines) // 4) == 0: marks.append(round(_rss() - base))\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "print(f'{base:.0f}|{marks}|{peak:.0f}|' + str(e.state_size()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    base, marks, peak, state = out.strip().split("|", 3)
    span = timedelta(milliseconds=spacing_ms * n)
    print(f"\nmemory, {n} events with {n} distinct subjects over {span} of event time, dedupe window "
          f"{dedupe_days} d: RSS after load {base} MB (input lines held: ~{n * 200 / 2**20:.0f} MB); growth at "
          f"each quarter {marks} MB; peak {peak} MB; state at end: {state}")


def _rss() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", nargs="?", default="pack", choices=("pack", "latency", "rules", "memory", "all"))
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    print(f"tosengine bench, python {sys.version.split()[0]}, {os.cpu_count()} cpus, {time.strftime('%Y-%m-%d')}")
    if args.what in ("pack", "all"):
        bench_pack(args.events, args.seed)
    if args.what in ("latency", "all"):
        bench_latency(min(args.events, 50_000))
    if args.what in ("rules", "all"):
        bench_rules(min(args.events, 20_000))
    if args.what in ("memory", "all"):
        n = args.events if args.what == "memory" else 1_000_000
        bench_memory(n)  # 14 hours of event time: every one-day obligation is still open at the end
        bench_memory(n, spacing_ms=2600, dedupe_days=1)  # 30 days: windows and deadlines expire as it runs
    return 0


if __name__ == "__main__":
    sys.exit(main())
