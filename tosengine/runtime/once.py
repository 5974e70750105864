"""Stage decide (once_per): one violation per (rule, key, subject) per window; what it suppresses is
counted and cited in a repeat record when the window closes (DESIGN.md section 3, docs/semantics.md).

`once_per` is an option every rule kind shares, so its state lives here, beside the kinds' stores, in
the PartitionState: the open windows, and a heap of when each closes (when the clock reaches it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tosengine.events import EventRecord
from tosengine.runtime.clock import DueHeap
from tosengine.runtime.items import Item
from tosengine.violation import Repeat, repeat_id

if TYPE_CHECKING:
    from tosengine.runtime.program import CompiledRule
    from tosengine.runtime.snapshot import Decoder, Encoder

__all__ = ["OnceStore", "OnceWindow"]


@dataclass(slots=True)
class OnceWindow:
    """The window a violation opened: until `end`, the rule's further matches for its (key, subject)
    are suppressed, counted, and their events kept as the repeat record's evidence."""

    rule: int
    key: str
    subject: str
    repeat_of: str  # the violation's id
    end: datetime
    count: int = 0
    first: datetime | None = None
    last: datetime | None = None
    evidence: list[EventRecord] = field(default_factory=list)
    closed: bool = False


class OnceStore:
    """Every open once_per window of one partition."""

    def __init__(self) -> None:
        self.windows: dict[tuple[int, str, str], OnceWindow] = {}
        self.closing: DueHeap[OnceWindow] = DueHeap()
        self.suppressed = 0

    def suppress(self, rule: CompiledRule, key: str, subject: str, time: datetime, at: Item) -> bool:
        """True (and counted) if a match of `rule` for (key, subject) at `time` falls in an open window."""
        w = self.windows.get((rule.index, key, subject))
        if w is None or time >= w.end:
            return False
        w.count += 1
        w.first = time if w.first is None or time < w.first else w.first
        w.last = time if w.last is None or time > w.last else w.last
        w.evidence.extend(at.events)  # the event at which the match happened (for a fact: the events behind it)
        self.suppressed += 1
        return True

    def open(self, rule: CompiledRule, key: str, subject: str, violation_id: str, time: datetime) -> None:
        """The rule recorded a violation for (key, subject) at `time`: its window runs to time + once_per."""
        assert rule.rule.once_per is not None
        w = OnceWindow(rule.index, key, subject, violation_id, time + rule.rule.once_per)
        self.windows[(rule.index, key, subject)] = w
        self.closing.push(w.end, w)

    def next_close(self) -> datetime | None:
        """When the earliest open window closes."""
        heap = self.closing
        while (head := heap.peek_entry()) is not None and head.closed:
            heap.pop()
        return heap.peek()

    def pop_closed(self, rules: Sequence[CompiledRule], now: datetime) -> Repeat | None:
        """Close the earliest window that ends at or before `now`; its repeat record if it suppressed any.
        None if no window closes by `now`; a window that suppressed nothing closes silently (and the next
        call closes the next)."""
        while (head := self.closing.peek_entry()) is not None:
            end = self.closing.peek()
            assert end is not None
            if end > now:
                return None
            self.closing.pop()
            if head.closed:
                continue
            head.closed = True
            if self.windows.get((head.rule, head.key, head.subject)) is head:
                del self.windows[(head.rule, head.key, head.subject)]
            if head.count:
                return _repeat(rules[head.rule], head)
        return None

    def has_closing_by(self, now: datetime) -> bool:
        """Whether some window closes at or before `now`."""
        at = self.next_close()
        return at is not None and at <= now

    def save(self, rules: Sequence[CompiledRule], enc: Encoder) -> list[Any]:
        """[[rule id, key, subject, violation id, end, count, first, last, [evidence records]], ...]."""
        return [
            [
                rules[w.rule].rule.id,
                w.key,
                w.subject,
                w.repeat_of,
                enc.time(w.end),
                w.count,
                enc.time(w.first) if w.first else None,
                enc.time(w.last) if w.last else None,
                [enc.record(r) for r in w.evidence],
            ]
            for w in self.windows.values()
        ]

    def load(self, data: list[Any], dec: Decoder) -> None:
        """The open windows back, with their closing entries."""
        for rule_id, key, subject, repeat_of, end, count, first, last, evidence in data:
            cr = dec.rule(rule_id)
            if cr is None or cr.rule.once_per is None:
                continue
            w = OnceWindow(
                cr.index,
                key,
                subject,
                repeat_of,
                dec.time(end),
                count,
                dec.time(first) if first else None,
                dec.time(last) if last else None,
                [dec.record(i) for i in evidence],
            )
            self.windows[(cr.index, key, subject)] = w
            self.closing.push(w.end, w)

    def size(self) -> dict[str, int]:
        """Open windows, and the closing heap."""
        return {"once_windows": len(self.windows), "once_closing": len(self.closing)}


def _repeat(rule: CompiledRule, w: OnceWindow) -> Repeat:
    assert w.first is not None and w.last is not None
    return Repeat(
        id=repeat_id(w.repeat_of, w.end),
        repeat_of=w.repeat_of,
        policy=rule.policy.id,
        rule=rule.rule.id,
        subject=w.subject,
        key=w.key,
        count=w.count,
        time=w.end,
        first=w.first,
        last=w.last,
        evidence=tuple(r.id for r in w.evidence),
        evidence_sources=tuple(r.source for r in w.evidence),
        evidence_events=tuple(r.evidence() for r in w.evidence),
    )
