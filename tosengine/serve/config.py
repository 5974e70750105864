"""Configuration of `tosengine serve`: command-line options or environment -> ServeConfig (docs/serve.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from tosengine.durations import parse_duration
from tosengine.errors import TosEngineError
from tosengine.events import MAX_EVENT
from tosengine.runtime.engine import SMOKE_TEST_TIMEOUT

__all__ = ["ServeConfig", "lag_arg"]


@dataclass(frozen=True)
class ServeConfig:
    """Everything the service needs; `from_env` reads it the way the CLI's defaults do.

    Limits: a request body of at most `max_body` bytes (a single event also at most the engine's
    event size, 1 MiB), a batch of at most `max_batch` events, and at most `max_pending` events admitted
    and not yet answered (beyond it: 429, with `Retry-After: retry_after` seconds). `clock_lag`: when
    given, a ticker every `clock_tick` seconds moves the event-time
    clock to wall time minus the lag if a deadline is due by then. Tokens come from the environment
    only (TOSENGINE_INGEST_TOKEN, TOSENGINE_ADMIN_TOKEN), never from the command line, where any user of
    the machine can read them.
    """

    policies: str = "policies"
    db: str = "sqlite:///tosengine.db"
    max_body: int = 8 << 20
    max_batch: int = 10_000
    max_pending: int = 20_000
    retry_after: int = 1
    clock_lag: timedelta | None = None
    clock_tick: float = 1.0
    drain_timeout: float = 30.0
    ingest_token: str | None = None
    admin_token: str | None = None
    smoke_test: float | None = SMOKE_TEST_TIMEOUT
    max_event_size: int = MAX_EVENT

    def __post_init__(self) -> None:
        for name in ("max_body", "max_batch", "max_pending", "retry_after", "max_event_size"):
            if getattr(self, name) < 1:
                raise TosEngineError(f"serve: {name} must be at least 1")
        if self.max_batch > self.max_pending:
            raise TosEngineError(
                f"serve: a batch of max_batch={self.max_batch} events could never be admitted with "
                f"max_pending={self.max_pending}: make max_pending at least max_batch"
            )
        if self.clock_tick <= 0 or self.drain_timeout < 0:
            raise TosEngineError("serve: clock_tick must be positive and drain_timeout not negative")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **given: object) -> ServeConfig:
        """The configuration from the environment (TOSENGINE_POLICIES, TOSENGINE_DB, TOSENGINE_MAX_BODY,
        TOSENGINE_MAX_BATCH, TOSENGINE_MAX_PENDING, TOSENGINE_CLOCK_LAG,
        TOSENGINE_CLOCK_TICK, TOSENGINE_INGEST_TOKEN, TOSENGINE_ADMIN_TOKEN), then `given` (values that
        are not None) over it: the CLI passes its options so."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for key, name, kind in (
            ("TOSENGINE_POLICIES", "policies", str),
            ("TOSENGINE_DB", "db", str),
            ("TOSENGINE_MAX_BODY", "max_body", int),
            ("TOSENGINE_MAX_BATCH", "max_batch", int),
            ("TOSENGINE_MAX_PENDING", "max_pending", int),
            ("TOSENGINE_CLOCK_TICK", "clock_tick", float),
        ):
            if env.get(key):
                try:
                    values[name] = kind(env[key])
                except ValueError:
                    raise TosEngineError(f"serve: {key}={env[key]!r} is not a valid {kind.__name__}") from None
        if env.get("TOSENGINE_CLOCK_LAG"):
            values["clock_lag"] = lag_arg(env["TOSENGINE_CLOCK_LAG"])
        values["ingest_token"] = env.get("TOSENGINE_INGEST_TOKEN") or None
        values["admin_token"] = env.get("TOSENGINE_ADMIN_TOKEN") or None
        values.update({k: v for k, v in given.items() if v is not None})
        return cls(**values)


def lag_arg(text: str) -> timedelta:
    """A clock lag as the policy language writes durations (`30s`, `5m`, `1h30m`)."""
    lag = parse_duration(text, compound=True)
    if lag is None:
        raise TosEngineError(f"serve: clock lag {text!r} is not a duration such as 30s, 5m or 1h30m")
    return lag
