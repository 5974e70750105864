"""`tosengine serve` as users meet it: the real command in a subprocess (uvicorn on 127.0.0.1, a free
port), an HTTP client (httpx), the audit log read back from the database.

Each CloudEvents mode gives the violations of a dry-run replay; every status code; the CloudEvents
conformance data; metrics, health and JSON logs; reload (refused when broken, under load, on SIGHUP);
draining on SIGTERM; the clock ticker; a SIGKILL under load and a restart (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.support import verify
from tests.test_cloudevents import conformance_batches, conformance_events

ROOT = Path(__file__).resolve().parents[1]
POLICIES = ROOT / "policies"
QUICKSTART = ROOT / "examples" / "quickstart" / "policies"
SEED = ROOT / "examples" / "seed-cases.jsonl"
STRUCTURED = {"content-type": "application/cloudevents+json"}
BATCH = {"content-type": "application/cloudevents-batch+json"}
TOKEN, ADMIN = "ingest-secret", "admin-secret"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`tosengine serve` in a subprocess, with a client; its JSON log lines are kept in a file."""

    def __init__(
        self, tmp: Path, *, policies: Path = POLICIES, db: str | None = None, args: Sequence[str] = (), **env: str
    ) -> None:
        self.port = _free_port()
        self.db = db if db is not None else f"sqlite:///{tmp / f'audit-{self.port}.db'}"
        self.log = tmp / f"serve-{self.port}.log"
        self.policies = policies
        self.token = env.get("TOSENGINE_INGEST_TOKEN")
        command = [sys.executable, "-m", "tosengine", "serve", "--policies", str(policies), "--db", self.db]
        self.command = [*command, "--port", str(self.port), *args]
        self.env = {**os.environ, **env}
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, ready: bool = True) -> Server:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=log, env=self.env)
        self.wait("/readyz" if ready else "/healthz")
        return self

    def wait(self, path: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
            try:
                if self.client.get(path).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        pytest.fail(f"{path} not 200 within {timeout} s:\n{self.log.read_text()}")

    def post(self, body: Any, headers: dict[str, str] = STRUCTURED, path: str = "/events") -> httpx.Response:
        auth = {"authorization": f"Bearer {self.token}"} if self.token else {}
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.client.post(path, content=content, headers={**headers, **auth})

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def metric(self, name: str) -> float:
        for line in self.client.get("/metrics").text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.client.close()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Make servers that are killed when the test ends, whatever happened."""
    made: list[Server] = []

    def make(**options: Any) -> Server:
        made.append(Server(tmp_path, **options))
        return made[-1]

    yield make
    for s in made:
        s.close()


@pytest.fixture(scope="module")
def main(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The quickstart's policy (a login off facebook.com is a violation), with both tokens set."""
    server = Server(
        tmp_path_factory.mktemp("main"), policies=QUICKSTART, TOSENGINE_INGEST_TOKEN=TOKEN, TOSENGINE_ADMIN_TOKEN=ADMIN
    )
    server.start()
    yield server
    server.close()


def until(holds: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait for `holds()` (polled), failing the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not holds():
        if time.monotonic() > deadline:
            pytest.fail(f"still not so after {timeout} s")
        time.sleep(0.05)


def rows(url: str, sql: str, **params: Any) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params))
    finally:
        engine.dispose()


def seed() -> list[dict[str, Any]]:
    return [json.loads(line) for line in SEED.read_text().splitlines()]


def _pct(value: str) -> str:
    """A header value as the CloudEvents HTTP binding percent-encodes it."""
    return "".join(c if " " < c < "\x7f" and c not in '"%' else quote(c, safe="") for c in value)


def binary(event: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    """An event in binary mode: its attributes as ce-* headers, its data as a JSON body."""
    headers = {f"ce-{k}": _pct(v if isinstance(v, str) else json.dumps(v)) for k, v in event.items() if k != "data"}
    if "data" not in event:
        return headers, b""
    return {**headers, "content-type": "application/json"}, json.dumps(event["data"]).encode()


def violation_ids(response: httpx.Response) -> list[str]:
    body = response.json()
    return [v["id"] for e in body.get("events", [body]) for v in e.get("violations", [])]


# ---------------------------------------------------------------- the three modes equal a dry run


@pytest.fixture(scope="module")
def dry_run() -> tuple[set[str], set[str]]:
    """The violation ids and repeat ids of `tosengine replay --dry-run` of the seed stream."""
    out = subprocess.run(
        [sys.executable, "-m", "tosengine", "replay", str(SEED), "--dry-run", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    records = [json.loads(line) for line in out.stdout.splitlines()]
    return {r["id"] for r in records if "repeat_of" not in r}, {r["id"] for r in records if "repeat_of" in r}


@pytest.mark.parametrize("mode", ["structured", "binary", "batch"])
def test_each_mode_records_the_violations_of_a_dry_run(
    mode: str, dry_run: tuple[set[str], set[str]], servers: Callable[..., Server]
) -> None:
    server = servers().start()
    events = seed()
    answered: list[str] = []
    if mode == "batch":
        for i in range(0, len(events), 500):
            r = server.post(events[i : i + 500], BATCH)
            assert r.status_code == 202, r.text
            assert all(e["status"] == "accepted" for e in r.json()["events"])
            answered += violation_ids(r)
    else:
        for event in events:
            r = (
                server.post(event)
                if mode == "structured"
                else server.client.post("/", content=binary(event)[1], headers=binary(event)[0])
            )
            assert r.status_code == 202, r.text
            answered += violation_ids(r)
    assert server.stop() == 0
    violations, repeats = dry_run
    assert {r[0] for r in rows(server.db, "SELECT id FROM violations")} == violations
    assert {r[0] for r in rows(server.db, "SELECT id FROM repeats")} == repeats
    assert set(answered) == violations and len(answered) == len(violations)  # each answered once, when durable
    assert len(violations) > 30
    assert verify(server.db).ok


# ---------------------------------------------------------------- the modes, one request at a time


def test_structured_mode_answers_with_the_violations_once_durable(main: Server) -> None:
    event = {
        "id": "st-1",
        "source": "svc/login",
        "type": "account.login",
        "time": "2026-03-02T10:00:00Z",
        "subject": "account:st1",
        "data": {"origin": "evil.example"},
    }
    r = main.post(event)
    assert r.status_code == 202
    body = r.json()
    assert (body["status"], body["id"], body["source"]) == ("accepted", "st-1", "svc/login")
    assert [v["rule"] for v in body["violations"]] == ["no-password-collection/offsite-login"]
    assert body["ruleset"] == r.headers["x-tosengine-ruleset"] == body["violations"][0]["ruleset"]
    stored = rows(main.db, "SELECT id, rule FROM violations WHERE id = :id", id=body["violations"][0]["id"])
    assert [tuple(s) for s in stored] == [(body["violations"][0]["id"], "no-password-collection/offsite-login")]
    again = main.post(event)  # a redelivery: not judged again
    assert (again.status_code, again.json()["status"]) == (202, "duplicate")
    plain = main.post({**event, "id": "st-2"}, {"content-type": "application/json"})  # plain JSON is structured
    assert plain.status_code == 202 and plain.json()["status"] == "accepted"


def test_binary_mode_reads_percent_encoded_headers(main: Server) -> None:
    headers, body = binary(
        {
            "id": "bin-1",
            "type": "account.login",
            "time": "2026-03-02T10:01:00Z",
            "subject": "account:é 1",
            "specversion": "1.0",
            "region": 'eu "west"',
            "data": {"origin": "evil.example"},
        }
    )
    assert headers["ce-subject"] == "account:%C3%A9%201"
    r = main.post(body, headers)
    assert r.status_code == 202 and r.json()["violations"][0]["subject"] == "account:é 1"
    (stored,) = rows(main.db, "SELECT subject, body FROM events WHERE event_id = 'bin-1'")
    assert stored[0] == "account:é 1" and json.loads(stored[1])["region"] == 'eu "west"'
    text_event = {"ce-id": "bin-2", "ce-type": "note.text", "ce-time": "2026-03-02T10:02:00Z", "ce-subject": "a:1"}
    # A text body is text data (its content type says so); a binary body is data_base64: both accepted,
    # stored as sent. JSON that is not an object is refused naming data, into the dead letter.
    r = main.post(b"hello", {**text_event, "content-type": "text/plain"})
    assert r.status_code == 202, r.text
    r = main.post(b"\x00\xff", {**text_event, "ce-id": "bin-4", "content-type": "application/octet-stream"})
    assert r.status_code == 202, r.text
    stored = dict(rows(main.db, "SELECT event_id, body FROM events WHERE event_id IN ('bin-2', 'bin-4')"))
    assert json.loads(stored["bin-2"])["data"] == "hello"
    assert json.loads(stored["bin-4"])["data_base64"] == "AP8="
    r = main.post(b"[1, 2]", {**text_event, "ce-id": "bin-5", "content-type": "application/json"})
    assert (r.status_code, r.json()["field"]) == (400, "data")
    dead = rows(main.db, "SELECT field FROM rejected_events WHERE origin = 'http:binary' ORDER BY seq")
    assert [d[0] for d in dead][-1:] == ["data"]
    bad = main.post(b"{}", {**text_event, "ce-id": "bin-3", "ce-time": "yesterday", "content-type": "application/json"})
    assert (bad.status_code, bad.json()["field"]) == (400, "time")


def test_an_event_sent_again_in_another_mode_is_a_plain_duplicate(main: Server) -> None:
    event: dict[str, Any] = {"specversion": "1.0", "id": "x-1", "source": "svc", "type": "account.login"}
    event |= {"time": "2026-03-02T10:30:00Z", "subject": "account:x1", "data": {"origin": "facebook.com"}}
    assert main.post(event).json()["status"] == "accepted"
    again = [main.post(binary(event)[1], binary(event)[0]).json(), main.post([event], BATCH).json()["events"][0]]
    assert [(a["status"], "conflict" in a) for a in again] == [("duplicate", False), ("duplicate", False)]
    assert rows(main.db, "SELECT reason FROM rejected_events WHERE raw LIKE '%x-1%'") == []


def test_a_batch_answers_each_event_in_order_and_judges_the_valid_ones(main: Server) -> None:
    good = {"id": "b-1", "type": "account.login", "time": "2026-03-02T11:00:00Z", "subject": "account:b1"}
    batch = [
        {**good, "data": {"origin": "evil.example"}},
        {**good, "id": "b-2", "time": "half past ten"},
        "not an event",
        {**good, "data": {"origin": "evil.example"}},  # the first again
        {**good, "id": "b-3", "data": {"origin": "facebook.com"}},
    ]
    r = main.post(batch, BATCH)
    assert r.status_code == 400  # a member was rejected; the others were judged all the same
    got = [(e["status"], e.get("field"), len(e.get("violations", []))) for e in r.json()["events"]]
    assert got == [
        ("accepted", None, 1),
        ("rejected", "time", 0),
        ("rejected", "", 0),
        ("duplicate", None, 0),
        ("accepted", None, 0),
    ]
    dead = rows(main.db, "SELECT line, field, reason FROM rejected_events WHERE origin = 'http:batch' ORDER BY line")
    assert [(d[0], d[1]) for d in dead] == [(2, "time"), (3, "")]
    assert "JSON object" in dead[1][2]
    stored = {r[0] for r in rows(main.db, "SELECT event_id FROM events WHERE event_id IN ('b-1', 'b-2', 'b-3')")}
    assert stored == {"b-1", "b-3"}
    empty = main.post([], BATCH)
    assert (empty.status_code, empty.json()["events"]) == (202, [])


# ---------------------------------------------------------------- status codes


def test_a_bad_event_is_400_naming_the_field_and_lands_in_the_dead_letter(main: Server) -> None:
    bad = {"id": "bad-1", "type": "account.login", "time": "2026-03-02T12:00:00Z", "subject": "account1"}
    r = main.post(bad)
    assert r.status_code == 400
    assert (r.json()["status"], r.json()["field"], r.json()["id"]) == ("rejected", "subject", "bad-1")
    (row,) = rows(main.db, "SELECT origin, field, raw FROM rejected_events WHERE raw LIKE '%bad-1%'")
    assert (row[0], row[1], json.loads(row[2])) == ("http:structured", "subject", bad)
    r = main.post(b'{"id": "bad-2", ')
    assert (r.status_code, r.json()["field"]) == (400, "")
    assert "not valid JSON" in r.json()["reason"]
    r = main.post({**bad, "id": "bad-3", "subject": "account:1", "data": {"n": 1 << 70}})  # as replay reads it
    assert (r.status_code, r.json()["field"], r.json()["reason"]) == (400, "data.n", "integers must fit in 64 bits")


def test_requests_refused_whole(main: Server) -> None:
    r = main.post(b"id=1", {"content-type": "text/plain"})
    assert r.status_code == 415 and "application/cloudevents+json" in r.json()["error"]
    r = main.post(b"{}", {})
    assert r.status_code == 415
    r = main.post(b" " * (1 << 20) + b"{}")  # one event: at most 1 MiB
    assert r.status_code == 413
    r = main.post([{"id": str(i)} for i in range(10_001)], BATCH)  # at most 10,000 events in a batch
    assert r.status_code == 413 and "at most 10000 events" in r.json()["error"]


def test_bearer_tokens(main: Server) -> None:
    event = {"id": "tok-1", "type": "t.x", "time": "2026-03-02T12:00:00Z", "subject": "a:1"}
    for auth in ({}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}):
        r = main.client.post("/events", json=event, headers={**STRUCTURED, **auth})
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert rows(main.db, "SELECT event_id FROM events WHERE event_id = 'tok-1'") == []
    r = main.client.post("/admin/reload", headers={"authorization": f"Bearer {TOKEN}"})  # not the admin token
    assert r.status_code == 401


def test_the_queue_is_bounded_429_then_every_admitted_event_is_answered(servers: Callable[..., Server]) -> None:
    server = servers(args=["--max-pending", "3", "--max-batch", "3"]).start()
    path = server.db.removeprefix("sqlite:///")
    lock = sqlite3.connect(path, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")  # the database is busy: admitted events wait for their commit
    events = [{"id": f"q-{i}", "type": "t.q", "time": "2026-03-02T12:00:00Z", "subject": "a:1"} for i in range(3)]
    with ThreadPoolExecutor(3) as pool:
        waiting = [pool.submit(server.post, e) for e in events]
        until(lambda: server.metric("tosengine_events_in_flight") == 3)
        refused = server.post({**events[0], "id": "q-over"})
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        lock.execute("ROLLBACK")
        assert [w.result().status_code for w in waiting] == [202, 202, 202]
    lock.close()
    assert {r[0] for r in rows(server.db, "SELECT event_id FROM events")} == {"q-0", "q-1", "q-2"}


def test_503_while_starting_and_the_reason_on_readyz(servers: Callable[..., Server], tmp_path: Path) -> None:
    server = servers(db=f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}").start(ready=False)
    until(lambda: "cannot be opened" in server.client.get("/readyz").json()["reason"])
    r = server.client.get("/readyz")
    assert r.status_code == 503 and "the audit log cannot be opened" in r.json()["reason"]
    assert "retrying" in r.json()["reason"]
    assert server.client.get("/healthz").json() == {"status": "alive", "state": "starting"}
    assert server.client.post("/admin/reload").status_code == 403  # no TOSENGINE_ADMIN_TOKEN: the endpoint is off
    r = server.post({"id": "s-1", "type": "t.s", "time": "2026-03-02T12:00:00Z", "subject": "a:1"})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert server.stop() == 0


def test_sigterm_drains_writes_checkpoints_and_exits_0(servers: Callable[..., Server]) -> None:
    server = servers().start()
    lock = sqlite3.connect(server.db.removeprefix("sqlite:///"), isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    events = [{"id": f"d-{i}", "type": "t.d", "time": "2026-03-02T12:00:00Z", "subject": "a:1"} for i in range(2)]
    with ThreadPoolExecutor(2) as pool:
        waiting = [pool.submit(server.post, e) for e in events]
        until(lambda: server.metric("tosengine_events_in_flight") == 2)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        until(lambda: server.client.get("/readyz").json().get("reason") == "draining: shutting down")
        late = server.post({**events[0], "id": "d-late"})
        assert late.status_code == 503 and late.headers["retry-after"] == "1"
        lock.execute("ROLLBACK")
        assert [w.result().status_code for w in waiting] == [202, 202]
    lock.close()
    assert server.stop() == 0
    assert {r[0] for r in rows(server.db, "SELECT event_id FROM events")} == {"d-0", "d-1"}
    ((position,),) = rows(server.db, "SELECT position FROM checkpoints ORDER BY seq DESC LIMIT 1")
    assert position == rows(server.db, "SELECT max(seq) FROM events")[0][0]  # the checkpoint covers them
    assert any(line["message"].startswith("stopped") for line in server.lines())


def test_the_app_runs_under_uvicorns_own_command(tmp_path: Path) -> None:
    """`tosengine.serve:create_app` is a factory any ASGI server can run, configured from the environment."""
    port = _free_port()
    db = f"sqlite:///{tmp_path / 'factory.db'}"
    env = {**os.environ, "TOSENGINE_POLICIES": str(QUICKSTART), "TOSENGINE_DB": db}
    command = [sys.executable, "-m", "uvicorn", "--factory", "tosengine.serve:create_app", "--port", str(port)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
            event = {"id": "f-1", "type": "account.login", "time": "2026-03-02T10:00:00Z", "subject": "account:f1"}
            r = client.post("/events", json={**event, "data": {"origin": "evil.example"}}, headers=STRUCTURED)
            assert r.status_code == 202 and len(r.json()["violations"]) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    # uvicorn's own command stops at once on SIGTERM; the app still writes and checkpoints on its way out:
    # the one checkpoint left (older ones are dropped) covers the event posted last.
    ((position,),) = rows(db, "SELECT position FROM checkpoints")
    assert position == rows(db, "SELECT max(seq) FROM events")[0][0]


def test_workers_beyond_one_are_refused_with_the_way_to_scale_out() -> None:
    out = subprocess.run([sys.executable, "-m", "tosengine", "serve", "--workers", "2"], capture_output=True, text=True)
    assert out.returncode == 2 and "tosengine worker" in out.stderr


def test_policies_that_do_not_check_stop_the_command_with_their_diagnostics(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("policy: broken\nrules: [\n", encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "-m", "tosengine", "serve", "--policies", str(tmp_path)], capture_output=True, text=True
    )
    assert out.returncode == 2 and "broken.yaml:" in out.stderr


# ---------------------------------------------------------------- CloudEvents' conformance data


def test_the_conformance_events_and_batches_are_accepted_and_rejected_as_the_data_says(
    servers: Callable[..., Server],
) -> None:
    server = servers().start()
    for case, event, accepted in conformance_events():
        r = server.post(event)
        assert r.status_code == (202 if accepted else 400), (case, r.text)
    for case, batch, valid in conformance_batches():
        r = server.post(batch, BATCH)
        assert r.status_code == (202 if valid else 400), (case, r.text)
        statuses = [e["status"] for e in r.json()["events"]]
        assert len(statuses) == len(batch) and ("rejected" in statuses) == (not valid), case


# ---------------------------------------------------------------- operations: metrics, health, logs


def test_metrics_health_and_json_logs(main: Server) -> None:
    main.post(
        {
            "id": "m-1",
            "type": "account.login",
            "time": "2026-03-02T13:00:00Z",
            "subject": "account:m1",
            "data": {"origin": "x.example"},
        }
    )
    main.post({"id": "m-2", "type": "account.login", "time": "nope", "subject": "account:m2"})
    assert main.client.get("/healthz").json() == {"status": "alive", "state": "ready"}
    ready = main.client.get("/readyz").json()
    assert ready["status"] == "ready" and len(ready["ruleset"]) == 16
    exposition = main.client.get("/metrics").text
    for name in (
        'tosengine_events_received_total{type="account.login"}',
        'tosengine_events_rejected_total{reason="time"}',
        'tosengine_violations_total{policy="no-password-collection",rule="no-password-collection/offsite-login",severity="critical"}',
        "tosengine_event_processing_seconds_bucket",
        "tosengine_audit_write_seconds_bucket",
        "tosengine_obligations_open",
        f'tosengine_ruleset_info{{ruleset_hash="{ready["ruleset"]}"}} 1.0',
        'tosengine_ruleset_reloads_total{result="error"}',
    ):
        assert name in exposition, name
    labels = " ".join(
        line.split("}")[0] for line in exposition.splitlines() if "{" in line and not line.startswith("#")
    )
    assert "account:" not in labels and "m-1" not in labels  # no subject, no event id as a label
    access = [line for line in main.lines() if line["logger"] == "tosengine.access"]
    assert {"method", "path", "status", "duration_ms"} <= access[-1].keys()
    assert any(line["status"] == 400 and line["path"] == "/events" for line in access)


# ---------------------------------------------------------------- reload


def test_a_broken_reload_is_refused_and_reloads_under_load_lose_nothing(
    servers: Callable[..., Server], tmp_path: Path
) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(QUICKSTART, policies)
    server = servers(policies=policies, TOSENGINE_ADMIN_TOKEN=ADMIN).start()
    admin = {"authorization": f"Bearer {ADMIN}"}
    first = server.client.get("/readyz").json()["ruleset"]
    answers: list[httpx.Response] = []
    stop = threading.Event()

    def load() -> None:  # one request at a time, so the ruleset hashes answered are in order
        t0 = datetime(2026, 3, 2, tzinfo=UTC)
        for i in range(100_000):
            if stop.is_set():
                return
            at = (t0 + timedelta(seconds=i)).isoformat().replace("+00:00", "Z")
            event = {
                "id": f"r-{i}",
                "type": "account.login",
                "time": at,
                "subject": f"account:{i}",
                "data": {"origin": "evil.example"},
            }
            answers.append(server.post(event))

    loader = threading.Thread(target=load)
    loader.start()
    try:
        time.sleep(0.3)
        (policies / "zz-broken.yaml").write_text(
            "policy: zz\nrules:\n  - id: x\n    match: event.nope ==\n", encoding="utf-8"
        )
        refused = server.client.post("/admin/reload", headers=admin)
        assert refused.status_code == 422
        assert refused.json()["result"] == "error" and refused.json()["ruleset"] == first
        assert refused.json()["diagnostics"][0]["path"].endswith("zz-broken.yaml")
        time.sleep(0.3)
        (policies / "zz-broken.yaml").unlink()
        quick = policies / "no-password-collection.yaml"
        quick.write_text(quick.read_text().replace("severity: critical", "severity: high"), encoding="utf-8")
        done = server.client.post("/admin/reload", headers=admin)
        assert done.status_code == 200 and done.json()["previous"] == first
        second = done.json()["ruleset"]
        assert second != first
        time.sleep(0.3)
        quick.write_text(quick.read_text().replace("severity: high", "severity: medium"), encoding="utf-8")
        assert server.proc is not None
        server.proc.send_signal(signal.SIGHUP)
        until(lambda: server.client.get("/readyz").json()["ruleset"] != second)
        third = server.client.get("/readyz").json()["ruleset"]
        time.sleep(0.3)
    finally:
        stop.set()
        loader.join()
    assert third not in (first, second)
    assert all(a.status_code == 202 for a in answers) and len(answers) > 20
    judged = [(a.json()["ruleset"], a.json()["violations"][0]["severity"]) for a in answers]
    order = [first, second, third]
    assert [order.index(h) for h, _ in judged] == sorted(order.index(h) for h, _ in judged)  # never back
    assert {(h, s) for h, s in judged} == {(first, "critical"), (second, "high"), (third, "medium")}
    assert server.metric('tosengine_ruleset_reloads_total{result="error"}') == 1
    assert server.metric('tosengine_ruleset_reloads_total{result="ok"}') == 2
    assert server.stop() == 0
    stored = {r[0] for r in rows(server.db, "SELECT id FROM violations")}
    assert stored == {i for a in answers for i in violation_ids(a)}


# ---------------------------------------------------------------- time


def test_the_clock_lag_fires_a_deadline_on_a_quiet_stream(servers: Callable[..., Server], tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "answer.yaml").write_text(
        "policy: answer\ntitle: Answer\nclause: Answer within two seconds.\nrules:\n"
        '  - id: unanswered\n    expect:\n      after: event.type == "case.opened"\n'
        '      fulfilled_by: event.type == "case.closed"\n      within: 2s\n',
        encoding="utf-8",
    )
    server = servers(policies=tmp_path / "p", args=["--clock-lag", "1s", "--clock-tick", "0.2"]).start()
    opened = (datetime.now(UTC) - timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    assert server.post({"id": "c-1", "type": "case.opened", "time": opened, "subject": "case:1"}).status_code == 202
    until(lambda: bool(rows(server.db, "SELECT id FROM violations")), timeout=20)
    assert [r[0] for r in rows(server.db, "SELECT rule FROM violations")] == ["answer/unanswered"]
    latest = rows(server.db, "SELECT max(seq) FROM checkpoints")[0][0]
    time.sleep(1.0)  # five more ticks with nothing due: no checkpoint written for them
    assert rows(server.db, "SELECT max(seq) FROM checkpoints")[0][0] == latest
    assert server.stop() == 0


# ---------------------------------------------------------------- durability


def test_every_event_answered_202_survives_a_sigkill_under_load(servers: Callable[..., Server], db_url: str) -> None:
    server = servers(db=db_url).start()
    events = seed()
    answered: dict[str, list[str]] = {}  # event id -> the violation ids its 202 named
    lock = threading.Lock()

    def post_slice(k: int) -> None:
        for event in events[k::4]:
            try:
                r = server.post(event)
            except httpx.TransportError:
                return  # killed
            if r.status_code == 202:
                with lock:
                    answered[event["id"]] = violation_ids(r)

    with ThreadPoolExecutor(4) as pool:
        running = [pool.submit(post_slice, k) for k in range(4)]
        until(lambda: len(answered) >= 600, timeout=60)
        server.stop(signal.SIGKILL)
        for f in running:
            f.result()
    assert len(answered) < len(events)  # killed mid-stream
    assert any(answered.values())  # some answers named violations: the check below is not vacuous
    stored = {r[0] for r in rows(server.db, "SELECT event_id FROM events")}
    assert set(answered) <= stored
    stored_violations = {r[0] for r in rows(server.db, "SELECT id FROM violations")}
    assert {v for vs in answered.values() for v in vs} <= stored_violations
    restarted = servers(db=server.db).start()  # resumes from the log the kill left
    again = restarted.post(events[0])  # the log is the redelivery memory: nothing is judged twice
    assert again.status_code == 202 and again.json()["status"] == "duplicate"
    assert restarted.stop() == 0
    assert verify(server.db).ok
