"""python -m bench [pack|check|latency|rules|memory|restart|threads|all] [--events N]: tosengine vs raw durable_rules.

Every figure is a ratio to raw durable_rules measured in the same run, on the same compiled rulesets:
  raw post()       durable_rules Host.post() of each event's projection to the rulesets its type routes
                   to (projections and JSON decoding done before timing): the C matcher and its Python
                   wrapper, and nothing else -- no validation, no windows, deadlines or chaining;
  raw post_batch() the same messages, batched per ruleset (1000 at a time);
  process()        parse each JSON line, validate, match, decide: Engine.process() one event at a time;
  process_many()   the same through Engine.process_many() (matched in batches), no audit log, then
                   writing the audit log to a fresh SQLite file, and to PostgreSQL (TOSENGINE_BENCH_PG
                   or TOSENGINE_TEST_DATABASE_URL);
  replay           `tosengine replay --format json` as a subprocess (start-up included), --dry-run and
                   with the audit log on SQLite and PostgreSQL; tosengine's modules are byte-compiled
                   first, as an installed package's are (--from-source: their bytecode removed);
  reference        the plain-Python reference evaluator.
`check` is the Performance II issue's own check: `tosengine replay` of the generator's stream over a
pool of 50,000 accounts (start-up included), against raw post() of a fixed 10-rule ruleset in the same run;
`check --native` adds the native build's replays (built from this checkout first).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from durable import engine as dr_engine
from sqlalchemy import create_engine, text

from bench.common import ROOT, byte_compile, drop_bytecode, generate, native_build, pg_schema
from bench.synthetic import rules_events, rules_pack
from tosengine import Engine, check_sources, read_sources
from tosengine.event_model import parse_event_line
from tosengine.events import parse_record
from tosengine.policy.check import check_policy_set
from tosengine.policy.compile import compile_policy_set
from tosengine.policy.model import CheckedPolicySet
from tosengine.policy.sources import Source
from tosengine.runtime.matcher import Matcher
from tosengine.runtime.reference import evaluate_reference


class _QuietHost(dr_engine.Host):  # type: ignore[misc]
    """durable_rules' Host without its two wall-clock timer threads."""

    def _run(self) -> None:
        pass

    def get_action(self, name: str) -> object:
        return lambda c: None


def _pack() -> CheckedPolicySet:
    return check_policy_set(read_sources(ROOT / "policies"))


def _raw(policies: CheckedPolicySet, lines: list[str], *, batched: bool = True) -> list[float]:
    """Seconds for raw post() and (when `batched`) for post_batch() of the same projected messages."""
    plan = compile_policy_set(policies)
    matcher = Matcher(plan)
    posts: list[tuple[str, dict[str, Any]]] = []
    for line in lines:
        fields = parse_record(line).fields
        for rs in matcher.rulesets_for("event", fields["type"]):
            posts.append((rs.plan.name, json.loads(rs.project(fields))))
    matcher.close()
    defs = {}
    for rp in plan.rulesets:
        d = copy.deepcopy(rp.definition)
        for rule in d.values():
            rule["run"] = "noop"
        defs[rp.name] = d
    out = []
    for batches in (False, True) if batched else (False,):
        host = _QuietHost()
        host.set_rulesets(copy.deepcopy(defs))
        msgs = [(name, {**m, "id": str(i)}) for i, (name, m) in enumerate(posts)]
        t0 = time.perf_counter()
        if not batches:
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
                        host.post_batch(name, batch[i : i + 1000])
        out.append(time.perf_counter() - t0)
    return out


def _engine(policies: CheckedPolicySet, lines: list[str], audit: str | None, *, many: bool = True) -> float:
    """Seconds to parse, validate and process every line: through process_many() (batched), or
    through process() one event at a time."""
    engine = Engine(policies, audit=audit)
    t0 = time.perf_counter()
    if many:
        engine.process_many(lines)
    else:
        for line in lines:
            engine.process(line)
    engine.close()
    return time.perf_counter() - t0


def _pg_url() -> str | None:
    return os.environ.get("TOSENGINE_BENCH_PG") or os.environ.get("TOSENGINE_TEST_DATABASE_URL")


@contextlib.contextmanager
def _pg_schema() -> Iterator[str | None]:
    """A fresh PostgreSQL schema's URL for one measurement (None without a database), dropped after."""
    url = _pg_url()
    if not url:
        yield None
        return
    with pg_schema(url) as schema_url:
        yield schema_url


def _stream(n: int, days: float) -> list[str]:
    """The memory and restart benches' stream: `n` events over `days`, few events per account."""
    return generate(n, seed=7, days=days, accounts=max(100, n // 20), abuse_rate=0.01)


def _replay(stream: Path, *options: str, site: Path | None = None) -> float:
    """Seconds of `tosengine replay` as a subprocess (start-up, policy check and smoke test included);
    with `site`, of the native build unpacked there (bench.common.native_build)."""
    t0 = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tosengine",
            "replay",
            str(stream),
            "--policies",
            str(ROOT / "policies"),
            "--format",
            "json",
            *options,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
        cwd=site,
        env=None if site is None else {**os.environ, "PYTHONPATH": str(site)},
    )
    return time.perf_counter() - t0


def _table(title: str, n: int, rows: list[tuple[str, float]]) -> None:
    base = n / rows[0][1]
    print(f"\n{title}")
    print(f"{'what':42} {'seconds':>9} {'events/s':>10} {'ratio':>7}")
    for name, secs in rows:
        rate = n / secs
        print(f"{name:42} {secs:9.2f} {rate:10.0f} {rate / base:7.2f}")


def _best_of(rounds: int, measures: list[tuple[str, Callable[[], float | None]]]) -> list[tuple[str, float]]:
    """Each measurement's fastest of `rounds` runs, the runs interleaved: on a noisy machine the
    minimum is the figure least disturbed by other load, and interleaving exposes every row to the
    same drift. A measurement that returns None (no PostgreSQL) is left out."""
    best: dict[str, float] = {}
    for _ in range(rounds):
        for name, measure in measures:
            secs = measure()
            if secs is not None:
                best[name] = min(secs, best.get(name, secs))
    return [(name, best[name]) for name, _ in measures if name in best]


def bench_pack(n: int, seed: int, rounds: int) -> None:
    """The default pack on the seeded generator's stream at about 1% abuse."""
    with tempfile.TemporaryDirectory() as tmp:
        stream = Path(tmp) / "events.jsonl"
        lines = generate(n, seed=seed, days=30, accounts=max(100, n // 10), abuse_rate=0.01)
        stream.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        policies = _pack()
        events = [parse_event_line(x) for x in lines]
        sqlite_db = Path(tmp) / "b.db"

        def fresh_sqlite() -> str:
            sqlite_db.unlink(missing_ok=True)
            for extra in ("-wal", "-shm"):
                Path(f"{sqlite_db}{extra}").unlink(missing_ok=True)
            return f"sqlite:///{sqlite_db}"

        def on_pg(run: Callable[[str], float]) -> Callable[[], float | None]:
            def measure() -> float | None:
                with _pg_schema() as pg:
                    return None if pg is None else run(pg)

            return measure

        def reference() -> float:
            t0 = time.perf_counter()
            evaluate_reference(policies, events)
            return time.perf_counter() - t0

        raw: dict[str, float] = {}

        def raw_post(batched: bool) -> Callable[[], float]:
            def measure() -> float:
                if not raw:  # both baselines come from one run; each round measures them again
                    raw["post"], raw["batch"] = _raw(policies, lines)
                return raw.pop("batch" if batched else "post")

            return measure

        rows = _best_of(
            rounds,
            [
                ("raw durable_rules post()", raw_post(False)),
                ("raw durable_rules post_batch()", raw_post(True)),
                ("Engine.process() one by one, no audit", lambda: _engine(policies, lines, None, many=False)),
                ("Engine.process_many(), no audit", lambda: _engine(policies, lines, None)),
                ("Engine.process_many() + SQLite audit", lambda: _engine(policies, lines, fresh_sqlite())),
                ("Engine.process_many() + PostgreSQL audit", on_pg(lambda url: _engine(policies, lines, url))),
                ("tosengine replay --dry-run", lambda: _replay(stream, "--dry-run")),
                ("tosengine replay, SQLite audit", lambda: _replay(stream, "--db", fresh_sqlite())),
                ("tosengine replay, PostgreSQL audit", on_pg(lambda url: _replay(stream, "--db", url))),
                ("reference evaluator", reference),
            ],
        )
    _table(
        f"default pack, {len(lines)} events (generator seed {seed}, 1% abuse), fastest of {rounds} rounds",
        len(lines),
        rows,
    )


def bench_check(n: int, seed: int, rounds: int, native: bool = False) -> None:
    """The issue's check: `tosengine replay` (start-up, policy check and smoke test included) of `n`
    events of the default pack's taxonomy over a pool of 50,000 accounts (100,000 events reach about
    43,000 of them), dry and into a fresh SQLite audit log, against raw post() of a fixed 10-rule
    ruleset (bench/synthetic.py) on as many events; with `native`, the same replays of the native build
    too (built from this checkout first, about a minute and a half)."""
    with tempfile.TemporaryDirectory() as tmp:
        stream = Path(tmp) / "events.jsonl"
        lines = generate(n, seed=seed, days=30, accounts=50_000, abuse_rate=0.01)
        stream.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        fixed, diags = check_sources([Source("bench.yaml", rules_pack(10))])
        assert fixed is not None, diags
        fixed_lines = rules_events(10, len(lines), 0.01)
        db = Path(tmp) / "c.db"

        def fresh_sqlite() -> str:
            for extra in ("", "-wal", "-shm", "-lock"):
                Path(f"{db}{extra}").unlink(missing_ok=True)
            return f"sqlite:///{db}"

        measures: list[tuple[str, Callable[[], float | None]]] = [
            ("raw post(), fixed 10-rule ruleset", lambda: _raw(fixed, fixed_lines, batched=False)[0]),
            ("tosengine replay --dry-run", lambda: _replay(stream, "--dry-run")),
            ("tosengine replay, SQLite audit", lambda: _replay(stream, "--db", fresh_sqlite())),
        ]
        if native:
            site = native_build(Path(tmp) / "native")
            measures += [
                ("native build: replay --dry-run", lambda: _replay(stream, "--dry-run", site=site)),
                ("native build: replay, SQLite audit", lambda: _replay(stream, "--db", fresh_sqlite(), site=site)),
            ]
        rows = _best_of(rounds, measures)
    _table(
        f"the issue's check: default pack, {len(lines)} events over 50,000 accounts (seed {seed}), "
        f"fastest of {rounds} rounds",
        len(lines),
        rows,
    )


def bench_latency(n: int) -> None:
    """p50/p99 of one Engine.process() call, given each event's JSON text (parsing and validation
    included), on the default pack's stream, with and without the SQLite audit log; and, as the floor
    under the second, a raw sqlite3 INSERT of each line and COMMIT in a WAL database, as the log commits."""
    lines = generate(n)
    with tempfile.TemporaryDirectory() as tmp:
        # With the audit log every call commits before it returns: a few thousand calls say enough.
        times = _raw_commits(Path(tmp) / "raw.db", lines[:5000])
        _quantiles("raw sqlite3 INSERT + COMMIT of each line (WAL, synchronous FULL)", times)
        for audit in (None, f"sqlite:///{Path(tmp) / 'l.db'}"):
            engine = Engine(_pack(), audit=audit)
            times = []
            for line in lines if audit is None else lines[:5000]:
                t0 = time.perf_counter_ns()
                engine.process(line)
                times.append(time.perf_counter_ns() - t0)
            engine.close()
            _quantiles(f"Engine.process(), {'SQLite audit log' if audit else 'no audit log'}", times)


def _raw_commits(path: Path, lines: list[str]) -> list[int]:
    """Nanoseconds of each one-row INSERT and COMMIT into a fresh WAL database: the disk's sync, the
    floor under a process() call that returns once its event is durable."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")  # SQLite's default, which the audit log keeps
    db.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    times = []
    for line in lines:
        t0 = time.perf_counter_ns()
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO events (body) VALUES (?)", (line,))
        db.execute("COMMIT")
        times.append(time.perf_counter_ns() - t0)
    db.close()
    return times


def _quantiles(what: str, times: list[int]) -> None:
    q = statistics.quantiles(times, n=100)
    over = sum(t > 1_000_000 for t in times)
    print(
        f"\n{what}, {len(times)} calls: p50 {q[49] / 1000:.1f} us, p99 {q[98] / 1000:.1f} us, "
        f"max {max(times) / 1000:.1f} us, {over} over 1 ms"
    )


def _process_and_die(url: str, lines: list[str], path: Path) -> None:
    """Process `lines` into the log at `url` in a process that then stops without closing its engine (a
    crash: no last checkpoint; the system lets the partition go)."""
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    code = (
        "import os, sys\n"
        "from tosengine import Engine, read_sources\n"
        "from tosengine.policy.check import check_policy_set\n"
        "engine = Engine(check_policy_set(read_sources(sys.argv[2])), audit=sys.argv[1])\n"
        "engine.process_many(open(sys.argv[3], encoding='utf-8').read().splitlines())\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code, url, str(ROOT / "policies"), str(path)], check=True, env=_child_env())


def bench_restart(sizes: tuple[int, ...] = (100_000, 300_000, 1_000_000)) -> None:
    """Opening an Engine on an audit log that holds a history: the cost follows the live state and the
    tail since the last checkpoint, not the length of the history. Every history has the same event
    rate (one event per 30 s of event time), so its live state (the last week's redelivery memory, open
    windows and obligations) is about the same."""
    print("\nopening an Engine on an audit log (SQLite), default pack, one event per 30 s of event time")
    print(f"{'history':>9} {'write s':>8} {'open s':>7} {'state KB':>9} {'crash: tail':>11} {'open s':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            # The history, then 15,000 more events that a crash leaves after the last checkpoint.
            lines = _stream(n + 15_000, days=round((n + 15_000) * 30 / 86400))
            lines, more = lines[:n], lines[n:]
            url = f"sqlite:///{Path(tmp) / f'h{n}.db'}"
            t0 = time.perf_counter()
            with Engine(_pack(), audit=url) as engine:
                engine.process_many(lines)
            wrote = time.perf_counter() - t0
            t0 = time.perf_counter()
            engine = Engine(_pack(), audit=url)
            opened = time.perf_counter() - t0
            size = engine.state_size()
            engine.close()
            # Then a crash: the events since the last checkpoint are the tail the next open replays.
            _process_and_die(url, more, Path(tmp) / "more.jsonl")
            t0 = time.perf_counter()
            again = Engine(_pack(), audit=url)
            opened_crash = time.perf_counter() - t0
            tail = again.resumed_events
            again.close()
            with create_engine(url).connect() as c:
                kb = c.execute(text("SELECT size FROM checkpoints ORDER BY seq DESC LIMIT 1")).scalar_one() / 1024
            print(
                f"{n:>9} {wrote:>8.1f} {opened:>7.2f} {kb:>9.0f} {tail:>11} {opened_crash:>7.2f}   "
                f"(obligations {size['obligations']}, dedupe {size['dedupe']})"
            )


def bench_threads(n: int = 4_000) -> None:
    """Engine.process() with the SQLite audit log, from 1 and from 8 threads (each commits before it
    returns; threads share commits), against process_many() of the same events in the same run."""
    import threading

    lines = _stream(n, days=2)
    print(f"\ndurable returns, SQLite audit log, {n} events (engines opened before timing)")
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(_pack(), audit=f"sqlite:///{Path(tmp) / 'many.db'}")
        t0 = time.perf_counter()
        engine.process_many(lines)
        base = time.perf_counter() - t0
        engine.close()
        print(f"  process_many()            {n / base:8.0f} events/s  1.00")
        for threads in (1, 8):
            engine = Engine(_pack(), audit=f"sqlite:///{Path(tmp) / f't{threads}.db'}")
            chunks = [lines[i::threads] for i in range(threads)]
            workers = [threading.Thread(target=lambda c=c, e=engine: [e.process(x) for x in c]) for c in chunks]
            t0 = time.perf_counter()
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            took = time.perf_counter() - t0
            engine.close()
            print(f"  process(), {threads} thread(s)      {n / took:8.0f} events/s  {base / took:.2f}")


def bench_rules(n: int, rounds: int) -> None:
    """Throughput against the number of rules and the violation rate; load time of each pack."""
    print(f"\nsynthetic pack: rules x violation rate (ratio = engine / raw post(), fastest of {rounds} rounds)")
    print(f"{'rules':>6} {'viol.':>6} {'load s':>7} {'raw ev/s':>9} {'engine ev/s':>11} {'ratio':>6}")
    for rules in (10, 100, 500):
        for rate in (0.001, 0.01, 0.1):
            t0 = time.perf_counter()
            checked, diags = check_sources([Source("bench.yaml", rules_pack(rules))])
            assert checked is not None, diags
            Engine(checked).close()
            load = time.perf_counter() - t0
            lines = rules_events(rules, n, rate)
            # Called right away by _best_of, so the loop variables are the current ones.
            (_, post), (_, eng) = _best_of(
                rounds,
                [
                    ("raw", lambda: _raw(checked, lines, batched=False)[0]),  # noqa: B023
                    ("engine", lambda: _engine(checked, lines, None)),  # noqa: B023
                ],
            )
            print(f"{rules:6} {rate:6.1%} {load:7.2f} {n / post:9.0f} {n / eng:11.0f} {post / eng:6.2f}")


def bench_memory(n: int, spacing_ms: int = 50, dedupe_days: float = 7) -> None:
    """RSS over `n` events with `n` distinct subjects, sampled at each quarter (in a fresh process)."""
    code = (
        "from datetime import timedelta; "
        "from bench.synthetic import distinct_subject_events as d; "
        "from bench.__main__ import _pack, _rss; from tosengine import Engine; "
        f"lines = d({n}, {spacing_ms}); e = Engine(_pack(), dedupe_window=timedelta(days={dedupe_days})); "
        "base = _rss(); marks = []\n"
        "for i, l in enumerate(lines):\n"
        "    e.process(l)\n"
        "    if (i + 1) % (len(lines) // 4) == 0: marks.append(round(_rss() - base))\n"
        "peak = _rss('VmHWM')\n"
        "print(f'{base:.0f}|{marks}|{peak:.0f}|' + str(e.state_size()))"
    )
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_child_env(), check=True)
    out = child.stdout
    base, marks, peak, state = out.strip().split("|", 3)
    span = timedelta(milliseconds=spacing_ms * n)
    print(
        f"\nmemory, {n} events with {n} distinct subjects over {span} of event time, dedupe window "
        f"{dedupe_days} d: RSS after load {base} MB (input lines held: ~{n * 200 / 2**20:.0f} MB); growth at "
        f"each quarter {marks} MB; peak {peak} MB; state at end: {state}"
    )


def _child_env() -> dict[str, str]:
    """The environment of a `python -c` child that imports `bench` and must import the tosengine this
    process imports: started in this process's folder (a native wheel's, when the bench runs from one),
    with the checkout on its path after whatever this process was given."""
    given = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([*([given] if given else []), str(ROOT)])}


def _rss(what: str = "VmRSS") -> float:
    """This process's resident memory in MB now (VmRSS) or at its peak (VmHWM). Not ru_maxrss: Linux
    carries it across exec, so a child started by a big parent would report the parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(f"{what}:"):
                return int(line.split()[1]) / 1024
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def main() -> int:
    # The services have their own options and start their own processes: `python -m bench serve ...` and
    # `python -m bench kafka ...` are `python -m bench.serve ...` and `python -m bench.kafka ...`.
    if len(sys.argv) > 1 and sys.argv[1] in ("serve", "kafka"):
        if sys.argv[1] == "serve":
            from bench import serve

            serve.main(sys.argv[2:])
            return 0
        from bench import kafka

        return kafka.main(sys.argv[2:])
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="also: `python -m bench serve [--events N ...]` and `python -m bench kafka [--events N]` "
        "(the services against in-process process_many and replay; bench/serve.py, bench/kafka.py)",
    )
    p.add_argument(
        "what",
        nargs="?",
        default="pack",
        choices=("pack", "check", "latency", "rules", "memory", "restart", "threads", "all"),
    )
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--rounds", type=int, default=3, help="runs of each pack measurement; the fastest is shown")
    p.add_argument(
        "--from-source",
        action="store_true",
        help="remove tosengine's byte-compiled modules first instead: with PYTHONDONTWRITEBYTECODE set, every "
        "replay then compiles them from source (by default they are byte-compiled, as an installed package's are)",
    )
    p.add_argument(
        "--native",
        action="store_true",
        help="check: also time the native build's replays (the hot path compiled with mypyc), "
        "built from this checkout first",
    )
    args = p.parse_args()
    print(f"tosengine bench, python {sys.version.split()[0]}, {os.cpu_count()} cpus, {time.strftime('%Y-%m-%d')}")
    if args.from_source:
        print(f"tosengine's modules without bytecode: replays may compile them from source ({drop_bytecode()})")
    else:
        print(f"tosengine's modules byte-compiled, as installed ({byte_compile()})")
    if args.what in ("pack", "all"):
        bench_pack(args.events, args.seed, args.rounds)
    if args.what in ("check", "all"):
        bench_check(args.events, args.seed, args.rounds, native=args.native)
    if args.what in ("latency", "all"):
        bench_latency(min(args.events, 50_000))
    if args.what in ("rules", "all"):
        bench_rules(min(args.events, 20_000), args.rounds)
    if args.what in ("threads", "all"):
        bench_threads()
    if args.what in ("restart", "all"):
        bench_restart()
    if args.what in ("memory", "all"):
        n = args.events if args.what == "memory" else 1_000_000
        bench_memory(n)  # 14 hours of event time: every one-day obligation is still open at the end
        bench_memory(n, spacing_ms=2600)  # 30 days: windows, deadlines and redeliveries expire as it runs
    return 0


if __name__ == "__main__":
    sys.exit(main())
