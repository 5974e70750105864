"""Stage validate -> audit (input streams): lines of JSON in, violations acknowledged once durable.

Ingest is the piece every front end shares (`replay` now; `serve` and `worker` next): it feeds input
lines to an Engine in batches, rejects a bad line with its origin and line number (into the audit
log's dead letter, and to the caller), and hands violations to `acknowledge` only after the audit log
holds them, so nothing is acted on that is not recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from tosengine.errors import EventError
from tosengine.runtime.engine import Engine
from tosengine.runtime.matcher import BATCH
from tosengine.violation import Repeat, Violation

__all__ = ["Ingest"]

# Rejected(origin, line number, the line's text, the error): how a front end reports a bad line.
Rejected = Callable[[str, int, str, EventError], None]


class Ingest:
    """Feeds lines to `engine` in batches of `batch_size`; acknowledges violations once written.

    With `ack_every`, violations are acknowledged at least every that many (and at `finish`);
    a batch of 1 processes each line as it comes (a live stream is never held back).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        acknowledge: Callable[[list[Violation], list[Repeat]], None],
        rejected: Rejected | None = None,
        batch_size: int = BATCH,
        ack_every: int = 1000,
    ) -> None:
        self.engine = engine
        self._acknowledge = acknowledge
        self._rejected = rejected
        self.batch_size = batch_size
        self.ack_every = ack_every
        self.accepted = 0
        self.rejected = 0
        self.violations = 0
        self.repeats = 0
        self._batch: list[tuple[str, int, str]] = []  # (origin, line number, text)
        self._pending: list[Violation] = []
        self._repeats: list[Repeat] = []
        engine.on_repeat = self._repeats.append

    def add(self, origin: str, number: int, raw: bytes) -> None:
        """One input line (blank lines are skipped; a line that is not UTF-8 is rejected)."""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            self.reject(
                origin, number, raw.decode("utf-8", "backslashreplace"), EventError("", "the line is not valid UTF-8")
            )
            return
        if not text.strip():
            return
        self._batch.append((origin, number, text))
        if len(self._batch) >= self.batch_size:
            self.run_batch()
            if self.batch_size == 1 or len(self._pending) >= self.ack_every:
                self.acknowledge()

    def reject(self, origin: str, number: int, text: str, exc: EventError) -> None:
        """Record a bad line in the dead letter with where it came from, and tell the caller."""
        self.rejected += 1
        error = EventError(exc.field, exc.problem, line=number)
        self.engine.reject(text.rstrip("\n"), error, origin=origin)
        if self._rejected is not None:
            self._rejected(origin, number, text, error)

    def run_batch(self) -> None:
        """Process the lines gathered so far (their violations wait for `acknowledge`)."""
        batch, self._batch = self._batch, []
        if not batch:
            return
        before = self.rejected
        self._pending.extend(
            self.engine.process_many(
                [text for _, _, text in batch],
                on_error=lambda pos, _event, exc: self.reject(*batch[pos], exc),
                durable=False,  # acknowledge() flushes before anything is handed over
            )
        )
        self.accepted += len(batch) - (self.rejected - before)

    def acknowledge(self) -> None:
        """Make what was processed durable, then hand its violations and repeat records over."""
        self.engine.flush()
        pending, self._pending = self._pending, []
        repeats, self._repeats = self._repeats, []
        self.engine.on_repeat = self._repeats.append
        self.violations += len(pending)
        self.repeats += len(repeats)
        if pending or repeats:
            self._acknowledge(pending, repeats)

    def finish(self, until: datetime | None = None) -> None:
        """Process what is left, move the clock to `until` if given, and acknowledge everything."""
        self.run_batch()
        if until is not None:
            self._pending.extend(self.engine.advance_to(until))
        self.acknowledge()
