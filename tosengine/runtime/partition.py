"""Stage decide (state): everything one partition remembers between events, in one object.

A PartitionState holds the event-time clock, the stream position, the redelivery memory, each rule
kind's store (threshold windows, partial matches, obligations), the escalation ladder and the
counters. The pipeline (runtime/pipeline.py) reads and changes it; nothing else does. The engine
holds one; a Kafka worker holds one per partition it owns.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from tosengine.policy.model import Ladder
from tosengine.runtime.clock import Clock
from tosengine.runtime.items import Firing, Item
from tosengine.runtime.kinds import RUNTIME_KINDS, KindStore, StateOptions
from tosengine.runtime.kinds.sequence import SequenceStore
from tosengine.runtime.ladder import LadderState
from tosengine.runtime.once import OnceStore
from tosengine.runtime.order import micros
from tosengine.runtime.program import CompiledRule
from tosengine.violation import Repeat

if TYPE_CHECKING:
    from tosengine.runtime.snapshot import Decoder, Encoder

__all__ = ["PartitionState", "Redelivery", "identity"]


def identity(source: str, ident: str) -> str:
    """(source, id) as one string, without ambiguity: the length prefix says where the source ends."""
    return f"{len(source)}:{source}{ident}"


class Redelivery:
    """The (source, id) pairs processed within the redelivery window (event time), to drop copies."""

    def __init__(self, window: timedelta) -> None:
        self._window_us = window // timedelta(microseconds=1)  # exact, for any window
        # Keyed by one string per (source, id), not a tuple of two: 1,000,000 identities inside the
        # window cost about 100 MB less (see identity()). The value: the first copy's time in microseconds
        # since the epoch, shifted left 32 bits, plus a CRC-32 of its body (so a copy with another body is
        # told apart: a conflict to record, not a silent drop). One int instead of a (datetime, int) tuple
        # is about 100 bytes less per identity.
        self.seen: dict[str, int] = {}
        self._last: tuple[datetime | None, int] = (None, 0)  # see _micros
        # Identities in arrival order: forgetting walks from the front (an out-of-order late pair may
        # wait behind newer ones; only memory, never the duplicate check, depends on that).
        self.order: deque[str] = deque()

    def is_duplicate(self, key: str, now: datetime | None) -> bool:
        """Seen before, and the clock has not passed that time + the window (docs/semantics.md)."""
        first = self.seen.get(key)
        return first is not None and (now is None or micros(now) <= (first >> 32) + self._window_us)

    def digest(self, key: str) -> int | None:
        """The body digest of the copy remembered under `key`."""
        first = self.seen.get(key)
        return first & 0xFFFFFFFF if first is not None else None

    def _micros(self, t: datetime) -> int:
        """`t` in microseconds since the epoch. The last conversion is kept: an event is remembered at its
        time, and then the clock usually moves to that same time and sweeps, so one conversion serves both."""
        last, us = self._last
        if t is not last:
            us = micros(t)
            self._last = (t, us)
        return us

    def remember(self, key: str, time: datetime, digest: int = 0) -> None:
        """Note a processed identity at its event time, with its body's digest (a CRC-32)."""
        # A digest is a CRC-32: masked, it never spills into the time.
        self.seen[key] = self._micros(time) << 32 | digest & 0xFFFFFFFF
        self.order.append(key)

    def save(self, enc: Encoder) -> dict[str, list[Any]]:
        """The memory as three columns, in arrival order: identities, times (microseconds since the epoch)
        and digests. It is most of a checkpoint's size (an identity for every event inside the window), so it
        is saved without a call per identity: 23,000 identities in 0.02 s, where state format 1's list of
        [identity, time text, digest] took 0.1 s to build and more to encode."""
        seen = self.seen
        # `order` may hold an identity twice (remembered again after it expired) or one already forgotten.
        keys = [key for key in self.order if key in seen]
        packed = [seen[key] for key in keys]
        return {"keys": keys, "at": [v >> 32 for v in packed], "crc": [v & 0xFFFFFFFF for v in packed]}

    def load(self, doc: dict[str, list[Any]] | list[list[Any]], dec: Decoder) -> None:
        """Fill the memory from `save`'s columns, or from state format 1's [identity, time text, digest] list."""
        if isinstance(doc, list):
            for key, t, digest in doc:
                self.remember(key, dec.time(t), digest)
            return
        seen, order = self.seen, self.order
        for key, us, digest in zip(doc["keys"], doc["at"], doc["crc"], strict=True):
            seen[key] = int(us) << 32 | int(digest) & 0xFFFFFFFF  # as remember() packs it
            order.append(key)

    def sweep(self, now: datetime) -> None:
        """Forget identities older than the window."""
        horizon = (self._micros(now) - self._window_us) << 32  # packed values below it are older than the window
        order, seen = self.order, self.seen
        while order:
            first = seen.get(order[0])
            if first is not None and first >= horizon:
                break
            key = order.popleft()
            if first is not None:
                del seen[key]


class PartitionState:
    """All mutable state of one partition (docs/semantics.md names each part)."""

    def __init__(self, options: StateOptions) -> None:
        self.options = options
        self.clock = Clock()
        self.seq = 0  # stream position of the last item created
        self.redelivery = Redelivery(options.dedupe_window)
        self.stores: dict[str, KindStore] = {}
        self._sweeping: list[KindStore] = []
        self._lapsing: list[KindStore] = []
        self._new_stores()
        self.once = OnceStore()
        self.ladder = LadderState()
        # events, duplicates, facts, violations, skipped_no_key
        self.counts: Counter[str] = Counter()
        # How often each rule fired (a violation, or its fact for emit-only rules): policy test coverage.
        self.fired: Counter[str] = Counter()

    def drop_rule_state(self) -> None:
        """Forget every rule's state (windows, partial matches, obligations, ladder); keep the clock,
        the stream position, the redelivery memory and the counters."""
        self._new_stores()
        self.once = OnceStore()
        self.ladder = LadderState()

    def _new_stores(self) -> None:
        self.stores = {name: k.new_store(self.options) for name, k in RUNTIME_KINDS.items()}
        # Per event, only the stores that keep something behind the clock or have deadlines are asked.
        self._sweeping = [s for s in self.stores.values() if s.sweeps]
        self._lapsing = [s for s in self.stores.values() if s.lapses]
        # Each store's alarms, read without a call on every clock move (see `sweep` and `due`).
        self._sweep_alarms = [(s, s.alarms.entries) for s in self._sweeping]
        self._lapse_alarms = [s.alarms.entries for s in self._lapsing]

    def sweep(self, rules: Sequence[CompiledRule], ladder: Ladder | None, now: datetime) -> None:
        """Forget state that no future item can use: windows, partial matches, ladder memory and
        redelivery memory behind the clock."""
        # A store has something behind the clock only once its earliest alarm is: the test each store's
        # sweep begins with, made here without the call (the usual case on a clock move: nothing).
        for store, alarms in self._sweep_alarms:
            if alarms and alarms[0][0] < now:
                store.sweep(rules, now)
        alarms = self.ladder.expiry.entries
        if alarms and alarms[0][0] < now:
            self.ladder.sweep(ladder, now)
        self.redelivery.sweep(now)

    def pop_due(self, rules: Sequence[CompiledRule], now: datetime) -> Firing | Repeat | None:
        """What the clock at `now` makes happen next, in time order: an obligation lapsing (its deadline
        strictly before `now`) or a once_per window closing (its end at or before `now`; at equal times a
        window closes first, since a match at its end is no longer in it). None when nothing is due."""
        best: KindStore | None = None
        best_at: datetime | None = None
        for store in self._lapsing:
            at = store.next_due()
            if at is not None and at < now and (best_at is None or at < best_at):
                best, best_at = store, at
        close_at = self.once.next_close()
        while close_at is not None and close_at <= now and (best_at is None or close_at <= best_at):
            repeat = self.once.pop_closed(rules, close_at)
            if repeat is not None:
                return repeat
            close_at = self.once.next_close()  # that window had suppressed nothing: the next one
        return best.pop_due(rules, now) if best is not None else None

    def peek_lapse(self) -> tuple[KindStore, datetime, Item, int] | None:
        """The obligation that lapses next whatever the clock, left in place: its store, deadline, opening
        item and rule index (a Kafka worker lapses it once the watermark passes; tosengine/kafka/stage.py)."""
        best: tuple[KindStore, datetime, Item, int] | None = None
        for store in self._lapsing:
            head = store.peek_due()
            if head is not None and (best is None or head[0] < best[1]):
                best = (store, *head)
        return best

    def due(self, now: datetime) -> bool:
        """Whether anything is due at `now` (cheap: heads of the heaps only).

        The raw heads come first: they may still hold fulfilled obligations and closed windows, so they are
        never later than what is really due next, and when none has come, nothing is due (the usual case,
        answered without a call into the stores)."""
        closing = self.once.closing.entries
        if not (closing and closing[0][0] <= now):
            for alarms in self._lapse_alarms:
                if alarms and alarms[0][0] < now:
                    break
            else:
                return False
        for store in self._lapsing:
            at = store.next_due()
            if at is not None and at < now:
                return True
        return self.once.has_closing_by(now)

    # ------------------------------------------------------------ saved and loaded (docs/state.md)

    def save(self, rules: Sequence[CompiledRule], enc: Encoder) -> dict[str, Any]:
        """Everything this state holds as JSON; the events and items it refers to are collected in `enc`."""
        return {
            "clock": enc.time(self.clock.now) if self.clock.now is not None else None,
            "settled": enc.time(self.clock.settled) if self.clock.settled is not None else None,
            "seq": self.seq,
            "counts": self.stats(),
            "fired": dict(self.fired),
            "stores": {name: store.save(rules, enc) for name, store in self.stores.items()},
            "once": self.once.save(rules, enc),
            "ladder": self.ladder.save(),
            "redelivery": self.redelivery.save(enc),
        }

    def load(self, doc: dict[str, Any], dec: Decoder, ladder: Ladder | None, keep_ladder: bool) -> None:
        """Fill this (new) state from `save`'s output. Stores keep what `dec` carries over; the ladder's
        memory is kept when `keep_ladder` (the ladder is as it was)."""
        self.clock.now = dec.time(doc["clock"]) if doc["clock"] is not None else None
        self.clock.settled = dec.time(doc["settled"]) if doc["settled"] is not None else None
        self.seq = doc["seq"]
        counts = dict(doc["counts"])
        dropped = counts.pop("partials_dropped", 0)
        suppressed = counts.pop("suppressed", 0)
        self.counts = Counter(counts)
        self.fired = Counter(doc["fired"])
        for name, data in doc["stores"].items():
            store = self.stores.get(name)
            if store is None:  # a kind this version does not have: its rules cannot be running either
                dec.dropped.update(str(entry[0]) for entry in data)
                continue
            store.load(data, dec)
        sequences = self.stores.get("sequence")
        if isinstance(sequences, SequenceStore):
            sequences.dropped = dropped
        self.once.suppressed = suppressed
        self.once.load(doc["once"], dec)
        if keep_ladder and ladder is not None:
            self.ladder.load(doc["ladder"], ladder)
        self.redelivery.load(doc["redelivery"], dec)

    def stats(self) -> dict[str, int]:
        """The counters, as the engine reports them."""
        sequences = self.stores["sequence"]
        dropped = sequences.dropped if isinstance(sequences, SequenceStore) else 0
        return {
            "events": 0,
            "duplicates": 0,
            "facts": 0,
            "violations": 0,
            "repeats": 0,
            "skipped_no_key": 0,
            **self.counts,
            "partials_dropped": dropped,
            "suppressed": self.once.suppressed,
        }

    def size(self) -> dict[str, int]:
        """How much state is held, for memory tests and monitoring."""
        out: dict[str, int] = {}
        for store in self.stores.values():
            out.update(store.size())
        out.update(self.once.size())
        out["dedupe"] = len(self.redelivery.seen)
        out["ladder_subjects"] = len(self.ladder.seen)
        out["ladder_expiry"] = len(self.ladder.expiry)
        return out
