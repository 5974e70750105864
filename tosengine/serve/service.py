"""Stage judge (HTTP): decoded events -> Judgements, durable; the Engine behind `tosengine serve`.

The Service owns the one Engine of the process and what the HTTP front end asks of it: opening it
(policies, audit log, resume) off the request path; judging the events of requests on one thread, in
the order they were admitted, everything waiting at once in one engine call, so that concurrent
requests share one commit (group commit: under load a transaction carries many requests, each
answered only once it is written); counting the events admitted and not yet answered (the bound
behind 429); reloading the policies; moving the clock on a ticker; saying whether it is ready. It
never imports the web framework: app.py is the only module that does.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import text

from tosengine.audit.connect import masked
from tosengine.audit.log import AuditLog
from tosengine.errors import AuditError, EventError, MatcherError, PolicyError, TosEngineError
from tosengine.metrics import Metrics
from tosengine.runtime.engine import Engine, EventInput, Judgement
from tosengine.serve.binding import Carried
from tosengine.serve.config import ServeConfig

__all__ = ["DRAINING", "FAILED", "READY", "STARTING", "STOPPED", "Reloaded", "Service"]

LOG = logging.getLogger("tosengine.serve")

# What the service is doing; only READY takes events (the others answer 503).
STARTING, READY, DRAINING, STOPPED, FAILED = "starting", "ready", "draining", "stopped", "failed"


class _TimedAuditLog(AuditLog):
    """The audit log, timing each transaction for `tosengine_audit_write_seconds`."""

    def __init__(self, url: str, metrics: Metrics) -> None:
        super().__init__(url)
        self._metrics = metrics

    def write(self, *args: Any, **kwargs: Any) -> None:
        """AuditLog.write, timed."""
        start = time.perf_counter()
        try:
            super().write(*args, **kwargs)
        finally:
            self._metrics.audit_write.observe(time.perf_counter() - start)


@dataclass(frozen=True)
class _Waiting:
    """A request's events waiting to be judged, and where its answer goes."""

    carried: Sequence[Carried]
    origin: str
    numbered: bool
    done: asyncio.Future[list[Judgement]]


@dataclass(frozen=True)
class Reloaded:
    """How a reload went: `ok`, the ruleset hashes before and after (equal when it failed), the checker's
    diagnostics when it failed, and the rules whose state was dropped when it succeeded."""

    ok: bool
    before: str
    after: str
    diagnostics: list[dict[str, Any]] = field(default_factory=list)
    dropped_rules: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The body of the reload response."""
        out: dict[str, Any] = {"result": "ok" if self.ok else "error", "ruleset": self.after, "previous": self.before}
        if self.diagnostics:
            out["diagnostics"] = self.diagnostics
        if self.dropped_rules:
            out["dropped_rules"] = list(self.dropped_rules)
        return out


class Service:
    """The engine of one `tosengine serve` process and its admission, reload, clock and readiness."""

    def __init__(self, config: ServeConfig, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics if metrics is not None else Metrics()
        self.state = STARTING
        self.problem = "starting: loading the policies and opening the audit log"
        self.engine: Engine | None = None
        self._audit: _TimedAuditLog | None = None
        self.pending = 0  # events admitted and not yet answered (changed on the event loop only)
        # Requests waiting to be judged, and the signal that some are (both used on the event loop only).
        self._waiting: list[_Waiting] = []
        self._wake = asyncio.Event()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="tosengine-judge")
        self._reload_lock = threading.Lock()
        self._opening = threading.Lock()  # held while opening, so closing waits for a half-open engine
        self.failed_to_close = False  # the write and checkpoint on the way out failed (see app.py)
        self.metrics.track_obligations(self._obligations)

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> None:
        """Load the policies and open the audit log, resuming its state (blocking: run it off the event
        loop). PolicyError or MatcherError if the policies cannot run (permanent); AuditError if the
        database cannot be used (worth retrying)."""
        with self._opening:
            if self.state != STARTING:
                return  # shut down (or failed) meanwhile
            audit = _TimedAuditLog(self.config.db, self.metrics)
            try:
                engine = Engine.from_directory(
                    self.config.policies,
                    audit=audit,
                    smoke_test=self.config.smoke_test,
                    max_event_size=self.config.max_event_size,
                )
            except BaseException:
                audit.release()
                raise
            self._opened(audit, engine)

    def _opened(self, audit: _TimedAuditLog, engine: Engine) -> None:
        if engine.dropped_rules:
            LOG.warning("state dropped on resume: the rules changed", extra={"rules": list(engine.dropped_rules)})
        self._audit, self.engine = audit, engine
        self.metrics.ruleset(engine.ruleset_hash)
        self.state, self.problem = READY, ""
        LOG.info(
            "ready",
            extra={"ruleset": engine.ruleset_hash, "resumed_events": engine.resumed_events, "db": masked(audit.url)},
        )

    def fail(self, problem: str) -> None:
        """The engine cannot be opened and retrying will not help (the policies do not run)."""
        self.state, self.problem = FAILED, problem

    def drain(self) -> None:
        """Take no more events (503); those admitted are still answered."""
        if self.state == READY:
            self.state, self.problem = DRAINING, "draining: shutting down"

    def close(self) -> None:
        """Write what is queued and checkpoint (Engine.close), after the admitted events are answered."""
        self._pool.shutdown(wait=True)
        with self._opening:
            self.state = STOPPED
        if self.engine is not None:
            self.engine.close()  # writes, checkpoints, closes the audit log

    # ------------------------------------------------------------------ admission (on the event loop)

    def admit(self, n: int) -> bool:
        """Reserve room for `n` events, or False if that would pass `max_pending` (answer 429)."""
        if self.pending + n > self.config.max_pending:
            return False
        self.pending += n
        self.metrics.events_in_flight.set(self.pending)
        return True

    def release(self, n: int) -> None:
        """`n` admitted events were answered."""
        self.pending -= n
        self.metrics.events_in_flight.set(self.pending)

    @property
    def pool(self) -> ThreadPoolExecutor:
        """The one thread that judges events (so they enter the engine in the order they were admitted)."""
        return self._pool

    # ------------------------------------------------------------------ judging: one dispatcher, group commit

    async def judge(self, carried: Sequence[Carried], origin: str, numbered: bool) -> list[Judgement]:
        """Judge a request's events in order; return once their results are durable (on the event loop).

        The request waits in line with the others; the dispatcher judges everything waiting in one engine
        call, so concurrent requests share one commit. A rejected event is recorded in the dead letter
        with `origin` and, if `numbered`, its position in the request (from 1) as the line."""
        done: asyncio.Future[list[Judgement]] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(carried, origin, numbered, done))
        self._wake.set()
        return await done

    async def dispatch(self) -> None:
        """Judge what waits, all of it at once, on the judging thread; forever (cancel to stop)."""
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            waiting, self._waiting = self._waiting, []
            if not waiting:
                continue
            try:
                results = await loop.run_in_executor(self._pool, self._judge_all, waiting)
            except Exception as exc:  # the commit failed (AuditError), or a defect: every request hears it
                for w in waiting:
                    if not w.done.done():
                        w.done.set_exception(exc)
                continue
            for w, result in zip(waiting, results, strict=True):
                if not w.done.done():  # a client that went away cancelled its wait
                    w.done.set_result(result)

    def _judge_all(self, waiting: Sequence[_Waiting]) -> list[list[Judgement]]:
        """The events of every waiting request through one `judge_many` (one commit), split back."""
        engine = self._engine()
        start = time.perf_counter()
        out: list[list[Judgement | None]] = [[None] * len(w.carried) for w in waiting]
        events: list[EventInput] = []
        where: list[tuple[int, int]] = []  # (request, position) of each event handed to the engine
        for r, w in enumerate(waiting):
            for i, c in enumerate(w.carried):
                self.metrics.received(c.type)
                if c.error is not None:
                    self._reject(engine, c, c.error, w.origin, i + 1 if w.numbered else None)
                    out[r][i] = Judgement("rejected", engine.ruleset_hash, error=c.error)
                else:
                    events.append(c.event)
                    where.append((r, i))

        def refused(pos: int, _event: EventInput, exc: EventError) -> None:
            r, i = where[pos]
            w = waiting[r]
            self._reject(engine, w.carried[i], exc, w.origin, i + 1 if w.numbered else None)

        for (r, i), j in zip(where, engine.judge_many(events, on_error=refused), strict=True):
            out[r][i] = j
        self.metrics.processed(time.perf_counter() - start, len(events))
        results = [[j for j in request if j is not None] for request in out]
        for j in (j for request in results for j in request):
            if j.error is not None:
                self.metrics.rejected(j.error.field)
            elif j.status == "duplicate":
                self.metrics.events_duplicate.inc()
            else:
                self.metrics.recorded(j.violations)
        return results

    def _reject(self, engine: Engine, c: Carried, error: EventError, origin: str, line: int | None) -> None:
        raw = c.raw if c.raw is not None else orjson.dumps(c.event).decode()
        engine.reject(raw, EventError(error.field, error.problem, line=line), origin)

    def advance_clock(self) -> int:
        """With a clock lag: move the event-time clock to wall time minus the lag when a deadline (or a
        once_per window) is due by then; return the violations that made durable. Asking first keeps a
        quiet stream from writing a checkpoint (advance_to writes one) on every tick."""
        engine, lag = self.engine, self.config.clock_lag
        if engine is None or lag is None or self.state != READY:
            return 0
        target = datetime.now(UTC) - lag
        clock = engine.clock
        if (clock is not None and target <= clock) or not engine.due(target):
            return 0
        violations = engine.advance_to(target)
        self.metrics.recorded(violations)
        if violations:
            LOG.info("clock advanced", extra={"clock": target.isoformat(), "violations": len(violations)})
        return len(violations)

    # ------------------------------------------------------------------ reload and readiness

    def reload(self) -> Reloaded:
        """Check, compile and swap in the policies of the policy directory (blocking; one at a time). On any
        failure the running policies stay, and the diagnostics say why."""
        with self._reload_lock:
            engine = self._engine()
            before = engine.ruleset_hash
            diagnostics: list[dict[str, Any]] = []
            try:
                engine.reload(self.config.policies)
            except PolicyError as exc:
                diagnostics = [d.to_json() for d in exc.diagnostics] or [{"message": str(exc)}]
            except AuditError as exc:
                # The swap happened; only its checkpoint failed (it is retried with the next commit).
                LOG.error("reload: the checkpoint after the switch failed", extra={"error": str(exc)})
            except (MatcherError, TosEngineError, OSError) as exc:
                diagnostics = [{"message": f"{type(exc).__name__}: {exc}"}]
            after = engine.ruleset_hash
            ok = not diagnostics
            self.metrics.reloaded(ok)
            self.metrics.ruleset(after)
            result = Reloaded(ok, before, after, diagnostics, engine.dropped_rules if ok else ())
            LOG.log(
                logging.INFO if ok else logging.ERROR,
                "reload " + ("done" if ok else "refused: the running policies stay"),
                extra={"ruleset": after, "previous": before, "diagnostics": diagnostics},
            )
            return result

    def database_problem(self) -> str | None:
        """None if the audit database answers a query now, else what is wrong (blocking)."""
        if self._audit is None:
            return "the audit log is not open"
        try:
            with self._audit.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # any driver error means not reachable; say which
            return f"the audit database does not answer: {type(exc).__name__}: {exc}"
        return None

    def _engine(self) -> Engine:
        if self.engine is None:
            raise TosEngineError("the engine is not open yet")
        return self.engine

    def _obligations(self) -> float:
        engine = self.engine
        if engine is None or self.state == STOPPED:
            return 0.0
        return float(engine.state_size().get("obligations", 0))
