"""Stage front end (HTTP): requests -> Service -> JSON responses; the Starlette app of `tosengine serve`.

Routes: `POST /` and `POST /events` take CloudEvents (binding.py decodes the three modes),
`GET /healthz`, `GET /readyz`, `GET /metrics`, and `POST /admin/reload`. Events are judged by the
Service off the event loop, concurrent requests together in one engine call and one commit; a
response is sent only once what it reports is durable. `create_app` is the factory: `tosengine
serve` runs it on uvicorn, and any ASGI server can (`uvicorn --factory tosengine.serve:create_app`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tosengine.errors import AuditError, MatcherError, PolicyError
from tosengine.metrics import CONTENT_TYPE
from tosengine.runtime.engine import Judgement
from tosengine.serve.binding import (
    BATCH,
    BINARY,
    Carried,
    RequestError,
    decode_batch,
    decode_binary,
    decode_structured,
    request_mode,
)
from tosengine.serve.config import ServeConfig
from tosengine.serve.service import READY, Service

__all__ = ["create_app"]

LOG = logging.getLogger("tosengine.serve")
ACCESS = logging.getLogger("tosengine.access")
# Routes by name, for metric labels and the access log: a raw path would let a client make new series.
_ROUTES = {"/", "/events", "/healthz", "/readyz", "/metrics", "/admin/reload"}
# Retrying to open the audit log: from 1 s, doubling, to at most 30 s between attempts.
_RETRY_FIRST, _RETRY_MAX = 1.0, 30.0


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers=headers, media_type="application/json")


def _refuse(status: int, message: str, service: Service, retry: bool = False) -> Response:
    """A request answered whole with an error (`error`, and the service's `state`), no event outcomes."""
    headers = {"Retry-After": str(service.config.retry_after)} if retry else None
    if status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="tosengine"'}
    return _json({"error": message, "state": service.state}, status, headers)


def _bearer(request: Request, token: str) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def _event_json(c: Carried, j: Judgement) -> dict[str, Any]:
    """What a response says of one event."""
    source, ident = c.identity()
    out: dict[str, Any] = {"status": j.status}
    if ident is not None:
        out["id"] = ident
    if source is not None:
        out["source"] = source
    out["ruleset"] = j.ruleset
    if j.status == "accepted":
        out["violations"] = [{**v.to_json(), "ruleset": j.ruleset} for v in j.violations]
    elif j.status == "duplicate":
        if j.conflict:
            out["conflict"] = True
            out["reason"] = "another body was processed under this source and id: this copy is in the dead letter"
    elif j.error is not None:
        out["field"] = j.error.field
        out["reason"] = j.error.problem
    return out


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to pass `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"the body is {declared} bytes; at most {limit} are taken")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"the body is more than {limit} bytes; at most {limit} are taken")
        chunks.append(chunk)
    return b"".join(chunks)


def _routes(service: Service) -> list[Route]:
    config = service.config

    async def ingest(request: Request) -> Response:
        if config.ingest_token is not None and not _bearer(request, config.ingest_token):
            return _refuse(401, "a bearer token is required (TOSENGINE_INGEST_TOKEN)", service)
        if service.state != READY:
            return _refuse(503, service.problem or service.state, service, retry=True)
        try:
            mode = request_mode(request.headers.get("content-type"), request.headers.keys())
            limit = config.max_body if mode == BATCH else min(config.max_body, config.max_event_size)
            body = await _body(request, limit)
            if mode == BATCH:
                carried = decode_batch(body, config.max_batch)
            elif mode == BINARY:
                carried = [decode_binary(request.scope["headers"], request.headers.get("content-type"), body)]
            else:
                carried = [decode_structured(body)]
        except RequestError as exc:
            return _refuse(exc.status, exc.message, service)
        request.state.events = len(carried)
        if not carried:  # an empty batch: nothing to judge
            return _json({"ruleset": service.engine.ruleset_hash if service.engine else "", "events": []}, 202)
        if not service.admit(len(carried)):
            return _refuse(429, f"more than {config.max_pending} events are waiting: retry later", service, True)
        try:
            judged = await service.judge(carried, f"http:{mode}", mode == BATCH)
        except AuditError as exc:
            LOG.error("the audit log could not be written", extra={"error": str(exc)})
            return _refuse(
                503,
                "the audit log could not be written; the events were processed and are written by the next "
                "commit that succeeds: retry (they then answer as duplicates once durable)",
                service,
                retry=True,
            )
        except Exception:  # a defect: logged with its traceback, answered as JSON
            LOG.exception("internal error judging events")
            return _refuse(500, "internal error: see the service's log", service)
        finally:
            service.release(len(carried))
        events = [_event_json(c, j) for c, j in zip(carried, judged, strict=True)]
        status = 400 if any(j.status == "rejected" for j in judged) else 202
        if mode != BATCH:
            return _json(events[0], status)
        return _json({"ruleset": judged[-1].ruleset, "events": events}, status)

    async def healthz(request: Request) -> Response:
        return _json({"status": "alive", "state": service.state})

    async def readyz(request: Request) -> Response:
        if service.state != READY:
            return _json({"status": "not ready", "reason": service.problem or service.state}, 503)
        loop = asyncio.get_running_loop()
        try:
            problem = await asyncio.wait_for(loop.run_in_executor(None, service.database_problem), 5.0)
        except TimeoutError:
            problem = "the audit database did not answer within 5 s"
        if problem is not None:
            return _json({"status": "not ready", "reason": problem}, 503)
        assert service.engine is not None
        return _json({"status": "ready", "ruleset": service.engine.ruleset_hash})

    async def metrics(request: Request) -> Response:
        # Rendering reads the open obligations under the engine's lock: off the event loop.
        body = await asyncio.get_running_loop().run_in_executor(None, service.metrics.render)
        return Response(body, 200, media_type=CONTENT_TYPE)

    async def reload(request: Request) -> Response:
        if config.admin_token is None:
            return _refuse(403, "admin endpoints are off: set TOSENGINE_ADMIN_TOKEN to use them", service)
        if not _bearer(request, config.admin_token):
            return _refuse(401, "the admin bearer token is required (TOSENGINE_ADMIN_TOKEN)", service)
        if service.engine is None:
            return _refuse(503, service.problem or service.state, service, retry=True)
        result = await asyncio.get_running_loop().run_in_executor(None, service.reload)
        return _json(result.to_json(), 200 if result.ok else 422)

    return [
        Route("/", ingest, methods=["POST"]),
        Route("/events", ingest, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/admin/reload", reload, methods=["POST"]),
    ]


class _Observe:
    """ASGI middleware: every response names the running ruleset (`X-Tosengine-Ruleset`), is counted by
    route and status, and gets one JSON access-log line (no event ids or subjects in either)."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                engine = self.service.engine
                if engine is not None:
                    message["headers"] = [
                        *message.get("headers", []),
                        (b"x-tosengine-ruleset", engine.ruleset_hash.encode()),
                    ]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            seconds = time.perf_counter() - start
            path = scope.get("path", "")
            route = path if path in _ROUTES else "other"
            self.service.metrics.requests.labels(route, str(status)).inc()
            self.service.metrics.request_seconds.labels(route).observe(seconds)
            client = scope.get("client")
            ACCESS.info(
                f"{scope.get('method', '')} {route} {status}",
                extra={
                    "method": scope.get("method", ""),
                    "path": route,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 3),
                    "events": scope.get("state", {}).get("events"),
                    "client": f"{client[0]}:{client[1]}" if client else None,
                },
            )


async def _open(service: Service, on_fatal: Callable[[str], None] | None) -> None:
    """Open the engine off the event loop; retry while the database cannot be used (503 meanwhile)."""
    loop = asyncio.get_running_loop()
    wait = _RETRY_FIRST
    while True:
        try:
            # Shielded: cancelling the task (shutdown) must not abandon an engine half-opened on its thread.
            await asyncio.shield(loop.run_in_executor(None, service.open))
            return
        except (PolicyError, MatcherError, FileNotFoundError) as exc:
            problem = f"the policies cannot run: {exc}"
            LOG.error(problem)
            service.fail(problem)
            if on_fatal is not None:
                on_fatal(problem)
            return
        except Exception as exc:  # the database (AuditError, a driver's error): worth retrying
            service.problem = f"starting: the audit log cannot be opened ({exc}); retrying in {wait:.0f} s"
            LOG.error("the audit log cannot be opened; retrying", extra={"error": str(exc), "retry_in": wait})
            await asyncio.sleep(wait)
            wait = min(wait * 2, _RETRY_MAX)


async def _tick(service: Service) -> None:
    """Move the clock to wall time minus the lag, every `clock_tick` seconds (see Service.advance_clock)."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(service.config.clock_tick)
        try:
            await loop.run_in_executor(service.pool, service.advance_clock)
        except Exception:  # logged; the next tick tries again
            LOG.exception("the clock could not be advanced")


def create_app(
    config: ServeConfig | None = None,
    *,
    service: Service | None = None,
    on_fatal: Callable[[str], None] | None = None,
) -> Starlette:
    """The ASGI app of `tosengine serve` (configured from the environment when `config` is None).

    The engine opens in the background once the server starts (503 and an unready /readyz until then);
    `on_fatal` is called if the policies cannot run at all. On shutdown the app stops taking events,
    answers those admitted, then writes and checkpoints (Engine.close). SIGHUP reloads the policies
    when the app runs in the main thread.
    """
    service = service if service is not None else Service(config if config is not None else ServeConfig.from_env())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        tasks = [asyncio.create_task(_open(service, on_fatal)), asyncio.create_task(service.dispatch())]
        if service.config.clock_lag is not None:
            tasks.append(asyncio.create_task(_tick(service)))
        hup = _on_sighup(loop, service)
        try:
            yield
        finally:
            if hup:
                loop.remove_signal_handler(signal.SIGHUP)
            service.drain()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                await loop.run_in_executor(None, service.close)
            except Exception:  # the last write failed: what it held was never answered 202
                service.failed_to_close = True
                LOG.exception("stopped, but the last write or checkpoint failed")
            else:
                LOG.info("stopped: everything written and checkpointed")

    app = Starlette(routes=_routes(service), lifespan=lifespan)
    app.add_middleware(_Observe, service=service)
    app.state.service = service
    return app


def _on_sighup(loop: asyncio.AbstractEventLoop, service: Service) -> bool:
    """Reload on SIGHUP (only possible from the main thread); whether the handler is installed."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGHUP"):
        return False

    def reload() -> None:
        if service.engine is not None:
            loop.run_in_executor(None, service.reload)

    try:
        loop.add_signal_handler(signal.SIGHUP, reload)
    except (NotImplementedError, RuntimeError):
        return False
    return True
