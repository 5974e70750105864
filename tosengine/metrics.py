"""Observability: what a front end saw and the engine decided -> Prometheus metrics on one registry.

One `Metrics` per process (or per test), on its own CollectorRegistry: no module-level collectors, so
two services in one process never share counts. Every front end (`tosengine serve`, `tosengine
worker`) reports under these names, so one dashboard reads both. Labels are bounded on purpose: event
types are capped (`max_types`), rejections are counted by the attribute at fault, never by message,
and no subject, key or event id is ever a label (each would make a new time series per account).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from tosengine.violation import Violation

__all__ = ["CONTENT_TYPE", "LATENCY_BUCKETS", "Metrics", "rejection_reason"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
# From 50 us (an event matched in memory) to 10 s (a commit behind a stalled database).
LATENCY_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_TYPE = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
# The envelope attributes a rejection is counted under by name; anything else is `data` or `extension`.
_ATTRIBUTES = frozenset(
    {"id", "type", "time", "subject", "source", "specversion", "datacontenttype", "dataschema", "data_base64"}
)


def rejection_reason(field: str) -> str:
    """The `reason` label of an event rejected for `field` (EventError.field): the envelope attribute
    at fault, `data` for anything under data, `extension` for an extension attribute, `malformed` for
    input that is not an event at all (not JSON, not an object, too large, not UTF-8)."""
    if not field:
        return "malformed"
    if field in _ATTRIBUTES:
        return field
    if field == "data" or field.startswith(("data.", "data[")):
        return "data"
    return "extension"


class Metrics:
    """The tosengine metrics on `registry` (a new CollectorRegistry if none is given).

    At most `max_types` distinct event types get their own `type` label; later ones are counted as
    `other`, and a value that is not a type name as `invalid`, so a hostile producer cannot grow the
    series without bound.
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, max_types: int = 200) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.max_types = max_types
        self._types: set[str] = set()
        self._types_lock = threading.Lock()
        r = self.registry
        self.events_received = Counter(
            "tosengine_events_received", "Events received, valid or not, by type", ["type"], registry=r
        )
        self.events_rejected = Counter(
            "tosengine_events_rejected",
            "Events rejected into the dead letter, by the attribute at fault",
            ["reason"],
            registry=r,
        )
        self.events_duplicate = Counter(
            "tosengine_events_duplicate", "Redelivered events (same source and id), not processed again", registry=r
        )
        self.violations = Counter(
            "tosengine_violations", "Violations recorded", ["policy", "rule", "severity"], registry=r
        )
        self.event_processing = Histogram(
            "tosengine_event_processing_seconds",
            "Seconds from an event entering the engine to its results being durable",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.audit_write = Histogram(
            "tosengine_audit_write_seconds",
            "Seconds per audit log transaction (one group commit)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.obligations_open = Gauge(
            "tosengine_obligations_open", "Open expect obligations (deadlines not yet met or lapsed)", registry=r
        )
        self.ruleset_info = Gauge(
            "tosengine_ruleset_info", "The ruleset being run (value 1), by its hash", ["ruleset_hash"], registry=r
        )
        self.ruleset_reloads = Counter(
            "tosengine_ruleset_reloads", "Policy reloads, by result (ok or error)", ["result"], registry=r
        )
        for result in ("ok", "error"):
            self.ruleset_reloads.labels(result)  # both series exist from the start, at 0
        self.events_in_flight = Gauge(
            "tosengine_events_in_flight", "Events admitted and not yet answered (bounded: beyond it, 429)", registry=r
        )
        # Requests by route (a fixed set: the front end passes its route's name, never the raw path).
        self.requests = Counter(
            "tosengine_http_requests", "HTTP requests answered, by route and status", ["route", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "tosengine_http_request_seconds",
            "Seconds to answer an HTTP request, by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    # ------------------------------------------------------------------ what happened

    def type_label(self, etype: object) -> str:
        """The `type` label for an event whose `type` attribute is `etype` (anything a producer sent)."""
        if not isinstance(etype, str) or len(etype) > 400 or _TYPE.fullmatch(etype) is None:
            return "invalid"
        if etype in self._types:
            return etype
        with self._types_lock:
            if len(self._types) >= self.max_types:
                return "other"
            self._types.add(etype)
        return etype

    def received(self, etype: object) -> None:
        """One event received (before it is judged)."""
        self.events_received.labels(self.type_label(etype)).inc()

    def rejected(self, field: str) -> None:
        """One event rejected for `field` (EventError.field)."""
        self.events_rejected.labels(rejection_reason(field)).inc()

    def recorded(self, violations: Iterable[Violation]) -> None:
        """Violations made durable."""
        for v in violations:
            self.violations.labels(v.policy, v.rule, v.severity).inc()

    def processed(self, seconds: float, events: int = 1) -> None:
        """`events` events that each took `seconds` from entering the engine to being durable."""
        for _ in range(events):
            self.event_processing.observe(seconds)

    def ruleset(self, ruleset_hash: str) -> None:
        """The ruleset now running: the only series of `tosengine_ruleset_info`."""
        self.ruleset_info.clear()
        self.ruleset_info.labels(ruleset_hash).set(1)

    def reloaded(self, ok: bool) -> None:
        """A reload finished: "ok", or "error" (the running policies were kept)."""
        self.ruleset_reloads.labels("ok" if ok else "error").inc()

    def track_obligations(self, count: Callable[[], float]) -> None:
        """Read the open obligations from `count` at each scrape."""
        self.obligations_open.set_function(count)

    # ------------------------------------------------------------------ exposition

    def render(self) -> bytes:
        """The registry in the Prometheus text format (CONTENT_TYPE)."""
        return generate_latest(self.registry)
