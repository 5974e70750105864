"""`audit verify`: walk the hash chains (violations, repeat records) and name the first row that does not hold."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from tosengine.audit.chain import GENESIS, HASHED, HASHED_REPEATS, link_hash
from tosengine.audit.models import ChainHead, RepeatRow, ViolationRow

__all__ = ["VerifyResult", "verify_chain"]


@dataclass(frozen=True)
class VerifyResult:
    """`ok`, how many rows were checked, and for a broken chain the first bad row and why."""

    ok: bool
    rows: int  # violations checked
    bad_seq: int | None = None
    bad_id: str | None = None
    problem: str = ""
    repeats: int = 0  # repeat records checked
    table: str = "violations"  # where the first bad row is

    def describe(self) -> str:
        """One line for the CLI."""
        if self.ok:
            extra = f" and {self.repeats} repeat record(s)" if self.repeats else ""
            return f"ok: {self.rows} violation(s){extra}, hash chain intact"
        what = "violation" if self.table == "violations" else "repeat record"
        where = f"{what} #{self.bad_seq} ({self.bad_id})" if self.bad_seq is not None else f"{self.table} chain head"
        return f"BROKEN at {where}: {self.problem}"


def _walk(
    s: Session, model: type[Any], chain: str, columns: tuple[str, ...], key: bytes | None
) -> tuple[int, int | None, str | None, str]:
    """(rows checked, bad seq, bad id, problem) for one chain; problem "" when it holds."""
    prev, count, last_seq = GENESIS, 0, 0
    for row in s.scalars(select(model).order_by(model.seq)).yield_per(1000):
        data = {c.name: getattr(row, c.name) for c in model.__table__.columns}
        if row.prev_hash != prev:
            return (
                count,
                row.seq,
                row.id,
                (
                    "prev_hash does not match the row before it: a row was deleted, "
                    "inserted or reordered before this one"
                ),
            )
        if link_hash(data, key, columns) != row.hash:
            return (
                count,
                row.seq,
                row.id,
                "the row's content does not match its hash: it was changed after it was written",
            )
        prev, count, last_seq = row.hash, count + 1, row.seq
    head = s.get(ChainHead, chain)
    if head is None:
        return count, None, None, "the chain head is missing" if count else ""
    if head.count != count or head.hash != prev or head.last_seq != last_seq:
        return (
            count,
            None,
            None,
            (
                f"the chain head records {head.count} row(s) ending at #{head.last_seq}, the "
                f"table has {count} ending at #{last_seq}: rows at the end were deleted or added"
            ),
        )
    return count, None, None, ""


def verify_chain(engine: Engine, key: bytes | None = None) -> VerifyResult:
    """Recompute every link of both chains in `seq` order; compare with the stored hashes and the heads."""
    with Session(engine) as s:
        rows, bad_seq, bad_id, problem = _walk(s, ViolationRow, "violations", HASHED, key)
        if problem:
            return VerifyResult(False, rows, bad_seq, bad_id, problem)
        repeats, bad_seq, bad_id, problem = _walk(s, RepeatRow, "repeats", HASHED_REPEATS, key)
        if problem:
            return VerifyResult(False, rows, bad_seq, bad_id, problem, repeats, "repeats")
    return VerifyResult(True, rows, repeats=repeats)
