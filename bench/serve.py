"""Load test of `tosengine serve`: events/s and latency over HTTP, as ratios to in-process process_many.

    python -m bench serve --events 20000 --concurrency 16 --batch 100

One run measures, on the same generated stream (examples/generate.py, the default pack, about 1%
abuse) and a fresh SQLite audit log each time: `Engine.process_many` in process (the baseline) and
`Engine.process` one event at a time (its latency), then `tosengine serve` in a subprocess, loaded by
`--concurrency` keep-alive connections in structured, binary and batch mode. Every request must be
answered 202 and every event be in the audit log afterwards, or the run fails: a number is only
reported for load that was actually judged and made durable. Latency is per request (a batch is one).

The client is a minimal HTTP/1.1 writer on asyncio (requests encoded before timing), so it takes as
little of the machine as it can from the server it measures; both share the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import create_engine, text

from bench.common import ROOT, generate
from tosengine import Engine
from tosengine.policy.check import check_policy_set
from tosengine.policy.sources import read_schemas, read_sources

POLICIES = ROOT / "policies"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def in_process(lines: list[str], db: str, *, many: bool) -> tuple[float, list[float]]:
    """Seconds to process every line in process (process_many, or process one at a time with each
    call's latency), into a fresh SQLite audit log."""
    policies = check_policy_set(read_sources(POLICIES), read_schemas(POLICIES))
    latencies: list[float] = []
    with Engine(policies, audit=db) as engine:
        t0 = time.perf_counter()
        if many:
            engine.process_many(lines)
        else:
            for line in lines:
                t = time.perf_counter()
                engine.process(line)
                latencies.append(time.perf_counter() - t)
        seconds = time.perf_counter() - t0
    return seconds, latencies


def _request(path: str, headers: dict[str, str], body: bytes) -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"POST {path} HTTP/1.1\r\nhost: bench\r\ncontent-length: {len(body)}\r\n{head}\r\n".encode() + body


def _pct(value: str) -> str:
    return "".join(c if " " < c < "\x7f" and c not in '"%' else quote(c, safe="") for c in value)


def structured(lines: list[str], _batch: int) -> list[tuple[bytes, int]]:
    """One request per event, in structured mode; (request, events in it)."""
    return [(_request("/events", {"content-type": "application/cloudevents+json"}, x.encode()), 1) for x in lines]


def binary(lines: list[str], _batch: int) -> list[tuple[bytes, int]]:
    """One request per event, in binary mode."""
    out = []
    for line in lines:
        event = json.loads(line)
        headers = {f"ce-{k}": _pct(str(v)) for k, v in event.items() if k != "data"}
        headers["content-type"] = "application/json"
        out.append((_request("/events", headers, json.dumps(event.get("data", {})).encode()), 1))
    return out


def batched(lines: list[str], batch: int) -> list[tuple[bytes, int]]:
    """Requests of `batch` events each, in batch mode."""
    out = []
    for i in range(0, len(lines), batch):
        part = lines[i : i + batch]
        body = ("[" + ",".join(part) + "]").encode()
        out.append((_request("/events", {"content-type": "application/cloudevents-batch+json"}, body), len(part)))
    return out


async def _connection(port: int, requests: list[tuple[bytes, int]], latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for request, _ in requests:
        t0 = time.perf_counter()
        writer.write(request)
        status = int((await reader.readline()).split()[1])
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await reader.readexactly(length)
        latencies.append(time.perf_counter() - t0)
        if status != 202:
            raise RuntimeError(f"answered {status}: {body[:300]!r}")
    writer.close()
    await writer.wait_closed()


async def _load(port: int, requests: list[tuple[bytes, int]], concurrency: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    t0 = time.perf_counter()
    await asyncio.gather(*(_connection(port, requests[k::concurrency], latencies) for k in range(concurrency)))
    return time.perf_counter() - t0, latencies


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def over_http(
    lines: list[str], encode: Callable[[list[str], int], list[tuple[bytes, int]]], db: str, args: argparse.Namespace
) -> tuple[float, list[float]]:
    """Seconds to have every event answered 202 by a fresh `tosengine serve`, and each request's latency."""
    port = _free_port()
    requests = encode(lines, args.batch)
    command = [sys.executable, "-m", "tosengine", "serve", "--policies", str(POLICIES), "--db", db]
    pending = max(20_000, args.concurrency * args.batch)
    server = subprocess.Popen(
        [*command, "--port", str(port), "--max-pending", str(pending)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ},
    )
    try:
        _wait_ready(port, server)
        seconds, latencies = asyncio.run(_load(port, requests, args.concurrency))
    finally:
        server.send_signal(signal.SIGTERM)
        if server.wait(120) != 0:
            raise RuntimeError("tosengine serve did not exit 0 after SIGTERM")
    engine = create_engine(db)
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT count(*) FROM events")).scalar()
    engine.dispose()
    if stored != len(lines):
        raise RuntimeError(f"{stored} events in the audit log, {len(lines)} answered 202")
    return seconds, latencies


def _wait_ready(port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("tosengine serve exited while starting")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /readyz HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError("tosengine serve was not ready within 120 s")


def main(argv: list[str] | None = None) -> None:
    """Run the load test and print the table."""
    p = argparse.ArgumentParser(prog="python -m bench serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=20_000, help="events in the stream (about)")
    p.add_argument("--concurrency", type=int, default=16, help="client connections at once")
    p.add_argument("--batch", type=int, default=100, help="events per request in batch mode")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    lines = generate(args.events, seed=args.seed, days=30, accounts=max(100, args.events // 10), abuse_rate=0.01)
    n = len(lines)
    with tempfile.TemporaryDirectory() as tmp:
        count = iter(range(1_000_000))

        def fresh() -> str:
            return f"sqlite:///{Path(tmp) / f'bench-{next(count)}.db'}"

        base, _ = in_process(lines, fresh(), many=True)
        one_secs, one_lat = in_process(lines, fresh(), many=False)
        rows = [
            ("Engine.process_many(), SQLite, in process", base, n, []),
            ("Engine.process() one by one, in process", one_secs, n, one_lat),
        ]
        for name, encode in (("structured", structured), ("binary", binary), ("batch", batched)):
            secs, lat = over_http(lines, encode, fresh(), args)
            label = f"serve {name}" + (f" ({args.batch}/request)" if name == "batch" else " (1/request)")
            rows.append((label, secs, n, lat))
    print(
        f"\ntosengine serve: {n} events (default pack, generator seed {args.seed}, 1% abuse), SQLite audit, "
        f"{args.concurrency} connections, {os.cpu_count()} CPUs"
    )
    print(f"{'what':46} {'seconds':>8} {'events/s':>9} {'ratio':>6} {'p50 ms':>8} {'p99 ms':>8}")
    for name, secs, count_, lat in rows:
        rate = count_ / secs
        p50 = f"{1000 * _percentile(lat, 0.50):8.2f}" if lat else f"{'':8}"
        p99 = f"{1000 * _percentile(lat, 0.99):8.2f}" if lat else f"{'':8}"
        print(f"{name:46} {secs:8.2f} {rate:9.0f} {rate / (n / base):6.2f} {p50} {p99}")
    print("(ratio: events/s over those of Engine.process_many() in process; latency per request)")


if __name__ == "__main__":
    main()
