"""A database that goes away mid-replay: the failure reaches the caller, nothing unwritten is
acknowledged, and a rerun after the database is back ends with exactly the rows of a clean run."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.engine import make_url

from tests.support import PG_URL, pg_schema
from tosengine import Engine
from tosengine.audit.log import AuditError, AuditLog
from tosengine.audit.models import ViolationRow
from tosengine.event_model import parse_event_line

ROOT = Path(__file__).resolve().parents[1]
LINES = (ROOT / "examples" / "seed-cases.jsonl").read_text(encoding="utf-8").splitlines()


class CuttableProxy:
    """A TCP proxy on 127.0.0.1 in front of PostgreSQL that the test can cut and restore."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.open = True
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if not self.open:
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)
        with contextlib.suppress(OSError):
            b.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        """Drop every connection and refuse new ones: the database is gone."""
        self.open = False
        with self.lock:
            for c in self.conns:
                with contextlib.suppress(OSError):
                    c.shutdown(socket.SHUT_RDWR)
                c.close()
            self.conns.clear()

    def restore(self) -> None:
        self.open = True

    def close(self) -> None:
        self.cut()
        self.server.close()


@pytest.fixture
def proxied() -> Iterator[tuple[str, str, CuttableProxy]]:
    """(URL through the proxy, direct URL, proxy) for a fresh PostgreSQL schema."""
    with pg_schema() as direct:
        assert PG_URL is not None
        u = make_url(PG_URL)
        proxy = CuttableProxy(u.host or "127.0.0.1", u.port or 5432)
        via = direct.replace(f"{u.host}:{u.port or 5432}", f"127.0.0.1:{proxy.port}", 1)
        try:
            yield via, direct, proxy
        finally:
            proxy.close()


def _ids(url: str) -> list[str]:
    eng = create_engine(url)
    with eng.connect() as c:
        ids = [r[0] for r in c.execute(select(ViolationRow.id).order_by(ViolationRow.seq))]
    eng.dispose()
    return ids


def test_outage_surfaces_and_a_rerun_completes_exactly_once(
    proxied: tuple[str, str, CuttableProxy], tmp_path: Path
) -> None:
    via, direct, proxy = proxied
    clean = f"sqlite:///{tmp_path / 'clean.db'}"
    with Engine.from_directory(ROOT / "policies", audit=clean) as engine:
        for line in LINES:
            engine.process(parse_event_line(line))
    want = _ids(clean)

    engine = Engine.from_directory(ROOT / "policies", audit=AuditLog(via, batch_size=500))
    acknowledged: list[str] = []
    with pytest.raises(AuditError):
        for n, line in enumerate(LINES):
            pending = engine.process(parse_event_line(line))
            if n == len(LINES) // 2:
                proxy.cut()
            engine.flush()  # like replay: acknowledge only what the audit log holds
            acknowledged += [v.id for v in pending]
    stored = _ids(direct)
    assert set(acknowledged) <= set(stored)  # nothing acknowledged that was not written
    proxy.restore()
    with Engine.from_directory(ROOT / "policies", audit=via) as engine:  # at-least-once: from the start
        for line in LINES:
            engine.process(parse_event_line(line))
    assert _ids(direct) == want


def test_replay_exits_non_zero_when_the_database_is_unreachable(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]  # a port nobody listens on once closed
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/test?connect_timeout=2"
    f = tmp_path / "e.jsonl"
    f.write_text(json.dumps(json.loads(LINES[0])) + "\n", encoding="utf-8")
    p = subprocess.run(
        [sys.executable, "-m", "tosengine", "replay", str(f), "--policies", str(ROOT / "policies"), "--db", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2
    assert "cannot open the audit log" in p.stderr and "Traceback" not in p.stderr
