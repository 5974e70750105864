"""`audit verify`: the audit log -> the first record that does not hold, or "intact".

It walks the hash chains (violations, repeat records) in `seq` order, checks each chain's head (and,
with the audit key, the head's HMAC, so rows deleted at the end cannot be hidden by rewriting the
head), checks the log against a head anchored elsewhere (`audit head`, then `verify --head`), checks
each policy version's text against its content hash, and each event that is evidence against the copy
its violation recorded (which the chain covers).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select, tuple_
from sqlalchemy.orm import Session

from tosengine.audit.chain import GENESIS, HASHED, HASHED_REPEATS, head_mac, key_check, link_hash
from tosengine.audit.models import AcceptedEvent, ChainHead, Meta, PolicyVersion, RepeatRow, ViolationRow
from tosengine.errors import AuditError
from tosengine.policy.sources import Source

__all__ = ["Anchor", "VerifyResult", "format_anchor", "parse_anchor", "read_anchor", "verify_chain"]

CHAINS = ("violations", "repeats")
_ANCHOR_PREFIX = "tosengine-head:v1:"


@dataclass(frozen=True)
class VerifyResult:
    """`ok`, how many rows were checked, and for a broken log the first bad record and why."""

    ok: bool
    rows: int  # violations checked
    bad_seq: int | None = None
    bad_id: str | None = None
    problem: str = ""
    repeats: int = 0  # repeat records checked
    table: str = "violations"  # where the first bad record is
    heads: tuple[tuple[str, int, str], ...] = ()  # (chain, count, head hash) of an intact log

    def describe(self) -> str:
        """One line for the CLI."""
        if self.ok:
            extra = f" and {self.repeats} repeat record(s)" if self.repeats else ""
            return f"ok: {self.rows} violation(s){extra}, hash chain intact"
        what = {"violations": "violation", "repeats": "repeat record"}.get(self.table, self.table)
        if self.bad_seq is not None:
            where = f"{what} #{self.bad_seq} ({self.bad_id})"
        elif self.bad_id is not None:
            where = f"{what} {self.bad_id}"
        else:
            where = f"{self.table} chain head" if self.table in CHAINS else self.table
        return f"BROKEN at {where}: {self.problem}"


Anchor = dict[str, tuple[int, str]]  # chain -> (rows, hash of the last of them)


def format_anchor(heads: Anchor) -> str:
    """The one-line form `audit head` prints and `verify --head` reads."""
    return _ANCHOR_PREFIX + ",".join(f"{c}={heads[c][0]}:{heads[c][1]}" for c in CHAINS if c in heads)


def parse_anchor(text: str) -> Anchor:
    """Read `format_anchor`'s line; AuditError if it is not one."""
    text = text.strip()
    if not text.startswith(_ANCHOR_PREFIX):
        raise AuditError(f"not a head printed by `tosengine audit head`: {text[:80]!r}")
    out: Anchor = {}
    for part in text[len(_ANCHOR_PREFIX) :].split(","):
        chain, _, rest = part.partition("=")
        count, _, digest = rest.partition(":")
        if chain not in CHAINS or not count.isdigit() or len(digest) != 64:
            raise AuditError(f"not a head printed by `tosengine audit head`: {part[:80]!r}")
        out[chain] = (int(count), digest)
    return out


def read_anchor(engine: Engine) -> Anchor:
    """The current head of each chain (rows, last hash), as stored."""
    with Session(engine) as s:
        heads = {h.name: (int(h.count), str(h.hash)) for h in s.scalars(select(ChainHead))}
    return {c: heads.get(c, (0, GENESIS)) for c in CHAINS}


@dataclass
class _Walk:
    """One chain's walk: rows checked, the hash after each anchored count, and the first problem."""

    count: int = 0
    last_seq: int = 0
    prev: str = GENESIS
    anchored: str | None = None
    bad_seq: int | None = None
    bad_id: str | None = None
    problem: str = ""


def _walk(s: Session, model: type[Any], columns: tuple[str, ...], key: bytes | None, anchor_at: int) -> _Walk:
    w = _Walk()
    for row in s.scalars(select(model).order_by(model.seq)).yield_per(1000):
        data = {c.name: getattr(row, c.name) for c in model.__table__.columns}
        if row.prev_hash != w.prev:
            w.bad_seq, w.bad_id = row.seq, row.id
            w.problem = (
                "prev_hash does not match the row before it: a row was deleted, inserted or reordered before this one"
            )
            return w
        if link_hash(data, key, columns) != row.hash:
            w.bad_seq, w.bad_id = row.seq, row.id
            w.problem = "the row's content does not match its hash: it was changed after it was written"
            return w
        w.prev, w.count, w.last_seq = row.hash, w.count + 1, row.seq
        if w.count == anchor_at:
            w.anchored = row.hash
    return w


def _check_head(s: Session, chain: str, w: _Walk, key: bytes | None) -> str:
    head = s.get(ChainHead, chain)
    if head is None:
        return "the chain head is missing" if w.count else ""
    if head.count != w.count or head.hash != w.prev or head.last_seq != w.last_seq:
        return (
            f"the chain head records {head.count} row(s) ending at #{head.last_seq}, the "
            f"table has {w.count} ending at #{w.last_seq}: rows at the end were deleted or added"
        )
    if key is not None and head.mac != head_mac(key, chain, head.count, head.last_seq, head.hash):
        return (
            "the chain head's HMAC does not match it: the head was rewritten without the audit key "
            "(rows at the end deleted, and the head moved to hide it)"
        )
    return ""


def _check_key(s: Session, key: bytes | None) -> str:
    stored = s.get(Meta, "key_check")
    if stored is None:
        if key is not None and s.scalar(select(ChainHead.name).limit(1)) is not None:
            return (
                "TOSENGINE_AUDIT_KEY is set but the log holds no key check: it was written without a key, "
                "or its key check was removed"
            )
        return ""
    if key is None:
        return "the log is keyed (an HMAC chain): set TOSENGINE_AUDIT_KEY to the key it was written with to verify it"
    if stored.value != key_check(key):
        return "TOSENGINE_AUDIT_KEY is not the key this log was written with"
    return ""


def _check_policy_texts(s: Session) -> tuple[str | None, str]:
    """A policy version is the content hash of its file: a stored text that does not hash to it was forged."""
    for pv in s.scalars(select(PolicyVersion).order_by(PolicyVersion.seq)).yield_per(200):
        if Source(pv.path, pv.text).version != pv.version:
            return f"{pv.policy} {pv.version}", "the stored policy text does not hash to its version: it was changed"
    return None, ""


def _normal(event: dict[str, Any]) -> dict[str, Any]:
    # The events table keeps the text as received; the violation keeps the event as the engine read it:
    # they differ only in an empty or absent `source` and in absent versus null attributes.
    return {k: v for k, v in event.items() if v is not None and not (k == "source" and not v)}


def _evidence(s: Session) -> Iterator[tuple[int, str, list[dict[str, Any]]]]:
    for seq, vid, events in s.execute(
        select(ViolationRow.seq, ViolationRow.id, ViolationRow.evidence_events).order_by(ViolationRow.seq)
    ).yield_per(1000):
        yield int(seq), str(vid), json.loads(events)


def _check_evidence(s: Session) -> tuple[int | None, str | None, str]:
    """Each event a violation cites must be in the events table as the violation recorded it (the chain
    covers the violation's copy): a changed or deleted event is named."""
    pending: list[tuple[int, str, dict[str, Any]]] = []

    def flush() -> tuple[int | None, str | None, str]:
        keys = {(e.get("source") or "", str(e.get("id"))) for _, _, e in pending}
        stored: dict[tuple[str, str], str] = {}
        for src, eid, body in s.execute(
            select(AcceptedEvent.source, AcceptedEvent.event_id, AcceptedEvent.body).where(
                tuple_(AcceptedEvent.source, AcceptedEvent.event_id).in_(list(keys))
            )
        ):
            stored[(str(src), str(eid))] = str(body)
        for seq, vid, e in pending:
            ident = (e.get("source") or "", str(e.get("id")))
            text = stored.get(ident)
            if text is None:
                return seq, vid, f"evidence event {ident[1]!r} from {ident[0]!r} is missing from the events table"
            if _normal(json.loads(text)) != _normal(e):
                return (
                    seq,
                    vid,
                    (
                        f"evidence event {ident[1]!r} from {ident[0]!r} in the events table differs from the copy "
                        "this violation recorded: the event was changed"
                    ),
                )
        pending.clear()
        return None, None, ""

    for seq, vid, events in _evidence(s):
        pending.extend((seq, vid, e) for e in events)
        if len(pending) >= 400:
            found = flush()
            if found[2]:
                return found
    return flush() if pending else (None, None, "")


def verify_chain(engine: Engine, key: bytes | None = None, anchor: Anchor | None = None) -> VerifyResult:
    """Check the whole log: both chains link by link and against their heads (the heads' HMAC with a
    key; an `anchor` from `audit head` if given), the policy texts and the evidence events."""
    anchor = anchor or {}
    with Session(engine) as s:
        problem = _check_key(s, key)
        if problem:
            return VerifyResult(False, 0, problem=problem, table="meta")
        walks: dict[str, _Walk] = {}
        for chain, model, columns in (
            ("violations", ViolationRow, HASHED),
            ("repeats", RepeatRow, HASHED_REPEATS),
        ):
            want = anchor.get(chain, (0, GENESIS))
            w = walks[chain] = _walk(s, model, columns, key, want[0])
            rows, repeats = walks["violations"].count, walks.get("repeats", _Walk()).count
            if w.problem:
                return VerifyResult(False, rows, w.bad_seq, w.bad_id, w.problem, repeats, chain)
            problem = _check_head(s, chain, w, key)
            if problem:
                return VerifyResult(False, rows, None, None, problem, repeats, chain)
            if want[0] > w.count:
                return VerifyResult(
                    False,
                    rows,
                    None,
                    None,
                    f"the anchored head has {want[0]} row(s), the log {w.count}: rows at the end were deleted",
                    repeats,
                    chain,
                )
            if want[0] and w.anchored != want[1]:
                return VerifyResult(
                    False,
                    rows,
                    None,
                    None,
                    f"row {want[0]} does not have the anchored hash: the chain was rewritten",
                    repeats,
                    chain,
                )
        rows, repeats = walks["violations"].count, walks["repeats"].count
        where, forged = _check_policy_texts(s)
        if forged:
            return VerifyResult(False, rows, None, where, forged, repeats, "policy_versions")
        seq, vid, changed = _check_evidence(s)
        if changed:
            return VerifyResult(False, rows, seq, vid, changed, repeats, "violations")
        heads = tuple((c, walks[c].count, walks[c].prev) for c in CHAINS)
    return VerifyResult(True, rows, repeats=repeats, heads=heads)
