"""`audit verify`: walk the violation chain and name the first row that does not hold."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from tosengine.audit.chain import GENESIS, link_hash
from tosengine.audit.models import ChainHead, ViolationRow

__all__ = ["VerifyResult", "verify_chain"]


@dataclass(frozen=True)
class VerifyResult:
    """`ok`, how many rows were checked, and for a broken chain the first bad row and why."""

    ok: bool
    rows: int
    bad_seq: int | None = None
    bad_id: str | None = None
    problem: str = ""

    def describe(self) -> str:
        """One line for the CLI."""
        if self.ok:
            return f"ok: {self.rows} violation(s), hash chain intact"
        where = f"violation #{self.bad_seq} ({self.bad_id})" if self.bad_seq is not None else "chain head"
        return f"BROKEN at {where}: {self.problem}"


def verify_chain(engine: Engine, key: bytes | None = None) -> VerifyResult:
    """Recompute every link in `seq` order; compare with the stored hashes and the chain head."""
    prev, count, last_seq = GENESIS, 0, 0
    with Session(engine) as s:
        for row in s.scalars(select(ViolationRow).order_by(ViolationRow.seq)).yield_per(1000):
            data = {c.name: getattr(row, c.name) for c in ViolationRow.__table__.columns}
            if row.prev_hash != prev:
                return VerifyResult(
                    False,
                    count,
                    row.seq,
                    row.id,
                    "prev_hash does not match the row before it: a row was deleted, inserted "
                    "or reordered before this one",
                )
            if link_hash(data, key) != row.hash:
                return VerifyResult(
                    False,
                    count,
                    row.seq,
                    row.id,
                    "the row's content does not match its hash: it was changed after it was written",
                )
            prev, count, last_seq = row.hash, count + 1, row.seq
        head = s.get(ChainHead, "violations")
    if head is None:
        if count:
            return VerifyResult(False, count, None, None, "the chain head is missing")
        return VerifyResult(True, 0)
    if head.count != count or head.hash != prev or head.last_seq != last_seq:
        return VerifyResult(
            False,
            count,
            None,
            None,
            f"the chain head records {head.count} row(s) ending at #{head.last_seq}, the table has "
            f"{count} ending at #{last_seq}: rows at the end were deleted or added",
        )
    return VerifyResult(True, count)
